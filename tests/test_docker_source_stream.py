"""The Docker source's event stream: a torn or foreign line is a reconnect naming the peer,
never a crash; the stream is closed as soon as the source stops."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from daemon.aio import Backoff
from daemon.clients.docker import DockerClient
from daemon.core.events import Event
from daemon.sources.docker import DockerSource
from daemon.telemetry.metrics import Metrics

START = {"Type": "container", "Action": "start", "timeNano": 1_796_000_000_000_000_001,
         "Actor": {"ID": "c0ffee", "Attributes": {"name": "web", "image": "busybox"}}}


class FakeEngine:
    """Just enough of the engine's API on a unix socket, its event stream scripted per test."""

    def __init__(self, path: Path, stream: list[bytes]) -> None:
        self.path = path
        self.stream = stream
        self.event_requests = 0
        self.closing = asyncio.Event()
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeEngine:
        app = web.Application()
        app.router.add_get("/version", self._json({"ApiVersion": "1.41"}))
        app.router.add_get("/v1.41/info", self._json({"SystemTime": "2026-12-01T10:00:00Z"}))
        app.router.add_get("/v1.41/containers/json", self._json([]))
        app.router.add_get("/v1.41/events", self._events)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.UnixSite(self.runner, str(self.path)).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        self.closing.set()
        await self.runner.cleanup()

    @staticmethod
    def _json(body: object) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response(body)
        return handler

    async def _events(self, request: web.Request) -> web.StreamResponse:
        self.event_requests += 1
        response = web.StreamResponse()
        await response.prepare(request)
        for chunk in self.stream:
            await response.write(chunk)
        # A following stream stays open, unless the connection drops mid-event.
        if "until" not in request.query and self.stream[-1].endswith(b"\n"):
            await self.closing.wait()
        return response


@pytest.fixture
async def source_on(tmp_path: Path) -> AsyncIterator[object]:
    clients: list[DockerClient] = []

    def make(engine: FakeEngine, emitted: list[Event]) -> DockerSource:
        client = DockerClient(f"unix://{engine.path}")
        clients.append(client)
        return DockerSource(client, emitted.append, Metrics(), reconcile_interval=3600,
                            backoff=Backoff(0.05, 0.05, rng=lambda: 1.0))

    yield make
    for client in clients:
        await client.close()


async def run_until(source: DockerSource, done: object) -> None:
    task = asyncio.create_task(source.run())
    try:
        async with asyncio.timeout(5):
            while not done():  # type: ignore[operator]
                assert not task.done(), task
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("line", [b"42\n", b'["not", "an", "event"]\n',
                                  b'{"Type": "container", "Act'],
                         ids=["number", "list", "torn"])
async def test_a_bad_event_line_is_a_reconnect_naming_the_peer(
        tmp_path: Path, source_on: object, line: bytes, caplog: pytest.LogCaptureFixture) -> None:
    emitted: list[Event] = []
    stream = [json.dumps(START).encode() + b"\n", line]
    async with FakeEngine(tmp_path / "engine.sock", stream) as engine:
        source = source_on(engine, emitted)  # type: ignore[operator]
        with caplog.at_level(logging.WARNING, "remedyd.source.docker"):
            await run_until(source, lambda: engine.event_requests >= 3)
    assert [e.action for e in emitted] == ["start"]  # once: the replayed boundary is dropped
    lost = [r.getMessage() for r in caplog.records if "event stream lost" in r.getMessage()]
    assert lost and str(engine.path) in lost[0]


async def test_stopping_the_source_closes_the_event_stream_at_once(
        tmp_path: Path, source_on: object) -> None:
    emitted: list[Event] = []
    stream = [json.dumps(START).encode() + b"\n"]
    async with FakeEngine(tmp_path / "engine.sock", stream) as engine:
        source = source_on(engine, emitted)  # type: ignore[operator]
        await run_until(source, lambda: emitted)
        # No reader task or request outlives the cancelled source (the autouse fixture
        # fails the test on a task left running).
        await asyncio.sleep(0)
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert not {"docker-events", "docker-events-reader"} & names
