"""The daemon audits every change of a rule's state (kind "state") under the episode's
incident, hands it to the state hooks, and counts it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from daemon.app import Daemon
from daemon.core.events import Event, Ref
from daemon.engine.changes import StateChange
from daemon.settings import Settings
from tests.harness import free_port

RULES = """rules:
  - name: on-alert
    source: webhook
    when: event.kind == "alert" && event.action == "firing"
    actions: [notify.webhook: {url: "http://127.0.0.1:9/hook"}]
"""


def _alert(action: str, resolves: tuple[str, ...] = ()) -> Event:
    return Event("webhook", "alert", action, Ref("webhook", "alert", "HighErrorRate", id="fp"),
                 f"fp:{action}", 0.0, 0.0, {"labels": {"alertname": "HighErrorRate"}},
                 resolves=resolves)


def _daemon(tmp_path: Path, rules_text: str) -> Daemon:
    """An in-process daemon on these rules, dry-run, with Docker off."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(rules_text)
    return Daemon(Settings(server={"listen": f"127.0.0.1:{free_port()}"},
                           docker={"enabled": False}, safety={"dry_run": True},
                           audit={"path": str(tmp_path / "audit.jsonl")},
                           rules={"paths": [str(rules)]}))


async def _records(daemon: Daemon, kind: str, count: int) -> list[dict[str, Any]]:
    for _ in range(250):
        found = [r for r in daemon.audit_tail(1000) if r["kind"] == kind]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} {kind!r} records: {daemon.audit_tail(1000)}")


async def test_state_changes_are_audited_and_handed_to_the_hooks(tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, RULES)
    heard: list[StateChange] = []
    daemon.state_hooks.append(heard.append)
    daemon.state_hooks.insert(0, lambda change: 1 / 0)  # a broken hook harms nothing
    await daemon.start()
    try:
        daemon.bus.emit(_alert("firing"))
        daemon.bus.emit(_alert("resolved", resolves=("firing",)))
        firing, resolved = await _records(daemon, "state", 2)
        [decision] = await _records(daemon, "decision", 1)
    finally:
        daemon.request_stop()
        await daemon.shutdown()
    assert (firing["change"], resolved["change"]) == ("firing", "resolved")
    assert firing["rule"] == "on-alert" and firing["subject"]["id"] == "fp"
    assert firing["incident"] == resolved["incident"] == decision["incident"]
    assert resolved["event"]["action"] == "resolved"
    assert [c.change for c in heard] == ["firing", "resolved"]
    assert daemon.metrics.registry.get_sample_value(
        "remedyd_rule_state_changes_total", {"rule": "on-alert", "change": "resolved"}) == 1


KPI_RULES = """rules:
  - name: errors
    source: kpi
    query: 'sum(rate(http_requests_total{code=~"5.."}[1m]))'
    when: event.attributes.value > 0.01
    actions: [notify.webhook: {url: "http://127.0.0.1:9/hook"}]
"""


def _sample(value: float, at: float) -> Event:
    return Event("kpi", "series", "sample", Ref("kpi", "series", "errors{}", id="{}"),
                 f"errors@{at}", at, at, {"value": value, "labels": {}}, for_rule="errors")


class _Closed:
    """Refuses for now, as a silence does, until opened."""

    name = "silence"
    transient = True
    open = False

    async def check(self, ctx: Any) -> Any:
        from daemon.actions.guards import GuardResult
        return GuardResult(self.name, "ok" if self.open else "refuse",
                           "" if self.open else "silenced")

    def commit(self, spend: Any) -> None:
        pass


async def test_a_kpi_breach_refused_for_now_is_acted_on_once_the_refusal_ends(
        tmp_path: Path) -> None:
    daemon = _daemon(tmp_path, KPI_RULES)
    gate = _Closed()
    daemon.executor.insert_guard(gate, before="dry_run")  # type: ignore[arg-type]
    await daemon.start()
    try:
        daemon.bus.emit(_sample(0.5, 0.0))
        [refused] = await _records(daemon, "decision", 1)
        gate.open = True  # the silence expired; the breach goes on
        daemon.bus.emit(_sample(0.5, 1.0))
        _, again = await _records(daemon, "decision", 2)
    finally:
        daemon.request_stop()
        await daemon.shutdown()
    assert refused["suppressed_by"] == "silence"
    assert again["incident"] == refused["incident"] and again.get("suppressed_by") == "dry_run"
