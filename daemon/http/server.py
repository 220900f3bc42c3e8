"""The daemon's HTTP face: metrics, liveness, readiness and a small read-only API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from daemon.telemetry.metrics import Metrics


class DaemonView(Protocol):
    """What the HTTP layer may read from the daemon; it never changes anything."""

    def readiness(self) -> dict[str, Any]: ...
    def rules_view(self) -> list[dict[str, Any]]: ...
    def audit_tail(self, limit: int) -> list[dict[str, Any]]: ...


MAX_AUDIT_LIMIT = 1000


def build_app(daemon: DaemonView, metrics: Metrics) -> web.Application:
    app = web.Application()

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
        raw = request.query.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_AUDIT_LIMIT:
            return web.json_response(
                {"error": f"limit must be an integer from 1 to {MAX_AUDIT_LIMIT}, got {raw!r}"},
                status=400)
        return web.json_response({"records": daemon.audit_tail(int(raw))})

    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/rules", rules)
    app.router.add_get("/api/v1/audit", audit)
    return app


async def serve(app: web.Application, host: str, port: int) -> Callable[[], Any]:
    """Start listening; return the coroutine function that stops the server."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner.cleanup
