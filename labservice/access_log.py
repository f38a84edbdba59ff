"""ASGI middleware for every HTTP request (``/api`` or not): a request id, one JSON access-log line, metrics.

The request id is the caller's ``X-Request-ID`` when it is a plain token (letters, digits, ``._:-``, at
most 128 characters), else a new one; it is echoed in the response's ``X-Request-ID`` and put in the request
state (``request_id``). The log line goes to the logger ``labservice.access`` at INFO, and holds::

    {"request_id", "method", "route", "status", "duration_ms", "token_id", "cost", "points", "bytes", "client"}

``route`` is the route template (``/api/v1/datasets/{dataset_id}/points``), never the raw path, and the query
string (which may carry ``?token=``) is never logged; ``token_id`` is the token's public id (the part
before the secret), null for public callers. ``cost`` is ``X-Lab-Cost``; ``points`` the points x times
answered; ``bytes`` the response body bytes.

Metrics are counted when the last body message is handed to the server, before the client can see the
end of the answer, so a scrape made after a response always includes it.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections import deque
from typing import Any

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labservice.metrics import Metrics, refusal_kind

access_log = logging.getLogger("labservice.access")

_CONVERTOR = re.compile(r"\{(\w+):\w+\}")  # {key:path} -> {key}: one spelling of each template
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ERROR_BODY_MAX = 64 * 1024  # error answers kept to classify limit refusals; larger ones are not errors


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID when it is a plain token, else a new random id."""
    for key, value in headers:
        if key.lower() == b"x-request-id":
            text = value.decode("latin-1").strip()
            if _REQUEST_ID.match(text):
                return text
            break
    return uuid.uuid4().hex


def route_template(app: Any, scope: Scope) -> str:
    """The template of the route that served (or would serve) ``scope``; "unmatched" when none does."""
    found = _template_in(scope)
    if found:
        return found
    # Refused before routing (a 429 from the limits middleware): find the route it was meant for.
    table = getattr(app.state, "_route_table", None) if hasattr(app, "state") else None
    if table is None:
        table = _route_table(getattr(getattr(app, "router", None), "routes", ()), "")
        if hasattr(app, "state"):
            app.state._route_table = table
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root + "/"):  # behind --root-path the path may still carry the prefix
        path = path[len(root) :]
    for regex, template in table:
        if regex.match(path):
            return template
    return "unmatched"


def _route_table(routes: Any, prefix: str) -> list[tuple[re.Pattern[str], str]]:
    """(regex, template) of every route, included routers' prefixes applied."""
    table = []
    for route in routes:
        context = getattr(route, "include_context", None)
        inner = getattr(route, "original_router", None)
        if context is not None and inner is not None:
            table += _route_table(inner.routes, prefix + str(getattr(context, "prefix", "")))
        elif isinstance(getattr(route, "path", None), str):
            regex, template, _ = compile_path(prefix + route.path)
            if not hasattr(route, "endpoint") and not hasattr(route, "methods"):  # a mount: its whole subtree
                regex = re.compile("^" + re.escape(template.rstrip("/")) + "(/.*)?$")
            table.append((regex, template))
        elif hasattr(route, "routes"):
            table += _route_table(route.routes, prefix)
    return table


def _template_in(scope: Any) -> str | None:
    # FastAPI keeps the full template (include prefix and all) on the effective route context; versions
    # without it flatten included routes, whose own path then has the prefix.
    fastapi_scope = scope.get("fastapi")
    context = fastapi_scope.get("effective_route_context") if isinstance(fastapi_scope, dict) else None
    for holder in (context, scope.get("route")):
        path = getattr(holder, "path", None)
        if path:
            return _CONVERTOR.sub(r"{\1}", str(path))
    return None


class AccessLogMiddleware:
    """Request id, access log and metrics; the outermost of the app's middleware.

    ``fastapi_app`` is the app (for its routes, its state and its chunk cache); ``metrics`` may be None
    (metrics off) and ``log_lines`` False (access log off).
    """

    def __init__(self, app: ASGIApp, fastapi_app: Any, metrics: Metrics | None, log_lines: bool = True) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.metrics = metrics
        self.log_lines = log_lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id_from(scope.get("headers", []))
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        nbytes = 0
        error_body = bytearray()
        done = False

        def finish() -> None:
            nonlocal done
            if not done:
                done = True
                try:
                    self._record(scope, state, rid, status, time.perf_counter() - started, nbytes, bytes(error_body))
                except Exception:  # counting must never fail an answer; say so in the service log
                    logging.getLogger("labservice").exception("access log / metrics failed for %s", rid)

        async def send_logged(message: Message) -> None:
            nonlocal status, nbytes
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                body = message.get("body", b"")
                nbytes += len(body)
                if status in (413, 429) and len(error_body) < _ERROR_BODY_MAX:
                    error_body.extend(body[: _ERROR_BODY_MAX - len(error_body)])
                if not message.get("more_body", False):
                    finish()  # before the last bytes go out: a scrape after this answer includes it
            await send(message)

        try:
            await self.app(scope, receive, send_logged)
        finally:
            finish()  # no final body (an exception, a disconnect): still one line, one count

    def _record(
        self, scope: Scope, state: dict[str, Any], rid: str, status: int, seconds: float, nbytes: int, body: bytes
    ) -> None:
        route = route_template(self.fastapi_app, scope)
        points = state.get("points") or 0
        metrics = self.metrics
        if metrics is not None:
            metrics.observe(route, scope.get("method", ""), status, seconds, nbytes, int(points))
            kind = refusal_kind(status, body)
            if kind is not None:
                metrics.refused(kind)
            metrics.sync_cache(getattr(self.fastapi_app.state, "chunk_cache", None))
        if self.log_lines and access_log.isEnabledFor(logging.INFO):
            caller = state.get("caller")
            client = scope.get("client")
            line = json.dumps(
                {
                    "request_id": rid,
                    "method": scope.get("method"),
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000.0, 3),
                    "token_id": getattr(caller, "token_id", None),
                    "cost": state.get("cost", 0),
                    "points": points,
                    "bytes": nbytes,
                    "client": client[0] if client else None,
                },
                separators=(",", ":"),
                default=str,
            )
            # makeRecord + handle: logger.info would also walk the stack for a caller nobody prints.
            access_log.handle(access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, line, (), None))


class BatchedLines(logging.Handler):
    """Write formatted records to ``stream`` in batches, from a background thread, every ``interval`` s.

    Writing (and flushing) one line per request on the event loop measured ~35 us a request on the
    development machine; appending to a list costs nothing, and a batch is written with one call. Lines of
    the last ``interval`` are lost if the process is killed (SIGKILL); a normal stop writes them.
    """

    def __init__(self, stream: Any = None, interval: float = 0.25) -> None:
        import sys
        import threading

        super().__init__(logging.INFO)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lines: deque[str] = deque()  # append and popleft are thread-safe
        self._wake = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="labservice-access-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.append(self.format(record))  # no lock on the hot path
            if self._stopped:  # closed (logging reconfigured) but still attached: write at once
                self._write()
        except Exception:  # a line that cannot be formatted must not fail the request
            self.handleError(record)

    def _run(self) -> None:
        while not self._stopped:  # bounded by close(): it sets _stopped and wakes the thread
            self._wake.wait(self.interval)
            self._write()

    def _write(self) -> None:
        lines = [self._lines.popleft() for _ in range(len(self._lines))]  # those there now; later ones wait
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()

    def flush(self) -> None:
        self._write()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._write()
        super().close()


def configure_access_log(stream: Any = None) -> None:
    """Write ``labservice.access`` lines as bare JSON (one object a line), not through the root format."""
    if any(isinstance(h, BatchedLines) for h in access_log.handlers):
        return  # once per process
    handler = BatchedLines(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(handler)
    access_log.setLevel(logging.INFO)
    access_log.propagate = False


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging configuration plus the access log's batched JSON lines on stderr.

    uvicorn applies its configuration (``logging.config.dictConfig``, which closes every existing handler)
    in each process it starts, so the access log handler is declared here rather than added beforehand.
    """
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["labservice_access"] = {"format": "%(message)s"}
    config["handlers"]["labservice_access"] = {
        "class": "labservice.access_log.BatchedLines",
        "formatter": "labservice_access",
    }
    config["loggers"]["labservice.access"] = {"handlers": ["labservice_access"], "level": "INFO", "propagate": False}
    return config
