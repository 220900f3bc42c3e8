"""remedyd's webhook endpoints served in-process, as the daemon plugs them (the
integration's routes on build_app), with the engine's bus in plain view; and payloads
shaped as Alertmanager's notify/webhook and API v2 write them."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from daemon.bus import Bus
from daemon.clients.http import HttpClient
from daemon.core.events import Event, Ref
from daemon.http.server import build_app, serve
from daemon.integrations.base import BuildContext
from daemon.integrations.webhooks import WebhooksIntegration
from daemon.settings import Settings, WebhookSettings
from daemon.sources.webhooks import WebhookSource
from daemon.telemetry.metrics import Metrics
from tests.harness import free_port

SECRET = "ci-secret-0123456789abcdef"


class View:
    def readiness(self) -> dict[str, Any]:
        return {"ready": True, "checks": {}}

    def rules_view(self) -> list[dict[str, Any]]:
        return []

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        return []


@dataclass
class Served:
    port: int
    bus: Bus
    metrics: Metrics
    source: WebhookSource
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def events(self) -> list[Event]:
        taken = []
        while (event := self.bus.get_nowait()) is not None:
            taken.append(event)
        return taken

    def fill_bus(self, leave: int = 0) -> None:
        """Fill the bus up to `leave` free slots with filler events."""
        free = self.bus._queue.maxsize - self.bus.qsize() - leave
        for i in range(free):
            self.bus.emit(Event("test", "filler", "x", Ref("test", "filler", str(i)),
                                f"filler-{i}", 0.0, 0.0))

    def drain_fillers(self) -> list[Event]:
        return [e for e in self.events() if e.source != "test"]

    async def post(self, path: str, body: bytes | Any, headers: dict[str, str] | None = None
                   ) -> tuple[int, dict[str, Any], aiohttp.typedefs.LooseHeaders]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with self.session.post(self.url + path, data=data, headers=headers) as answer:
            text = await answer.read()
            parsed = json.loads(text) if text else {}
            return answer.status, parsed, answer.headers

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@asynccontextmanager
async def webhook_server(queue_size: int = 1000, **webhooks: Any) -> AsyncIterator[Served]:
    settings = Settings(webhooks=WebhookSettings(**webhooks))
    metrics = Metrics()
    bus = Bus(metrics, queue_size)
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(HttpClient())
        plugged = WebhooksIntegration(settings).build(
            BuildContext(emit=bus.emit, metrics=metrics, http=http, stack=stack))
        port = free_port()
        stop = await serve(build_app(View(), metrics, plugged.routes), "127.0.0.1", port)
        stack.push_async_callback(stop)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        (source,) = plugged.sources
        assert isinstance(source, WebhookSource)
        yield Served(port, bus, metrics, source, session)
    await cancel_lingering()


async def cancel_lingering() -> None:
    """Connections aiohttp still lingers on after answering early (a 413 or 401 before
    the body), which the test's loop must not leave running."""
    await asyncio.sleep(0)
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
               and not t.done() and "RequestHandler" in repr(t.get_coro())]
    for task in pending:
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*pending, return_exceptions=True)


def rfc3339(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def alert(name: str = "HighErrorRate", status: str = "firing", fingerprint: str = "",
          starts_at: str = "2026-01-02T03:04:05.123456789Z", **labels: str) -> dict[str, Any]:
    labels = {"alertname": name, **labels}
    return {
        "status": status, "labels": labels,
        "annotations": {"summary": f"{name} is up"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else
                  "2026-01-02T03:09:05.5Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
        "fingerprint": fingerprint or hashlib.sha256(
            json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16],
    }


def notification(*alerts: dict[str, Any], truncated: int = 0, **extra: Any) -> dict[str, Any]:
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    return {
        "receiver": "remedyd", "status": status, "alerts": list(alerts),
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]} if alerts else {},
        "commonLabels": {}, "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}', "truncatedAlerts": truncated, **extra,
    }


def signed(body: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256)
    return {"X-Remedyd-Timestamp": stamp, "X-Remedyd-Signature": f"sha256={digest.hexdigest()}"}


async def until(predicate: Callable[[], object], seconds: float, what: str) -> None:
    """Poll, bounded, on the event loop; fail saying what was waited for."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")
