"""A small HTTP service for the KPI tests: it serves the conventional request metrics of
simulated traffic, with a knob per `service` label for its error ratio and latency.

`http_requests_total{service, code}` and the `http_request_duration_seconds{service}`
histogram grow as `rps` requests a second would make them (ticks of 0.1 s), on
127.0.0.1, in a thread of its own (aiohttp on its own loop), so Prometheus scrapes it
while a test drives remedyd.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TICK = 0.1


@dataclass
class Traffic:
    error_ratio: float = 0.0
    latency: float = 0.05
    # Fractional requests carried between ticks, so low rates still add up.
    carry: float = 0.0


class KpiService:
    def __init__(self, port: int = 0, rps: float = 100.0) -> None:
        self.port = port
        self.rps = rps
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "Requests served.", ["service", "code"],
                                registry=self.registry)
        self.duration = Histogram("http_request_duration_seconds", "Request latency.",
                                  ["service"], registry=self.registry,
                                  buckets=(0.05, 0.1, 0.25, 0.3, 0.5, 1.0, 2.5))
        # A value a test sets directly, for KPIs that must follow a knob at once (no rate()
        # window smoothing it).
        self.level = Gauge("kpi_test_level", "A value set by the test.", ["service"],
                           registry=self.registry)
        self._traffic: dict[str, Traffic] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        # When each knob was last turned (time.time()), for the end-to-end benchmark.
        self.changed_at: dict[str, float] = {}

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, service: str, error_ratio: float = 0.0, latency: float = 0.05) -> None:
        """Serve `service`'s traffic with this error ratio (5xx share) and latency."""
        with self._lock:
            traffic = self._traffic.setdefault(service, Traffic())
            traffic.error_ratio, traffic.latency = error_ratio, latency
            self.changed_at[service] = time.time()

    def set_level(self, service: str, value: float) -> None:
        with self._lock:
            self.level.labels(service).set(value)

    def remove(self, service: str) -> None:
        """`service` stops reporting: its series vanish from the next scrape."""
        with self._lock:
            self._traffic.pop(service, None)
            for code in ("200", "500"):
                with contextlib.suppress(KeyError):
                    self.requests.remove(service, code)
            with contextlib.suppress(KeyError):
                self.duration.remove(service)

    def _tick(self) -> None:
        with self._lock:
            for service, traffic in self._traffic.items():
                due = self.rps * TICK + traffic.carry
                count = int(due)
                traffic.carry = due - count
                errors = round(count * traffic.error_ratio)
                self.requests.labels(service, "500").inc(errors)
                self.requests.labels(service, "200").inc(count - errors)
                for _ in range(count):
                    self.duration.labels(service).observe(traffic.latency)

    async def _metrics(self, request: web.Request) -> web.Response:
        with self._lock:
            body = generate_latest(self.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            while not self._stop.is_set():
                self._tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK)
        finally:
            await runner.cleanup()

    def start(self) -> KpiService:
        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._loop.close()

        self._thread = threading.Thread(target=main, name="kpi-service", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the KPI test service did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
