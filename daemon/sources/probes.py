"""`[[probes]]`: HTTP(S) and TCP checks every `interval`, turned into `failed` and
`recovered` events when a target goes down (N failures in a row) and comes back.

apscheduler only triggers the checks; whether a target is up is counted by the pure
ProbeState. Each check is a task of its own with its own timeout, so a slow target never
delays another's check. A probe never has two checks running: the settings keep timeout
<= interval, and a check still running when the next is due (timeout == interval, a
busy loop) makes that next one a no-op, not a second request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

# No stubs; [tool.mypy] may come to ignore apscheduler too, hence unused-ignore.
from apscheduler.executors.asyncio import AsyncIOExecutor  # type: ignore[import-untyped,unused-ignore]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped,unused-ignore]

from daemon.clients.probing import HttpProber, check_tcp
from daemon.core.events import Event, JSONValue, Ref
from daemon.engine.probe_state import CheckResult, ProbeState, Transition
from daemon.settings import ProbeSettings, tcp_address
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.source.probe")

SOURCE = "probe"
EXECUTOR = "probes"
# apscheduler logs every run at INFO; the transitions are what an operator needs to read.
_SCHEDULER_LOG = "remedyd.source.probe.scheduler"
for _name in (_SCHEDULER_LOG, f"apscheduler.executors.{EXECUTOR}"):
    logging.getLogger(_name).setLevel(logging.WARNING)


class ProbeSource:
    name = SOURCE

    def __init__(self, probes: Sequence[ProbeSettings], emit: Callable[[Event], object],
                 metrics: Metrics, http: HttpProber,
                 clock: Callable[[], float] = time.time) -> None:
        self.probes = {probe.name: probe for probe in probes}
        self._emit = emit
        self._metrics = metrics
        self._http = http
        self._clock = clock
        self.states = {probe.name: ProbeState(probe.failures, probe.successes)
                       for probe in probes}
        self._running: set[asyncio.Task[Any]] = set()
        self._busy: set[str] = set()  # probes with a check running
        self.synced = False

    def status(self) -> dict[str, Any]:
        return {"synced": self.synced, "probes": {
            name: {"target": probe.target, "type": _type(probe), **self.states[name].view()}
            for name, probe in self.probes.items()}}

    async def run(self) -> None:
        scheduler = AsyncIOScheduler(
            timezone=UTC, logger=logging.getLogger(_SCHEDULER_LOG),
            executors={EXECUTOR: AsyncIOExecutor()})
        now = datetime.now(UTC)
        for probe in self.probes.values():
            # First check at once; a late trigger (a busy loop) runs once, not in a burst.
            scheduler.add_job(self.check, "interval", args=[probe.name], id=probe.name,
                              name=f"probe {probe.name}", seconds=probe.interval,
                              # 2, not 1: an overlap is skipped by check(), quietly;
                              # apscheduler would warn on every one.
                              next_run_time=now, executor=EXECUTOR, max_instances=2,
                              coalesce=True, misfire_grace_time=max(1, round(probe.interval)))
        scheduler.start()
        # Ready as soon as it checks: a target being down is what probes report, not a
        # reason for remedyd to be unready.
        self.synced = True
        log.info("probing %s", ", ".join(f"{p.name} ({p.target} every {p.interval:g}s)"
                                        for p in self.probes.values()))
        try:
            await asyncio.Event().wait()
        finally:
            self.synced = False
            scheduler.shutdown(wait=False)
            for task in list(self._running):
                task.cancel()
            await asyncio.gather(*self._running, return_exceptions=True)

    async def check(self, name: str) -> Transition | None:
        """One check of probe `name`, counted; emits the event a transition calls for.
        Nothing while the previous check of it is still running."""
        probe = self.probes[name]
        if name in self._busy:
            log.debug("probe %s: the previous check is still running; skipped", name)
            return None
        self._busy.add(name)
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            result = await self._check_once(probe)
        finally:
            self._busy.discard(name)
            if task is not None:
                self._running.discard(task)
        return self._count(probe, result)

    async def _check_once(self, probe: ProbeSettings) -> CheckResult:
        try:
            if probe.url is not None:
                return await self._http.check(
                    probe.url, probe.timeout, expect_status=probe.expect_status,
                    expect_body=probe.expect_body, tls_verify=probe.tls_verify)
            host, port = tcp_address(str(probe.tcp))
            return await check_tcp(host, port, probe.timeout)
        except Exception as exc:  # a bug in a check must not stop the counting
            log.exception("probe %s: the check itself failed", probe.name)
            return CheckResult(ok=False, error=f"probe error: {type(exc).__name__}: {exc}",
                               reason="error")

    def _count(self, probe: ProbeSettings, result: CheckResult) -> Transition | None:
        metrics = self._metrics
        metrics.probe_up.labels(probe.name).set(1 if result.ok else 0)
        metrics.probe_duration.labels(probe.name).observe(result.latency_ms / 1000.0)
        metrics.probe_checks.labels(probe.name, result.reason).inc()
        now = self._clock()
        transition = self.states[probe.name].record(result, now)
        if transition is None:
            if not result.ok:
                log.debug("probe %s: %s (%d in a row)", probe.name, result.error,
                          self.states[probe.name].consecutive_failures)
            return None
        if transition.action == "failed":
            log.warning("probe %s (%s) failed %d checks in a row: %s", probe.name,
                        probe.target, transition.failures, transition.error)
        else:
            log.info("probe %s (%s) recovered after %.0fs down", probe.name, probe.target,
                     transition.down_for)
        metrics.events.labels(SOURCE, SOURCE, transition.action).inc()
        self._emit(probe_event(probe, transition, result, now))
        return transition


def _type(probe: ProbeSettings) -> str:
    return "http" if probe.url is not None else "tcp"


def probe_event(probe: ProbeSettings, transition: Transition, result: CheckResult,
                now: float) -> Event:
    """The event of a transition; `result` is the check that caused it."""
    attributes: dict[str, JSONValue] = {
        "target": probe.target, "type": _type(probe), "failures": transition.failures,
        "error": transition.error, "latency_ms": round(result.latency_ms, 3),
        "labels": dict(probe.labels)}
    if probe.url is not None:
        attributes["status"] = result.status
    if transition.action == "recovered":
        attributes["down_for_seconds"] = round(transition.down_for, 3)
    return Event(
        source=SOURCE, kind="probe", action=transition.action,
        subject=Ref(source=SOURCE, kind="probe", name=probe.name),
        id=f"probe:{probe.name}:{transition.action}:{int(now * 1e9)}",
        occurred_at=now, observed_at=now, attributes=attributes,
        resolves=("failed",) if transition.action == "recovered" else ())
