"""The IVOA TAP 1.1 service at /tap: sync and async (UWS 1.1) ADQL queries, VOSI, TAP_SCHEMA.

Thin: parameters are read case-insensitively from the query string and the form body (as TAP specifies),
then handed to :mod:`labservice.datasets.tap`. A failed sync query answers a VOTable error document
(QUERY_STATUS=ERROR) with the status of its error class; UWS requests that make no sense in a job's phase
answer a 4xx. Async jobs need a token that allows jobs (as ``/api/v1/jobs``) and run as the ``tap`` job kind.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response, StreamingResponse

from labservice.datasets.tap import uws, votable
from labservice.datasets.tap.service import TapLimits, TapService, availability_xml
from labservice.errors import Forbidden, InvalidInput, LabError
from labservice.http_errors import status_for
from labservice.routers.deps import CallerDep, EngineDep, SettingsDep, SimulationsDep

router = APIRouter(prefix="/tap", tags=["tap"])
XML = "text/xml"
MAX_WAIT = 60.0  # seconds a WAIT request may block
_PARAM = {"type": "string"}


def _params_doc(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """OpenAPI for TAP's parameters (query string for GET, a form body for POST)."""
    return {"parameters": [{"name": n, "in": "query", "required": n in required, "schema": _PARAM} for n in names]}


def _form_doc(*names: str) -> dict[str, Any]:
    schema = {"type": "object", "properties": {n: _PARAM for n in names}}
    return {"requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}}


_XML_ERRORS = {s: {"description": d, "content": {votable.FORMATS["votable"]: {}}} for s, d in (
    ("400", "Bad TAP request (a VOTable error document)"),
    ("404", "Unknown table (a VOTable error document)"),
    ("413", "Over a limit: the time limit, memory (a VOTable error document)"),
    ("422", "Malformed or unsupported ADQL, unknown table or column (a VOTable error document)"),
)}
_OK = {"200": {"description": "The rows (VOTable by default; CSV or Parquet with FORMAT)",
               "content": {m: {} for m in votable.FORMATS.values()}}}


def get_tap(request: Request, sims: SimulationsDep, settings: SettingsDep) -> TapService:
    """The app's TAP service over every simulation it serves, made on first use."""
    tap = getattr(request.app.state, "tap", None)
    if tap is None:
        limits = TapLimits(settings.sql_max_rows, settings.sql_timeout_seconds, settings.sql_memory_limit,
                           settings.sql_threads)
        tap = request.app.state.tap = TapService(dict(sims.items()), limits)
    return tap


async def _params(request: Request) -> dict[str, str]:
    """Query-string and form parameters with upper-case names (TAP names are case-insensitive)."""
    out = {k.upper(): v for k, v in request.query_params.items()}
    if request.method == "POST":
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            try:
                form = await request.form()
            except Exception:  # a malformed body: the caller's to fix
                raise InvalidInput("the form body does not parse; send application/x-www-form-urlencoded") from None
            out.update({k.upper(): v for k, v in form.items() if isinstance(v, str)})
    return out


def _base(request: Request) -> str:
    return str(request.url_for("tap_capabilities")).removesuffix("/capabilities")


def _error(exc: LabError) -> Response:
    return Response(votable.error_document(exc.message), status_code=status_for(exc),
                    media_type=votable.FORMATS["votable"])


# -- sync ------------------------------------------------------------------------------------------
async def _sync(request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    try:
        p = await _params(request)
        tap = get_tap(request, sims, settings)
        if "QUERY" not in p:
            raise InvalidInput("QUERY is missing; send LANG=ADQL and QUERY=SELECT ...")
        fmt = p.get("RESPONSEFORMAT") or p.get("FORMAT")
        result = await run_in_threadpool(tap.run, p["QUERY"], p.get("MAXREC"), fmt, p.get("LANG"))
    except LabError as exc:
        return _error(exc)
    request.state.cost = result.rows
    return Response(result.body, media_type=result.media_type)


@router.get("/sync", operation_id="tap_sync_get", responses={**_OK, **_XML_ERRORS},
            openapi_extra=_params_doc("LANG", "QUERY", "FORMAT", "MAXREC", "REQUEST", required=("QUERY",)))
async def tap_sync_get(request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    """Run one ADQL query and answer its rows (TAP sync). Parameter names are case-insensitive."""
    return await _sync(request, sims, settings)


@router.post("/sync", operation_id="tap_sync_post", responses={**_OK, **_XML_ERRORS},
             openapi_extra=_form_doc("LANG", "QUERY", "FORMAT", "MAXREC", "REQUEST"))
async def tap_sync_post(request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    """TAP sync with the parameters in a form body."""
    return await _sync(request, sims, settings)


# -- VOSI ------------------------------------------------------------------------------------------
@router.get("/capabilities", operation_id="tap_capabilities", response_class=Response,
            responses={"200": {"content": {XML: {}}}})
async def tap_capabilities(request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    """VOSI capabilities: TAP 1.1, ADQL, output formats and limits."""
    return Response(get_tap(request, sims, settings).capabilities_xml(_base(request), _max_duration(settings)), media_type=XML)


@router.get("/availability", operation_id="tap_availability", response_class=Response,
            responses={"200": {"content": {XML: {}}}})
async def tap_availability(sims: SimulationsDep) -> Response:
    """VOSI availability."""
    ok = bool(sims.ids())
    note = f"serving {', '.join(sims.ids())}" if ok else "no simulation is served"
    return Response(availability_xml(ok, note), media_type=XML)


@router.get("/tables", operation_id="tap_tables", response_class=Response, responses={"200": {"content": {XML: {}}}})
async def tap_tables(request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    """VOSI tables: every schema, table and column with unit, UCD and description."""
    return Response(get_tap(request, sims, settings).tables_xml(), media_type=XML)


@router.get("/tables/{table}", operation_id="tap_table", response_class=Response,
            responses={"200": {"content": {XML: {}}}})
async def tap_table(table: str, request: Request, sims: SimulationsDep, settings: SettingsDep) -> Response:
    """VOSI tables: one table."""
    return Response(get_tap(request, sims, settings).tables_xml(table), media_type=XML)


# -- async (UWS 1.1) -------------------------------------------------------------------------------
def _store(engine: Any) -> uws.UwsStore:
    return uws.UwsStore(engine.registry.db.url)  # the platform database, shared by every host


def _owner(caller: Any) -> str:
    if caller.token_id is None or not caller.limits.jobs_allowed:
        raise Forbidden("async TAP jobs need a registered token that allows jobs (Authorization: Bearer ...); "
                        "without one, use /tap/sync within the public limits")
    return caller.token_id


def _job(engine: Any, caller: Any, job_id: str) -> uws.UwsJob:
    store = _store(engine)
    job = store.get(caller.token_id, job_id)
    record = engine.registry.get(job.job) if job.job not in (None, "starting") else None
    job = uws.resolve(job, record)
    if time.time() >= job.destruction:  # past its DESTRUCTION time: destroyed on first look
        _delete(engine, caller, job)
        return store.get(caller.token_id, job_id)  # NotFound
    return job


def _redirect(request: Request, job_id: str | None = None) -> RedirectResponse:
    return RedirectResponse(_base(request) + "/async" + (f"/{job_id}" if job_id else ""), status_code=303)


def _start(engine: Any, caller: Any, tap: TapService, settings: Any, job: uws.UwsJob) -> None:
    """PHASE=RUN: submit the ``tap`` job; a bad query puts the UWS job in ERROR (not an HTTP error)."""
    store = _store(engine)
    if not store.claim_run(job.id):
        return
    p = job.params
    body = {"kind": "tap", "query": p.get("QUERY", ""), "format": votable.output_format(
        p.get("RESPONSEFORMAT") or p.get("FORMAT")), "maxrec": _maxrec(p.get("MAXREC")),
        "simulations": sorted(tap.paths), "execution_duration": job.duration, "max_rows": tap.limits.max_rows,
        "memory_limit": tap.limits.memory_limit}
    try:
        rec = engine.submit(caller.token_id, body, None, caller.limits)
    except LabError as exc:
        if status_for(exc) in (403, 413, 429, 503):  # quotas and limits: the HTTP answer says so
            store.update(job.id, job=None)
            raise
        store.update(job.id, error=exc.message)
        return
    store.update(job.id, job=rec.id)


def _maxrec(value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidInput(f"MAXREC must be a whole number >= 0; got {value[:40]!r}") from None
    if n < 0:
        raise InvalidInput(f"MAXREC must be >= 0; got {n}")
    return n


def _abort(engine: Any, caller: Any, job: uws.UwsJob) -> None:
    store = _store(engine)
    store.update(job.id, aborted=1)
    if job.job not in (None, "starting"):
        engine.cancel(caller.token_id, job.job)


def _duration(value: str, cap: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise InvalidInput(f"EXECUTIONDURATION must be a number of seconds; got {value[:40]!r}") from None
    if not seconds >= 0 or seconds != seconds:
        raise InvalidInput(f"EXECUTIONDURATION must be >= 0; got {value[:40]!r}")
    return cap if seconds == 0 else min(max(seconds, 1.0), cap)  # 0 means "no limit": the service's cap


def _apply(engine: Any, caller: Any, tap: TapService, settings: Any, job: uws.UwsJob, p: dict[str, str]) -> None:
    """Apply parameters, EXECUTIONDURATION, DESTRUCTION, PHASE and ACTION of a POST to a job."""
    store = _store(engine)
    if p.get("ACTION", "").upper() == "DELETE":
        _delete(engine, caller, job)
        return
    changes = {k: v for k, v in p.items() if k in uws.PARAMETERS}
    if changes or "EXECUTIONDURATION" in p:
        if job.phase != "PENDING":
            raise uws.PhaseConflict(f"parameters can change only while the job is PENDING; it is {job.phase}")
        if changes:
            job.params = {**job.params, **changes}
            store.update(job.id, params=job.params)
        if "EXECUTIONDURATION" in p:
            job.duration = _duration(p["EXECUTIONDURATION"], _max_duration(settings))
            store.update(job.id, duration=job.duration)
    if "DESTRUCTION" in p:
        latest = job.created + settings.job_ttl_days * 86400
        store.update(job.id, destruction=min(uws.parse_iso(p["DESTRUCTION"]), latest))
    if "PHASE" in p:
        action = uws.check_phase_request(p["PHASE"], job.phase)
        if action == "run":
            _start(engine, caller, tap, settings, job)
        elif action == "abort":
            _abort(engine, caller, job)


def _delete(engine: Any, caller: Any, job: uws.UwsJob) -> None:
    if job.phase in uws.ACTIVE:
        _abort(engine, caller, job)
    elif job.job not in (None, "starting") and job.phase == "COMPLETED":
        engine.cancel(caller.token_id, job.job)  # deletes the result files
    _store(engine).update(job.id, deleted=1)


def _max_duration(settings: Any) -> float:
    return max(float(settings.sql_timeout_seconds) * 60, 600.0)


_JOB_PARAMS = ("LANG", "QUERY", "FORMAT", "MAXREC", "PHASE", "EXECUTIONDURATION", "RUNID")


@router.get("/async", operation_id="tap_async_list", response_class=Response, responses={"200": {"content": {XML: {}}}})
async def tap_async_list(request: Request, engine: EngineDep, caller: CallerDep) -> Response:
    """The caller's UWS job list (uws:jobs)."""
    owner = _owner(caller)
    jobs = await run_in_threadpool(lambda: [_job(engine, caller, j.id) for j in _store(engine).list(owner)])
    return Response(uws.jobs_xml(jobs, _base(request)), media_type=XML)


@router.post("/async", operation_id="tap_async_create", status_code=303, response_class=Response,
             responses={"303": {"description": "The new job (PENDING, or started with PHASE=RUN)"}},
             openapi_extra=_form_doc(*_JOB_PARAMS))
async def tap_async_create(request: Request, engine: EngineDep, caller: CallerDep, sims: SimulationsDep,
                           settings: SettingsDep) -> Response:
    """Create a UWS job (PENDING); PHASE=RUN in the same request starts it. Redirects to the job."""
    owner = _owner(caller)
    p = await _params(request)
    tap = get_tap(request, sims, settings)
    if "QUERY" not in p:
        raise InvalidInput("QUERY is missing; send LANG=ADQL and QUERY=SELECT ...")
    votable.output_format(p.get("RESPONSEFORMAT") or p.get("FORMAT"))
    _maxrec(p.get("MAXREC"))
    duration = _duration(p.get("EXECUTIONDURATION", "0"), _max_duration(settings))
    params = {k: v for k, v in p.items() if k in uws.PARAMETERS}

    def create() -> str:
        job = _store(engine).create(owner, params, duration, settings.job_ttl_days * 86400)
        if "PHASE" in p:
            _apply(engine, caller, tap, settings, uws.resolve(job, None), {"PHASE": p["PHASE"]})
        return job.id

    return _redirect(request, await run_in_threadpool(create))


@router.get("/async/{job_id}", operation_id="tap_async_job", response_class=Response,
            responses={"200": {"content": {XML: {}}}}, openapi_extra=_params_doc("WAIT", "PHASE"))
async def tap_async_job(job_id: str, request: Request, engine: EngineDep, caller: CallerDep) -> Response:
    """The uws:job document; WAIT=n blocks up to n seconds (at most 60) while the phase stays the same."""
    p = {k.upper(): v for k, v in request.query_params.items()}
    job = await run_in_threadpool(_job, engine, caller, job_id)
    if "WAIT" in p:
        try:
            wait = float(p["WAIT"])
        except ValueError:
            raise InvalidInput(f"WAIT must be a number of seconds; got {p['WAIT'][:40]!r}") from None
        wait = MAX_WAIT if wait < 0 or wait != wait else min(wait, MAX_WAIT)
        start_phase = p.get("PHASE", job.phase).upper()
        deadline = time.monotonic() + wait
        while job.phase == start_phase and job.phase in uws.ACTIVE and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            job = await run_in_threadpool(_job, engine, caller, job_id)
    return Response(uws.job_xml(job, _base(request)), media_type=XML)


@router.post("/async/{job_id}", operation_id="tap_async_post", status_code=303, response_class=Response,
             responses={"303": {"description": "The job, after the change"}},
             openapi_extra=_form_doc("ACTION", "PHASE", "EXECUTIONDURATION", "DESTRUCTION", "QUERY"))
async def tap_async_post(job_id: str, request: Request, engine: EngineDep, caller: CallerDep,
                         sims: SimulationsDep, settings: SettingsDep) -> Response:
    """ACTION=DELETE deletes the job; PHASE=RUN / ABORT, parameters, EXECUTIONDURATION, DESTRUCTION."""
    p = await _params(request)
    tap = get_tap(request, sims, settings)
    job = await run_in_threadpool(_job, engine, caller, job_id)
    await run_in_threadpool(_apply, engine, caller, tap, settings, job, p)
    return _redirect(request, None if p.get("ACTION", "").upper() == "DELETE" else job_id)


@router.delete("/async/{job_id}", operation_id="tap_async_delete", status_code=303, response_class=Response,
               responses={"303": {"description": "The job list"}})
async def tap_async_delete(job_id: str, request: Request, engine: EngineDep, caller: CallerDep) -> Response:
    """Delete the job: abort it if it runs, delete its results, drop it from the list."""
    job = await run_in_threadpool(_job, engine, caller, job_id)
    await run_in_threadpool(_delete, engine, caller, job)
    return _redirect(request)


JobItem = Literal["phase", "quote", "executionduration", "destruction", "error", "parameters", "results", "owner"]
JobSetting = Literal["phase", "executionduration", "destruction", "parameters"]


@router.get("/async/{job_id}/{item}", operation_id="tap_async_item", response_class=Response,
            responses={"200": {"content": {"text/plain": {}, XML: {}}}})
async def tap_async_item(job_id: str, item: JobItem, request: Request, engine: EngineDep, caller: CallerDep
                         ) -> Response:
    """One of the job's values: phase, quote, executionduration, destruction, error, parameters, results, owner."""
    job = await run_in_threadpool(_job, engine, caller, job_id)
    text = {"phase": job.phase, "executionduration": str(int(job.duration)), "owner": "",
            "destruction": uws.iso(job.destruction) or "",
            "quote": (uws.iso(job.created + job.duration) or "") if job.phase in uws.ACTIVE else ""}
    if item in text:
        return Response(text[item], media_type="text/plain")
    doc = uws.job_xml(job, _base(request)).decode()
    if item == "error":
        if job.phase != "ERROR":
            raise uws.PhaseConflict(f"job {job_id} has no error: it is {job.phase}")
        return Response(votable.error_document(job.error or "failed"), media_type=XML)
    start, end = doc.index(f"<uws:{item}>"), doc.index(f"</uws:{item}>") + len(f"</uws:{item}>")
    ns = f'xmlns:uws="{uws.UWS_NS}" xmlns:xlink="{uws.XLINK}"'
    return Response(doc[start:end].replace(f"<uws:{item}>", f"<uws:{item} {ns}>", 1), media_type=XML)


@router.post("/async/{job_id}/{item}", operation_id="tap_async_item_post", status_code=303, response_class=Response,
             responses={"303": {"description": "The job, after the change"}},
             openapi_extra=_form_doc("PHASE", "EXECUTIONDURATION", "DESTRUCTION", "QUERY", "MAXREC"))
async def tap_async_item_post(job_id: str, item: JobSetting, request: Request, engine: EngineDep, caller: CallerDep,
                              sims: SimulationsDep, settings: SettingsDep) -> Response:
    """Change the phase, execution duration, destruction or parameters of a job."""
    wanted = {"phase": ("PHASE",), "executionduration": ("EXECUTIONDURATION",), "destruction": ("DESTRUCTION",),
              "parameters": uws.PARAMETERS}
    p = await _params(request)
    p = {k: v for k, v in p.items() if k in wanted[item]}
    if not p:
        raise InvalidInput(f"send {' or '.join(wanted[item])} to change the job's {item}")
    tap = get_tap(request, sims, settings)
    job = await run_in_threadpool(_job, engine, caller, job_id)
    await run_in_threadpool(_apply, engine, caller, tap, settings, job, p)
    return _redirect(request, job_id)


@router.get("/async/{job_id}/results/result", operation_id="tap_async_result", response_class=StreamingResponse,
            responses={"200": {"content": {m: {} for m in votable.FORMATS.values()}}})
async def tap_async_result(job_id: str, engine: EngineDep, caller: CallerDep) -> Response:
    """The result of a COMPLETED job (VOTable, CSV or Parquet)."""
    job = await run_in_threadpool(_job, engine, caller, job_id)
    if job.phase != "COMPLETED" or not job.results:
        raise uws.PhaseConflict(f"job {job_id} is {job.phase}; its result exists once it is COMPLETED")
    entry = job.results[0]
    kind = {v: k for k, v in votable.SUFFIXES.items()}[entry["name"].rsplit(".", 1)[1]]
    chunks = engine.scratch.iter_range(job.job, entry["name"], 0, int(entry["size"]))
    return StreamingResponse(chunks, media_type=votable.FORMATS[kind],
                             headers={"Content-Length": str(entry["size"])})
