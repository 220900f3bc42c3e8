"""The daemon's HTTP face: metrics, liveness, readiness and a small read-only API.

No input gives a 5xx: a bad parameter is a 400, an unknown path a 404 and a wrong
method a 405, each with a small JSON body; a 500 means a bug in remedyd.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.core.errors import RemedydError
from daemon.http.linger import answer_early
from daemon.http.openapi import MAX_AUDIT_LIMIT, document
from daemon.http.requestlog import ServerLog
from daemon.telemetry.metrics import Metrics
from daemon.telemetry.redact import scrub

log = logging.getLogger("remedyd.http")

DEFAULT_AUDIT_LIMIT = 100
_SHOWN = 40  # characters of a bad parameter quoted back in an error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_SERVER_LOG = web.AppKey("server_log", ServerLog)


class DaemonView(Protocol):
    """What the HTTP layer may read from the daemon; it never changes anything."""

    def readiness(self) -> dict[str, Any]: ...
    def rules_view(self) -> list[dict[str, Any]]: ...
    def audit_tail(self, limit: int) -> list[dict[str, Any]]: ...


class ListenError(RemedydError):
    """The listen address cannot be bound; the message says which and why."""


def _error(status: int, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": message, **details}, status=status)


def audit_limit(request: web.Request) -> int | web.Response:
    """`limit` as an int in 1..MAX_AUDIT_LIMIT, or the 400 that says what is wrong."""
    given = request.query.getall("limit", [])
    if len(given) > 1:
        return _error(400, f"limit given {len(given)} times; give it once")
    raw = given[0] if given else str(DEFAULT_AUDIT_LIMIT)
    # ASCII only: str.isdigit() also accepts '²', which int() refuses, and int() on
    # thousands of digits raises; both were 500s.
    if raw.isascii() and raw.isdigit() and len(raw.lstrip("0")) <= len(str(MAX_AUDIT_LIMIT)):
        value = int(raw)
        if 1 <= value <= MAX_AUDIT_LIMIT:
            return value
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    return _error(400, f"limit must be an integer from 1 to {MAX_AUDIT_LIMIT}, got {shown!r}")


def build_app(daemon: DaemonView, metrics: Metrics,
              routes: Sequence[web.AbstractRouteDef] = (),
              api: Mapping[str, dict[str, Any]] | None = None) -> web.Application:
    """The daemon's endpoints, and `routes` integrations serve (webhooks, the security
    API), which `api` describes (OpenAPI path items by path)."""
    server_log = ServerLog(log)
    spec = document(api or {})

    @web.middleware
    async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return await answer_early(request, _error(404, "not found", path=request.path))
        except web.HTTPMethodNotAllowed as exc:
            allowed = sorted(exc.allowed_methods)
            response = _error(405, "method not allowed", method=request.method,
                              allowed=allowed)
            response.headers["Allow"] = ",".join(allowed)
            return await answer_early(request, response)
        except web.HTTPException:
            raise
        except Exception:
            server_log.bugs.log(logging.ERROR, "bug answering %s %s", request.method,
                                request.path, exc_info=True)
            return _error(500, "internal error (a bug in remedyd; the log has details)")

    @web.middleware
    async def redacted(request: web.Request, handler: Handler) -> web.StreamResponse:
        # The last word on what the API answers: whatever a view, an integration's route
        # or an error message carries, no configured secret or URL password leaves.
        response = await handler(request)
        if (isinstance(response, web.Response) and response.content_type == "application/json"
                and response.text is not None):
            masked = scrub(response.text)
            if masked != response.text:
                response.text = masked
        return response

    app = web.Application(middlewares=[json_errors, redacted])
    app[_SERVER_LOG] = server_log

    async def close_log(app: web.Application) -> None:
        server_log.close()

    app.on_cleanup.append(close_log)

    async def metrics_handler(request: web.Request) -> web.Response:
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        report = daemon.readiness()
        return web.json_response(report, status=200 if report["ready"] else 503)

    async def rules(request: web.Request) -> web.Response:
        return web.json_response({"rules": daemon.rules_view()})

    async def audit(request: web.Request) -> web.Response:
        limit = audit_limit(request)
        if isinstance(limit, web.Response):
            return limit
        return web.json_response({"records": daemon.audit_tail(limit)})

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(spec)

    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/rules", rules)
    app.router.add_get("/api/v1/audit", audit)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_routes(routes)
    return app


async def serve(app: web.Application, host: str, port: int) -> Callable[[], Any]:
    """Start listening; return the coroutine function that stops the server.

    Raises ListenError when the address cannot be bound.
    """
    # No lingering on an unread body: aiohttp logs a body that fails to decode there
    # (corrupt gzip) as an unhandled exception. Endpoints that refuse a body unread
    # drain it themselves, bounded (daemon/http/linger.py); elsewhere the connection
    # closes after the answer.
    runner = web.AppRunner(app, access_log=None, logger=app[_SERVER_LOG], lingering_time=0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(f"cannot listen on {shown}: {_reason(exc)}") from None
    return runner.cleanup


def _reason(exc: OSError) -> str:
    # asyncio's message repeats the address; the errno's own text is what is wrong.
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno not in errno.errorcode:
        return exc.strerror or str(exc)
    return os.strerror(exc.errno)
