"""Root tasks under supervision: a crash is logged, counted, restarted, and too many stop
the daemon with a non-zero exit instead of leaving it up and deaf."""

from __future__ import annotations

import asyncio
import itertools
import logging
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.settings import Settings
from daemon.supervisor import Supervisor
from daemon.telemetry.metrics import Metrics
from tests.harness import free_port
from tests.rulekit import docker_event


@pytest.mark.looptime
async def test_a_crashing_task_is_restarted_then_declared_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    fatal: list[str] = []
    runs: list[float] = []
    loop = asyncio.get_running_loop()

    async def broken() -> None:
        runs.append(loop.time())
        raise RuntimeError("engine bug")

    supervisor = Supervisor(metrics, fatal.append, max_crashes=3, window=600,
                            clock=loop.time)
    with caplog.at_level(logging.ERROR, "remedyd.supervisor"):
        supervisor.spawn("engine", broken)
        for _ in range(200):
            if fatal:
                break
            await asyncio.sleep(1)
    assert fatal == ["engine"]
    assert len(runs) == 4  # three restarts with backoff, then the fourth crash is fatal
    assert all(b > a for a, b in itertools.pairwise(runs))
    assert metrics.registry.get_sample_value("remedyd_task_crashes_total",
                                             {"task": "engine"}) == 4
    assert "engine bug" in caplog.text and "Traceback" in caplog.text
    status = supervisor.status()["engine"]
    assert status["running"] is False and "engine bug" in status["last_error"]
    await supervisor.stop()


async def test_a_crashed_engine_makes_readyz_503_until_it_runs_again(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - name: oom\n    source: docker\n    when: event.action == "
                     '"oom"\n    actions: [notify.webhook: {url: "http://127.0.0.1:9/x"}]\n')
    settings = Settings(server={"listen": f"127.0.0.1:{free_port()}"},
                        docker={"enabled": False}, audit={"path": str(tmp_path / "a.jsonl")},
                        rules={"paths": [str(rules)]})
    daemon = Daemon(settings)
    await daemon.start()
    try:
        assert daemon.readiness()["ready"], daemon.readiness()
        original = daemon.evaluator.evaluate

        def explode(*args: object) -> list[object]:
            raise RuntimeError("evaluation bug")

        daemon.evaluator.evaluate = explode  # type: ignore[method-assign,assignment]
        daemon.bus.emit(docker_event("oom"))
        for _ in range(100):
            if not daemon.readiness()["ready"]:
                break
            await asyncio.sleep(0.02)
        report = daemon.readiness()
        assert report["ready"] is False
        assert report["checks"]["task:engine"]["crashes"] == 1
        daemon.evaluator.evaluate = original  # type: ignore[method-assign]
        for _ in range(300):
            if daemon.readiness()["ready"]:
                break
            await asyncio.sleep(0.02)
        assert daemon.readiness()["ready"], daemon.readiness()
    finally:
        daemon.request_stop()
        await daemon.shutdown()
