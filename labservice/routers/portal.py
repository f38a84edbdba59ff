"""The web portal: server-rendered HTML pages at ``/`` and their static files at ``/static``.

The pages are thin: they show metadata rendered here and leave every measurement to a little plain
JavaScript (``labservice/static/js``) that calls the public JSON API with the browser's token. The one
non-page route, ``POST /export/points.h5``, turns the result table a page already holds into HDF5, since a
browser cannot write HDF5 itself. Every portal response carries the security headers of
:data:`SECURITY_HEADERS`; a library error (raised by a page or its dependencies) becomes an HTML page with
the same message and status the API gives, never a traceback (:class:`PageRoute`).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from labservice import __version__
from labservice.cutout.formats import download_formats
from labservice.datasets.simulation import Simulation, SimulationRegistry
from labservice.errors import InvalidInput, LabError, NotFound, unknown
from labservice.http_errors import lab_error_response, status_for
from labservice.routers.deps import DatasetRegistry, RegistryDep, SimulationsDep, body_of

HERE = Path(__file__).resolve().parent.parent
TEMPLATES = Jinja2Templates(directory=str(HERE / "templates"))
STATIC_DIR = HERE / "static"
API = "/api/v1"

# Only this origin may supply scripts, styles, images and connections; no page may frame the portal.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
MAX_EXPORT_COMPONENTS = 64  # a hessian of a 3-vector has 18 columns; anything far beyond is not a table
MAIN_BRANCH_FIELDS = ["id", "snap", "a", "redshift", "mass", "n_particles"]

Registry = RegistryDep
Sims = SimulationsDep


# -- helpers --------------------------------------------------------------------------------------------
def _page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("title", "labservice")
    context["version"] = __version__
    context["base_url"] = str(request.base_url).rstrip("/")
    context["root"] = request.scope.get("root_path", "")  # the links follow `serve --root-path`
    return TEMPLATES.TemplateResponse(
        request, template, context, status_code=status_code, headers=SECURITY_HEADERS
    )


def _error_page(request: Request, exc: LabError) -> HTMLResponse:
    """The page for a library error: its status and its message, which says what to change."""
    status = status_for(exc)
    return _page(request, "error.html", status_code=status, title=f"Error {status}", status=status, message=exc.message)


class PageRoute(APIRoute):
    """A portal route: a library error becomes the error page (HTML routes) or the API's JSON error body
    with the portal's security headers (the export route), wherever it was raised."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        html = self.response_class is HTMLResponse

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LabError as exc:
                if html:
                    return _error_page(request, exc)
                response = lab_error_response(exc)
                response.headers.update(SECURITY_HEADERS)
                return response

        return run


router = APIRouter(tags=["portal"], include_in_schema=False, route_class=PageRoute)


def _kind_of(dataset_id: str, registry: DatasetRegistry, sims: SimulationRegistry) -> str:
    """``"field"`` or ``"cosmology"``; NotFound naming close matches otherwise."""
    if dataset_id in registry.ids() or dataset_id in registry.failed:
        return "field"
    if dataset_id in sims:
        return "cosmology"
    raise unknown("dataset", dataset_id, [*registry.ids(), *sims.ids()])


def _field_or_404(dataset_id: str, registry: DatasetRegistry, sims: SimulationRegistry, form: str) -> Any:
    if _kind_of(dataset_id, registry, sims) == "cosmology":
        density = sims.get(dataset_id).summary().get("density_dataset")
        hint = f"; use its density field {density!r}" if density else ""
        raise NotFound(f"{dataset_id!r} is a cosmology simulation; the {form} works on field datasets{hint}")
    return registry.get(dataset_id)


def _variables(meta: Any) -> list[dict[str, Any]]:
    return [
        {"name": name, "components": list(v.components), "units": v.units, "description": v.description}
        for name, v in sorted(meta.variables.items())
    ]


def _axes(meta: Any) -> list[dict[str, Any]]:
    out = []
    for name in ("x", "y", "z"):
        ax = meta.grid.axis(name)
        lo, hi = ax.bounds
        out.append(
            {
                "name": name,
                "size": ax.size,
                "periodic": ax.periodic,
                "uniform": ax.uniform,
                "lo": lo,
                "hi": hi,
                "step": ax.step,
            }
        )
    return out


def _field_summary(dataset_id: str, meta: Any) -> dict[str, Any]:
    nbytes = sum(
        len(meta.times)
        * meta.grid.axis("x").size
        * meta.grid.axis("y").size
        * meta.grid.axis("z").size
        * v.ncomp
        * np.dtype(v.dtype).itemsize
        for v in meta.variables.values()
    )
    return {
        "id": dataset_id,
        "title": meta.title,
        "kind": "field",
        "description": meta.description,
        "shape": list(meta.grid.shape),
        "axes": _axes(meta),
        "variables": _variables(meta),
        "times": {"count": len(meta.times), "first": meta.times[0], "last": meta.times[-1]},
        "nbytes": int(nbytes),
        "default_variable": "velocity" if "velocity" in meta.variables else sorted(meta.variables)[0],
    }


def _sim_card(sim: Simulation) -> dict[str, Any]:
    s = sim.summary()
    return {
        "id": s["id"],
        "title": s["title"],
        "kind": "cosmology",
        "box": s["box"],
        "n_particles": s["n_particles"],
        "n_halos": s["n_halos"],
        "snapshots": s["snapshots"],
        "density_dataset": s["density_dataset"],
    }


def _flow_curve_svg(ds: Any) -> tuple[str, dict[str, Any]]:
    """The dataset's spectrum or profile as inline SVG (numerics in :mod:`labservice.cutout.statistics`).

    Kind ``"none"`` and no SVG when nothing is stored and the grid is too big to compute one per page view.
    """
    from labservice.cutout.statistics import flow_curve
    from labservice.svgplot import line_plot_svg

    curve = flow_curve(ds.meta, ds.reader, 0)
    if curve is None:
        return "", {"kind": "none", "source": "too large", "time": None}
    svg = line_plot_svg(
        curve.x,
        curve.y,
        xlabel=curve.xlabel,
        ylabel=curve.ylabel,
        title=curve.title,
        xlog=curve.xlog,
        ylog=curve.ylog,
        element_id=f"{curve.kind}-plot",
    )
    return svg, {"kind": curve.kind, "source": curve.source, "time": curve.time}


def _main_branch_svg(sim: Simulation, halo_id: int) -> tuple[str, list[dict[str, Any]]]:
    from labservice.svgplot import line_plot_svg

    fields = [f for f in MAIN_BRANCH_FIELDS if f in sim.columns]
    branch = sim.tree(halo_id, "main-branch", None, fields).sort_values("snap")
    svg = line_plot_svg(
        branch["a"],
        branch["mass"],
        xlabel="scale factor a",
        ylabel="mass [Msun/h]",
        title=f"halo {halo_id}: main-branch mass history",
        ylog=True,
        markers=True,
        element_id="mass-history",
    )
    rows = json.loads(branch.to_json(orient="records"))
    return svg, rows


# -- pages ------------------------------------------------------------------------------------------------
@router.get("/", operation_id="portal_home", response_class=HTMLResponse)
def home(request: Request, registry: Registry, sims: Sims) -> HTMLResponse:
    """The portal home page: what the service is, the datasets as cards, a quick start."""
    fields = [_field_summary(ds_id, ds.meta) for ds_id, ds in registry.items()]
    cosmo = [_sim_card(sim) for _, sim in sims.items()]

    # The quick start prefers a fully periodic flow (any random point is inside, velocity exists).
    def fit(f: dict[str, Any]) -> tuple[bool, bool]:
        return (not all(a["periodic"] for a in f["axes"]), f["default_variable"] != "velocity")

    first = min(fields, key=fit) if fields else None
    return _page(
        request,
        "home.html",
        title="labservice: measure inside simulations",
        fields=fields,
        simulations=cosmo,
        failed=registry.failed,
        quick=first,
    )


@router.get("/datasets/{dataset_id}", operation_id="portal_dataset", response_class=HTMLResponse)
async def dataset_page(dataset_id: str, request: Request, registry: Registry, sims: Sims) -> HTMLResponse:
    """A dataset: metadata, slice viewer and spectrum, or for a simulation its snapshots and halos."""
    if _kind_of(dataset_id, registry, sims) == "cosmology":
        sim = sims.get(dataset_id)
        snapshots = json.loads(sim.snapshots().to_json(orient="records"))
        return _page(
            request,
            "simulation.html",
            title=f"{dataset_id}: simulation",
            sim=sim.summary(),
            snapshots=snapshots,
            last_snap=max(s["snap"] for s in snapshots),
        )
    ds = registry.get(dataset_id)
    svg, curve = await run_in_threadpool(_flow_curve_svg, ds)
    meta = ds.meta
    return _page(
        request,
        "dataset.html",
        title=f"{dataset_id}: {meta.title}",
        ds=_field_summary(dataset_id, meta),
        times=list(meta.times),
        metadata=json.dumps(meta.model_dump(mode="json"), indent=1),
        curve_svg=svg,
        curve=curve,
        extra=meta.extra,
        provenance=meta.provenance,
    )


@router.get("/datasets/{dataset_id}/query", operation_id="portal_query", response_class=HTMLResponse)
def query_page(dataset_id: str, request: Request, registry: Registry, sims: Sims) -> HTMLResponse:
    """The point-query form: paste or upload points, choose method, operator and time, see the table."""
    from labservice.facade import ALL_OPERATORS, SPATIAL_METHODS, TEMPORAL_METHODS

    ds = _field_or_404(dataset_id, registry, sims, "query form")
    summary = _field_summary(dataset_id, ds.meta)
    # A few example points spread inside the domain (away from walls), to edit or replace.
    lo = np.array([a["lo"] for a in summary["axes"]])
    hi = np.array([a["hi"] for a in summary["axes"]])
    example = lo + (hi - lo) * np.array([[0.11, 0.23, 0.37], [0.5, 0.5, 0.5], [0.81, 0.64, 0.29]])
    return _page(
        request,
        "query.html",
        title=f"{dataset_id}: point query",
        ds=summary,
        times=list(ds.meta.times),
        operators=list(ALL_OPERATORS),
        spatial=list(SPATIAL_METHODS),
        temporal=list(TEMPORAL_METHODS),
        example="x,y,z\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in example),
    )


@router.get("/datasets/{dataset_id}/cutout", operation_id="portal_cutout", response_class=HTMLResponse)
def cutout_page(dataset_id: str, request: Request, registry: Registry, sims: Sims) -> HTMLResponse:
    """The cutout form: ranges and strides, the size before submitting, download or batch job."""
    ds = _field_or_404(dataset_id, registry, sims, "cutout form")
    return _page(
        request,
        "cutout.html",
        title=f"{dataset_id}: cutout",
        ds=_field_summary(dataset_id, ds.meta),
        times=list(ds.meta.times),
        formats=download_formats(),
    )


@router.get("/datasets/{dataset_id}/halos/{halo_id}", operation_id="portal_halo", response_class=HTMLResponse)
async def halo_page(
    dataset_id: str, halo_id: str, request: Request, sims: Sims, registry: Registry
) -> HTMLResponse:
    """One halo: its catalog row and its main-branch mass history."""
    if _kind_of(dataset_id, registry, sims) != "cosmology":
        raise NotFound(f"{dataset_id!r} is a field dataset; halo pages belong to cosmology simulations")
    if not re.fullmatch(r"\d{1,18}", halo_id):
        raise NotFound(f"halo ids are non-negative integers; got {halo_id!r}")
    sim = sims.get(dataset_id)
    halo = await run_in_threadpool(sim.halo, int(halo_id))
    svg, branch = await run_in_threadpool(_main_branch_svg, sim, int(halo_id))
    return _page(
        request,
        "halo.html",
        title=f"{dataset_id}: halo {halo_id}",
        sim_id=dataset_id,
        halo=halo,
        halo_id=int(halo_id),
        history_svg=svg,
        branch=branch,
    )


@router.get("/jobs", operation_id="portal_jobs", response_class=HTMLResponse)
def jobs_page(request: Request) -> HTMLResponse:
    """My jobs: the browser's token, its jobs with live progress, cancel and download."""
    return _page(request, "jobs.html", title="My jobs")


@router.get("/groups", operation_id="portal_groups", response_class=HTMLResponse)
def groups_page(request: Request) -> HTMLResponse:
    """Groups: create one, see members and roles, add, re-role and remove members."""
    return _page(request, "groups.html", title="Groups")


@router.get("/tables", operation_id="portal_tables", response_class=HTMLResponse)
def tables_page(request: Request) -> HTMLResponse:
    """My tables (MyDB): mine and those shared with me; preview, download, upload, share, delete."""
    return _page(request, "tables.html", title="My tables")


@router.get("/sql", operation_id="portal_sql", response_class=HTMLResponse)
def sql_page(request: Request, sims: Sims, sim: str | None = None) -> HTMLResponse:
    """The query box: SQL over a simulation's catalogs or MyDB, run Quick or submitted as a job."""
    cards = [_sim_card(s) for _, s in sims.items()]
    if sim is not None and sim != "mydb" and sim not in sims:
        raise unknown("simulation", sim, [*sims.ids(), "mydb"])
    selected = sim or (cards[0]["id"] if cards else "mydb")
    # One example per target: the most massive halos at the last snapshot, or a MyDB table.
    examples = {
        c["id"]: f"SELECT id, mass, x, y, z FROM halos WHERE snap = {c['snapshots']['count'] - 1} "
        "ORDER BY mass DESC LIMIT 10"
        for c in cards
    }
    examples["mydb"] = "SELECT * FROM mydb.my_table LIMIT 10"
    return _page(request, "sql.html", title="SQL", simulations=cards, selected=selected, examples=examples)


# -- the one conversion route ------------------------------------------------------------------------------
class PointsTable(BaseModel):
    """A point-query result as the query page shows it."""

    model_config = ConfigDict(extra="forbid")
    dataset: str = Field(max_length=200)
    variable: str = Field(max_length=200)
    operator: str = Field(default="field", max_length=100)
    spatial: str = Field(default="lag4", max_length=100)
    temporal: str = Field(default="none", max_length=100)
    time: float
    components: list[str] = Field(min_length=1, max_length=MAX_EXPORT_COMPONENTS)
    points: list[list[float]] = Field(min_length=1)
    values: list[list[float | None]]


def points_table_hdf5(table: PointsTable) -> bytes:
    """The table as an HDF5 file: ``points`` (N, 3), ``values`` (N, ncomp), attributes for the query."""
    import h5py

    bad = next((i for i, p in enumerate(table.points) if len(p) != 3), None)
    if bad is not None:
        raise InvalidInput(
            f"points must be N rows of [x, y, z]; row {bad} has {len(table.points[bad])} numbers"
        )
    points = np.asarray(table.points, dtype=np.float64).reshape(-1, 3)
    ncomp = len(table.components)
    if len(table.values) != len(points) or any(len(row) != ncomp for row in table.values):
        raise InvalidInput(
            f"values must be {len(points)} rows of {ncomp} numbers, one per point and component"
        )
    values = np.array([[np.nan if v is None else v for v in row] for row in table.values], dtype=np.float64)
    sink = io.BytesIO()
    with h5py.File(sink, "w") as f:
        f.create_dataset("points", data=points)
        dset = f.create_dataset("values", data=values)
        dset.attrs["components"] = np.array(table.components, dtype=h5py.string_dtype())
        for key in ("dataset", "variable", "operator", "spatial", "temporal", "time"):
            f.attrs[key] = getattr(table, key)
    return sink.getvalue()


@router.post("/export/points.h5", operation_id="portal_export_points_hdf5")
async def export_points_hdf5(table: Annotated[PointsTable, body_of(PointsTable)]) -> Response:
    """Turn the result table of the query page into an HDF5 file (the browser cannot write HDF5)."""
    body = await run_in_threadpool(points_table_hdf5, table)
    safe = re.sub(
        r"[^A-Za-z0-9_.-]", "_", f"{table.dataset}_{table.variable}_{table.operator}_t{table.time:g}"
    )
    headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{safe}.h5"'}
    return Response(body, media_type="application/x-hdf5", headers=headers)


# -- static files and installation ---------------------------------------------------------------------------
class SecureStaticFiles(StaticFiles):
    """Static files with the portal's security headers."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def install(app: FastAPI) -> None:
    """Serve the portal pages at ``/`` and their static files at ``/static``."""
    app.include_router(router)
    app.mount("/static", SecureStaticFiles(directory=str(STATIC_DIR)), name="static")
