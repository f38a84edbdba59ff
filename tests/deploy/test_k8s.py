"""deploy/k8s rendered (the kustomize subset in tests/plugin/deploy.py) and validated offline against the
Kubernetes schemas (kubernetes-validate), plus the references between objects and the labservice config."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from labservice.settings import Settings
from tests.plugin.deploy import containers, dask_context, labservice_context, pod_spec, render

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes still commonly run, and the newest the package knows.
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "example")


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name)]
    assert len(found) == 1, f"expected one {kind} {name}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_against_the_kubernetes_schemas(objects: list[dict[str, Any]], version: str) -> None:
    assert len(objects) >= 12
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} (Kubernetes {version}): {exc.message} at "
                        f"{'/'.join(map(str, exc.path))}")


def test_the_validator_rejects_a_broken_object(objects: list[dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(one(objects, "Deployment", "labservice-api")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_configmap_holds_a_valid_labservice_yaml(objects: list[dict[str, Any]], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    cm = one(objects, "ConfigMap", "labservice-config")
    assert set(cm["data"]) >= {"labservice.yaml"}
    path = tmp_path / "labservice.yaml"
    path.write_text(cm["data"]["labservice.yaml"])
    for name in list(os.environ):
        if name.startswith("LABSERVICE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LABSERVICE_CONFIG", str(path))
    settings = Settings()  # an unknown key or a bad value raises here
    assert settings.engine == "external" and settings.dask_scheduler == "tcp://dask-scheduler:8786"
    assert settings.workers > 1  # so the Secret must give redis_url (checked below)


def test_api_deployment_probes_resources_and_hpa(objects: list[dict[str, Any]]) -> None:
    api = one(objects, "Deployment", "labservice-api")
    (c,) = containers(api)
    port = next(p for p in c["ports"] if p["name"] == "http")["containerPort"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and {"cpu", "memory"} <= set(c["resources"]["limits"])
    ctx = labservice_context(c["args"])
    assert ctx.info_name == "serve" and ctx.params["port"] == port and ctx.params["host"] == "0.0.0.0"
    hpa = one(objects, "HorizontalPodAutoscaler", "labservice-api")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "labservice-api"}
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_engines_and_dask(objects: list[dict[str, Any]]) -> None:
    engine = one(objects, "Deployment", "labservice-engine")
    assert engine["spec"]["replicas"] == 2
    assert labservice_context(containers(engine)[0]["args"]).info_name == "engine"
    sched = containers(one(objects, "Deployment", "dask-scheduler"))[0]
    port = int(dask_context(sched["command"][1:]).params["port"])
    svc = one(objects, "Service", "dask-scheduler")
    assert any(p["port"] == port for p in svc["spec"]["ports"])
    worker = containers(one(objects, "Deployment", "dask-worker"))[0]
    assert dask_context(worker["command"][1:]).params["scheduler"] == f"tcp://dask-scheduler:{port}"
    settings = yaml.safe_load(one(objects, "ConfigMap", "labservice-config")["data"]["labservice.yaml"])
    assert settings["dask_scheduler"] == f"tcp://dask-scheduler:{port}"


def test_every_labservice_container_gets_the_config_and_its_secrets(objects: list[dict[str, Any]]) -> None:
    secret = one(objects, "Secret", "labservice-secrets")
    secret_keys = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    cm_name = one(objects, "ConfigMap", "labservice-config")["metadata"]["name"]
    checked = 0
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        assert spec.get("securityContext", {}).get("runAsNonRoot") is True, f"{obj['metadata']['name']} may run as root"
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(obj):
            assert c["image"] == "registry.example.org/labservice:0.1.0", c["image"]
            mounts = {m["mountPath"]: volumes[m["name"]] for m in c.get("volumeMounts", [])}
            env = {e["name"]: e for e in c.get("env", [])}
            config = str(labservice_context(c["args"]).params["config"]) if "args" in c else env.get(
                "LABSERVICE_CONFIG", {}).get("value")  # fmt: skip
            if config is None:
                continue  # the scheduler reads no labservice settings
            checked += 1
            folder, key = config.rsplit("/", 1)
            assert mounts[folder]["configMap"]["name"] == cm_name and key == "labservice.yaml"
            for name, e in env.items():
                if name.endswith("_FILE"):
                    sfolder, skey = e["value"].rsplit("/", 1)
                    assert mounts[sfolder]["secret"]["secretName"] == secret["metadata"]["name"], name
                    assert skey in secret_keys, f"{name}: the Secret has no key {skey}"
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret_keys, name
    assert checked >= 4  # api, engine, dask worker, db upgrade
    assert secret_keys["database_url"].startswith("postgresql://") and "@postgres:" in secret_keys["database_url"]
    assert secret_keys["redis_url"].startswith("redis://") and "@redis:" in secret_keys["redis_url"]
    assert set(json.loads(secret_keys["scratch_options"])) >= {"endpoint_url", "key", "secret"}


def test_services_ingress_and_external_endpoints(objects: list[dict[str, Any]]) -> None:
    pods = [o["spec"]["template"]["metadata"]["labels"] for o in objects if o["kind"] == "Deployment"]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for name, svc in services.items():
        if svc["spec"].get("type") == "ExternalName":
            continue
        selector = svc["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pods), f"Service {name} selects no pods"
    for name in ("postgres", "redis", "s3"):
        assert services[name]["spec"]["type"] == "ExternalName" and services[name]["spec"]["externalName"]
    ingress = one(objects, "Ingress", "labservice")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    ports = {p["name"] for p in services[backend["name"]]["spec"]["ports"]}
    assert backend["port"]["name"] in ports
    assert {o["metadata"]["namespace"] for o in objects} == {"labservice-example"}
