"""Health, dataset listing and metadata, the OpenAPI document, quota headers and the CLI."""

from __future__ import annotations

import subprocess
import sys

import httpx

from labservice.devserver import ServerThread
from labservice.settings import Settings


def test_health_lists_datasets(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok"
    assert body["datasets"]["served"] == ["periodic16", "wall16"]


def test_dataset_list_and_metadata(http: httpx.Client, settings: Settings) -> None:
    listing = {d["id"]: d for d in http.get("/datasets").json()["datasets"]}
    assert listing["periodic16"]["grid"]["shape"] == [16, 16, 16]
    assert listing["wall16"]["grid"]["periodic"] == [True, False, True]
    info = http.get("/datasets/periodic16").json()
    assert info["metadata"]["variables"]["velocity"]["components"] == ["ux", "uy", "uz"]
    assert len(info["metadata"]["times"]) == 5
    assert info["limits"]["points_per_request"] == settings.public_points_per_request
    assert info["limits"]["jobs_allowed"] is False
    assert "lag6" in info["methods"]["spatial"] and info["methods"]["spatial"]["lag6"]["width"] == 6
    assert "gradient" in info["methods"]["operators"]


def test_quota_headers_on_every_response(http: httpx.Client) -> None:
    ok = http.post(
        "/datasets/periodic16/points",
        json={"variable": "pressure", "time": 0.0, "points": [[0.1, 0.2, 0.3]] * 7},
    )
    bad = http.get("/datasets/nope")
    for r in (ok, bad):
        for header in ("x-lab-cost", "x-ratelimit-limit", "x-ratelimit-remaining", "x-lab-points-limit"):
            assert header in r.headers, (header, r.headers)
    assert ok.headers["x-lab-cost"] == "7"
    first = int(http.get("/health").headers["x-ratelimit-remaining"])
    assert int(http.get("/health").headers["x-ratelimit-remaining"]) <= first


def test_openapi_is_complete(http: httpx.Client, server: ServerThread) -> None:
    doc = httpx.get(server.url + "/openapi.json").json()
    expected = {
        ("get", "/api/v1/health"),
        ("get", "/api/v1/datasets"),
        ("get", "/api/v1/datasets/{dataset_id}"),
        ("post", "/api/v1/datasets/{dataset_id}/points"),
        ("post", "/api/v1/datasets/{dataset_id}/particles"),
        ("post", "/api/v1/datasets/{dataset_id}/filter"),
        ("post", "/api/v1/datasets/{dataset_id}/threshold"),
        ("get", "/api/v1/datasets/{dataset_id}/cutout"),
        ("get", "/api/v1/datasets/{dataset_id}/slice.png"),
    }
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and all(ids)
    for _, path in [e for e in expected if e[0] == "post"]:
        op = doc["paths"][path]["post"]
        body = op["requestBody"]["content"]
        assert {"application/json", "application/msgpack"} <= set(body)
        assert body["application/json"]["examples"], path
        assert op["summary"] or op["description"]
    # Every $ref points at a schema that exists.
    text = httpx.get(server.url + "/openapi.json").text
    for ref in {part.split('"')[0] for part in text.split('"$ref":"#/components/schemas/')[1:]}:
        assert ref in doc["components"]["schemas"], ref


def test_unknown_path_is_json_404(server: ServerThread) -> None:
    r = httpx.get(server.url + "/api/v2/whatever")
    assert r.status_code == 404
    assert "/api/v1" in r.json()["detail"]


def test_cli_token_create_and_list(tmp_path) -> None:
    db = tmp_path / "t.sqlite"
    run = [sys.executable, "-m", "labservice", "token"]
    out = subprocess.run(
        run
        + [
            "create",
            "--name",
            "carol",
            "--points-per-request",
            "5000",
            "--max-cutout-mb",
            "8",
            "--token-db",
            str(db),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = out.strip().splitlines()[-1]
    assert token.startswith("lab_")
    listed = subprocess.run(
        run + ["list", "--token-db", str(db)], capture_output=True, text=True, check=True
    ).stdout
    assert "carol" in listed and "points/request=5000" in listed and "cutout=8MiB" in listed
    assert token.split("_", 2)[2] not in listed and token.split("_", 2)[2] not in db.read_bytes().decode(
        "latin-1"
    )


def test_app_finds_datasets_in_a_folder_and_a_catalog(data_dir, tmp_path) -> None:
    """`serve --data` scans the folder; `--catalog` reads a YAML list of {id, url}."""
    from labservice.app import create_app

    with ServerThread(create_app(Settings(data_dir=data_dir, token_db=tmp_path / "t.sqlite"))) as srv:
        served = httpx.get(srv.url + "/api/v1/health").json()["datasets"]["served"]
    assert served == ["periodic16", "wall16"]
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(f"- id: box\n  url: {data_dir / 'periodic16.zarr'}\n")
    with ServerThread(create_app(Settings(catalog=catalog, token_db=tmp_path / "t.sqlite"))) as srv:
        listing = httpx.get(srv.url + "/api/v1/datasets").json()["datasets"]
    assert [d["id"] for d in listing] == ["box"]


def test_unreadable_dataset_is_503_not_fatal(tmp_path) -> None:
    from labservice.app import create_app

    settings = Settings(datasets={"ghost": str(tmp_path / "missing.zarr")}, token_db=tmp_path / "t.sqlite")
    with ServerThread(create_app(settings)) as srv:
        health = httpx.get(srv.url + "/api/v1/health").json()
        r = httpx.get(srv.url + "/api/v1/datasets/ghost")
    assert health["status"] == "degraded" and "ghost" in health["datasets"]["failed"]
    assert r.status_code == 503 and "ghost" in r.json()["detail"] and "retry-after" in r.headers


def test_unexpected_errors_are_500_without_traceback(settings: Settings) -> None:
    """The catch-all: a failure inside the engine becomes a JSON 500 naming an incident, never a traceback."""
    from labservice import open_dataset
    from labservice.app import create_app
    from labservice.routers.deps import DatasetRegistry, get_datasets

    class Exploding:  # a real dataset whose engine call fails in a way no input explains
        def __init__(self, ds):
            self.meta = ds.meta

        def query_points(self, *args, **kwargs):
            raise RuntimeError("secret internal state")

    real = open_dataset(settings.datasets["periodic16"])
    app = create_app(settings)
    app.dependency_overrides[get_datasets] = lambda: DatasetRegistry({"periodic16": Exploding(real)})
    with ServerThread(app) as srv:
        r = httpx.post(
            srv.url + "/api/v1/datasets/periodic16/points",
            json={"variable": "pressure", "time": 0.0, "points": [[0, 0, 0]]},
        )
        again = httpx.get(srv.url + "/api/v1/health")
    assert r.status_code == 500 and r.json()["code"] == "internal_error"
    assert "incident" in r.json()["detail"] and "secret" not in r.text and "Traceback" not in r.text
    assert "x-lab-cost" in r.headers and again.status_code == 200
    real.close()
