"""[[probes]] against real servers on loopback: an HTTP server that answers 200, 503, slowly
or with the wrong body, a TCP listener that is closed and opened again, and HTTPS with a
certificate no system trusts. Checks run on apscheduler's real clock, a few per second."""

from __future__ import annotations

import asyncio
import http.server
import logging
import re
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from daemon.clients.probing import HttpProber
from daemon.core.errors import ConfigError
from daemon.core.events import Event
from daemon.settings import ProbeSettings, load_settings
from daemon.sources.probes import ProbeSource
from daemon.telemetry.metrics import Metrics
from tests.harness import ROOT, DaemonProcess, WebhookSink, wait_for
from tests.kube import tls

FAST = 0.05  # seconds between checks: failures=3 fails within ~0.15 s


@dataclass
class Target:
    """An HTTP server whose answer the test changes: ok, 503, slow, wrong-body, redirect."""

    mode: str = "ok"
    requests: int = 0
    in_flight: int = 0
    most_in_flight: int = 0
    url: str = ""
    runner: web.AppRunner | None = field(default=None, repr=False)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.mode == "slow":
                await asyncio.sleep(2)
            if self.mode == "503":
                return web.Response(status=503, text="unavailable")
            if self.mode == "wrong-body":
                return web.Response(text='{"status": "starting"}')
            if self.mode == "redirect":
                raise web.HTTPFound("http://127.0.0.1:9/login")
            return web.Response(text='{"status": "ok"}')
        finally:
            self.in_flight -= 1


async def serve(target: Target, ssl_context: ssl.SSLContext | None = None) -> Target:
    app = web.Application()
    app.router.add_get("/health", target.handle)
    # A handler is cancelled when its client hangs up, so `in_flight` counts open requests.
    target.runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
    await target.runner.setup()
    site = web.TCPSite(target.runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    target.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}/health"
    return target


@pytest.fixture
async def target() -> AsyncIterator[Target]:
    served = await serve(Target())
    yield served
    assert served.runner is not None
    await served.runner.cleanup()


@dataclass
class Probing:
    source: ProbeSource
    events: list[Event]
    metrics: Metrics

    async def wait_for(self, predicate: Callable[[], Any], what: str,
                       within: float = 5.0) -> Any:
        deadline = time.monotonic() + within
        while not (value := predicate()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {within}s waiting for {what}; "
                                     f"events {[e.action for e in self.events]}, "
                                     f"status {self.source.status()}")
            await asyncio.sleep(0.01)
        return value

    def actions(self, name: str | None = None) -> list[str]:
        return [e.action for e in self.events if name in (None, e.subject.name)]

    def checks(self, name: str) -> int:
        state = self.source.states[name]
        return state.consecutive_failures + state.consecutive_successes

    def sample(self, metric: str, **labels: str) -> float | None:
        value = self.metrics.registry.get_sample_value(metric, labels)
        return value


@pytest.fixture
async def probing() -> AsyncIterator[Callable[..., Any]]:
    """Start a ProbeSource over the given probes; stopped (and its session closed) after."""
    started: list[tuple[asyncio.Task[None], HttpProber]] = []

    async def start(*probes: dict[str, Any]) -> Probing:
        events: list[Event] = []
        metrics = Metrics()
        http = HttpProber()
        settings = [ProbeSettings(**{"interval": FAST, "timeout": FAST, **p}) for p in probes]
        source = ProbeSource(settings, events.append, metrics, http)
        started.append((asyncio.create_task(source.run()), http))
        return Probing(source, events, metrics)

    yield start
    for task, prober in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await prober.close()


async def test_failed_once_after_n_failures_then_recovered(
        target: Target, probing: Callable[..., Any]) -> None:
    target.mode = "503"
    run = await probing({"name": "minio", "url": target.url, "failures": 3,
                         "labels": {"container": "minio", "service": "storage"}})
    await run.wait_for(lambda: run.source.states["minio"].consecutive_failures >= 8,
                       "8 failed checks in a row")
    [failed] = run.events
    assert failed.action == "failed" and failed.subject.name == "minio"
    assert failed.subject.source == "probe" and failed.subject.kind == "probe"
    assert failed.attributes["error"] == "status 503"
    assert failed.attributes["status"] == 503
    assert failed.attributes["failures"] == 3
    assert failed.attributes["target"] == target.url and failed.attributes["type"] == "http"
    assert failed.attributes["labels"] == {"container": "minio", "service": "storage"}
    assert failed.resolves == ()

    target.mode = "ok"
    await run.wait_for(lambda: len(run.events) == 2, "the recovered event")
    recovered = run.events[1]
    assert recovered.action == "recovered" and recovered.resolves == ("failed",)
    assert recovered.attributes["error"] == "status 503"  # what it recovered from
    assert recovered.attributes["status"] == 200
    assert run.source.status()["probes"]["minio"]["state"] == "up"


async def test_recovered_needs_m_successes_in_a_row(
        target: Target, probing: Callable[..., Any]) -> None:
    target.mode = "503"
    run = await probing({"name": "api", "url": target.url, "failures": 1, "successes": 3})
    await run.wait_for(lambda: run.actions() == ["failed"], "failed")
    target.mode = "ok"
    await run.wait_for(lambda: run.source.states["api"].consecutive_successes >= 1,
                       "a first success")
    assert run.source.status()["probes"]["api"]["state"] in ("recovering", "up")
    await run.wait_for(lambda: run.actions() == ["failed", "recovered"], "recovered")
    assert run.source.states["api"].consecutive_successes >= 3


async def test_a_timeout_is_a_failure_and_checks_never_overlap(
        target: Target, probing: Callable[..., Any], caplog: pytest.LogCaptureFixture) -> None:
    target.mode = "slow"
    run = await probing({"name": "slow", "url": target.url, "failures": 2,
                         "interval": 0.2, "timeout": 0.2})
    [failed] = await run.wait_for(lambda: run.events, "failed after two timeouts")
    assert failed.attributes["error"] == "timeout after 0.2s"
    assert failed.attributes["status"] == 0
    assert run.sample("remedyd_probe_checks_total", probe="slow", result="timeout") == 2
    assert target.most_in_flight == 1
    # timeout == interval: the next trigger comes while a check runs; no warning each time.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING
                and "running instances" in r.getMessage()]


async def test_a_check_due_while_the_last_one_runs_sends_no_second_request(
        target: Target) -> None:
    target.mode = "slow"
    http = HttpProber()
    probe = ProbeSettings(name="slow", url=target.url, interval=1, timeout=1)
    source = ProbeSource([probe], [].append, Metrics(), http)
    try:
        first = asyncio.create_task(source.check("slow"))
        await asyncio.sleep(0.1)
        assert await source.check("slow") is None
        await first
    finally:
        await http.close()
    assert target.requests == 1
    assert source.states["slow"].consecutive_failures == 1


async def test_a_slow_target_never_stalls_another_probe(
        target: Target, probing: Callable[..., Any]) -> None:
    slow = await serve(Target(mode="slow"))
    try:
        run = await probing({"name": "slow", "url": slow.url, "interval": 1, "timeout": 1},
                            {"name": "fast", "url": target.url})
        # Ten checks of the fast one while the slow one's first check is still waiting.
        await run.wait_for(lambda: run.checks("fast") >= 10, "ten checks of the fast probe",
                           within=0.9)
        assert run.checks("slow") == 0 and slow.in_flight == 1
    finally:
        assert slow.runner is not None
        await slow.runner.cleanup()


async def test_the_body_must_contain_the_expected_text(
        target: Target, probing: Callable[..., Any]) -> None:
    target.mode = "wrong-body"
    run = await probing({"name": "grafana", "url": target.url, "failures": 1,
                         "expect_body": '"ok"'})
    [failed] = await run.wait_for(lambda: run.events, "failed")
    assert failed.attributes["error"] == "body lacks '\"ok\"'"
    assert run.sample("remedyd_probe_checks_total", probe="grafana", result="body") == 1


async def test_redirects_are_not_followed_and_3xx_is_up_unless_expected_otherwise(
        target: Target, probing: Callable[..., Any]) -> None:
    target.mode = "redirect"  # to a port nothing listens on: following it would fail
    run = await probing({"name": "any", "url": target.url, "failures": 1},
                        {"name": "strict", "url": target.url, "failures": 1,
                         "expect_status": [200]})
    [failed] = await run.wait_for(lambda: run.events, "strict to fail")
    assert failed.subject.name == "strict" and failed.attributes["error"] == "status 302"
    await run.wait_for(lambda: run.checks("any") >= 3, "three checks of the other")
    assert run.source.states["any"].status == "up"


async def test_connection_refused_and_back(probing: Callable[..., Any]) -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    run = await probing({"name": "postgres", "tcp": f"127.0.0.1:{port}", "failures": 2,
                         "labels": {"container": "postgres"}})
    await run.wait_for(lambda: run.source.states["postgres"].status == "up", "up")
    server.close()
    await server.wait_closed()
    [failed] = await run.wait_for(lambda: run.events, "failed")
    assert failed.attributes["error"] == "connection refused"
    assert failed.attributes["type"] == "tcp"
    assert failed.attributes["target"] == f"127.0.0.1:{port}"
    assert "status" not in failed.attributes
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    try:
        await run.wait_for(lambda: run.actions() == ["failed", "recovered"], "recovered")
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Pki:
    if not tls.available():
        pytest.skip("needs the openssl CLI")
    return tls.make_pki(tmp_path_factory.mktemp("pki"))


async def test_tls_verify_refuses_an_untrusted_certificate_and_off_accepts_it(
        pki: tls.Pki, probing: Callable[..., Any]) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    served = await serve(Target(), context)
    try:
        run = await probing({"name": "verified", "url": served.url, "failures": 1},
                            {"name": "unverified", "url": served.url, "failures": 1,
                             "tls_verify": False})
        [failed] = await run.wait_for(lambda: run.events, "the verified probe to fail")
        assert failed.subject.name == "verified"
        assert str(failed.attributes["error"]).startswith("TLS error: ")
        assert "certificate" in str(failed.attributes["error"])
        await run.wait_for(lambda: run.checks("unverified") >= 3, "three checks")
        assert run.source.states["unverified"].status == "up"
        assert run.sample("remedyd_probe_checks_total", probe="verified", result="tls")
    finally:
        assert served.runner is not None
        await served.runner.cleanup()


async def test_metrics_and_status_show_each_probe(
        target: Target, probing: Callable[..., Any]) -> None:
    run = await probing({"name": "prometheus", "url": target.url},
                        {"name": "redis", "tcp": "127.0.0.1:9", "failures": 1})
    await run.wait_for(lambda: run.actions() == ["failed"], "redis to fail")
    await run.wait_for(lambda: run.checks("prometheus") >= 2, "two prometheus checks")
    assert run.sample("remedyd_probe_up", probe="prometheus") == 1
    assert run.sample("remedyd_probe_up", probe="redis") == 0
    assert run.sample("remedyd_probe_checks_total", probe="redis", result="refused")
    assert (run.sample("remedyd_probe_duration_seconds_count", probe="prometheus") or 0) >= 2
    text = generate_latest(run.metrics.registry).decode()
    assert 'remedyd_probe_checks_total{probe="prometheus",result="ok"}' in text
    status = run.source.status()
    assert status["synced"] is True
    assert status["probes"]["redis"]["state"] == "down"
    assert status["probes"]["redis"]["last_error"] == "connection refused"
    assert status["probes"]["redis"]["target"] == "127.0.0.1:9"
    assert status["probes"]["prometheus"]["state"] == "up"


# -- configuration -------------------------------------------------------------------

@pytest.mark.parametrize(("toml", "message"), [
    ('name = "a"\nurl = "ftp://minio:9000/"', "probes.1.url: expected an http:// or https://"),
    ('name = "a"\ntcp = "postgres"', "probes.1.tcp: expected HOST:PORT"),
    ('name = "a"\ntcp = "postgres:99999"', "probes.1.tcp: expected HOST:PORT"),
    ('name = "a"\n', "probes.1: give exactly one of `url` (HTTP) and `tcp`"),
    ('name = "a"\nurl = "http://x/"\ntimeout = "30s"', "probes.1: timeout (30s) must not exceed"),
    ('name = "a"\ntcp = "db:5432"\nexpect_status = [200]', "probes.1: expect_status and"),
    ('name = "ok"\nurl = "http://x/"', "probes: duplicate name 'ok': probes[0] and probes[1]"),
])
def test_a_bad_probe_is_refused_naming_its_key(tmp_path: Path, toml: str,
                                               message: str) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text(f'[[probes]]\nname = "ok"\ntcp = "[::1]:6379"\n\n[[probes]]\n{toml}\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(config)
    assert f"{config}: {message}" in str(raised.value)


# -- a real remedyd process with the bundled rules ------------------------------------

class ThreadedTarget:
    """An HTTP health endpoint in a thread (the test below blocks while remedyd runs)."""

    def __init__(self) -> None:
        self.status = 200
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(target.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/minio/health/live"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_failing_probe_is_notified_by_the_bundled_rules_and_so_is_its_recovery(
        tmp_path: Path) -> None:
    target = ThreadedTarget()
    with WebhookSink() as sink:
        daemon = DaemonProcess(tmp_path, (ROOT / "rules" / "probes.yaml").read_text(),
                               webhook_url=sink.url,
                               extra={"kubernetes": {"enabled": False}})
        with daemon.config.open("a") as config:
            config.write(f'\n[[probes]]\nname = "minio"\nurl = "{target.url}"\n'
                         'interval = "100ms"\ntimeout = "100ms"\nfailures = 3\n'
                         'labels = {container = "minio"}\n')
        daemon.start()
        try:
            checks = daemon.readiness()["checks"]["source:probe"]
            assert checks["ready"] is True and "minio" in checks["probes"]
            wait_for(lambda: daemon.metric("remedyd_probe_checks_total", probe="minio",
                                           result="ok") >= 2, 10, "two good checks")
            assert sink.bodies == []
            target.status = 503
            wait_for(lambda: sink.bodies, 10, "the failure to be notified")
            [failed] = sink.bodies
            assert failed["rule"] == "probe-notify-failed"
            assert failed["message"] == "a service failed its health probe"
            assert failed["event"]["action"] == "failed"
            assert failed["event"]["attributes"]["error"] == "status 503"
            assert failed["event"]["attributes"]["labels"] == {"container": "minio"}
            assert failed["target"]["name"] == "minio"
            state = daemon.readiness()["checks"]["source:probe"]["probes"]["minio"]
            assert state["state"] == "down" and state["last_error"] == "status 503"
            # Still failing: no second notification.
            wait_for(lambda: daemon.metric("remedyd_probe_checks_total", probe="minio",
                                           result="status") >= 6, 10, "six failed checks")
            target.status = 200
            wait_for(lambda: len(sink.bodies) == 2, 10, "the recovery to be notified")
            assert sink.bodies[1]["rule"] == "probe-notify-recovered"
            assert sink.bodies[1]["event"]["action"] == "recovered"
            assert [r["rule"] for r in daemon.audit("decision")] == [
                "probe-notify-failed", "probe-notify-recovered"]
        finally:
            assert daemon.stop() == 0
            target.close()
    assert daemon.verify_audit().returncode == 0


def test_the_example_configuration_documents_probes_that_load(tmp_path: Path) -> None:
    # Commented out there (the bundled config starts with none): uncommented, they load.
    lines = (ROOT / "config.example.toml").read_text().splitlines()
    setting = re.compile(r"^# (\[\[probes\]\]$|[a-z_]+ = )")
    tables = [line.removeprefix("# ") for line in lines[lines.index("# [[probes]]"):]
              if setting.match(line)]
    config = tmp_path / "remedyd.toml"
    config.write_text("\n".join(tables) + "\n")
    probes = {probe.name: probe.target for probe in load_settings(config).probes}
    assert probes == {
        "minio": "http://127.0.0.1:9000/minio/health/live",
        "prometheus": "http://127.0.0.1:9090/-/ready",
        "grafana": "http://127.0.0.1:3000/api/health",
        "prefect": "http://127.0.0.1:4200/api/health",
        "postgres": "127.0.0.1:5432", "redis": "127.0.0.1:6379",
        "minio-console": "https://127.0.0.1:9001/"}
    assert load_settings(ROOT / "config.example.toml").probes == []
