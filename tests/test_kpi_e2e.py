"""remedyd as a process holding a service to a KPI, with a real Prometheus scraping the
service and a real Docker container as what the rule repairs."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ContainerFactory, KpiStack, docker_inspect
from tests.harness import DaemonProcess, WebhookSink, wait_for

THRESHOLD = 0.05


def ratio_query(service: str) -> str:
    return (f'sum by (service) (rate(http_requests_total{{service="{service}",code=~"5.."}}[3s]))'
            f' / sum by (service) (rate(http_requests_total{{service="{service}"}}[3s]))')


def error_ratio_rule(service: str, **extra: str) -> str:
    lines = "".join(f"\n    {key}: {value}" for key, value in extra.items())
    return f"""
rules:
  - name: error-ratio
    source: kpi
    query: '{ratio_query(service)}'
    interval: 1s
    for: 2s
    cooldown: 10m
    when: event.attributes.value > {THRESHOLD}{lines}
    target:
      kind: docker/container
      name: "{{{{ $labels.service }}}}"
    actions:
      - docker.restart: {{timeout: 1s}}
        verify: {{within: 30s}}
"""


@pytest.fixture
def daemons(tmp_path: Path) -> Any:
    started: list[DaemonProcess] = []

    def start(rules: str, prometheus: str, docker_url: str | None = None) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"d{len(started)}", rules, docker_url=docker_url,
                               extra={"prometheus": {"url": prometheus, "interval": "1s",
                                                     "timeout": "1s"}})
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


def kpi_states(daemon: DaemonProcess, rule: str) -> list[str]:
    return [r["state"] for r in daemon.audit("kpi") if r["rule"] == rule]


def restarts(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return [{**step, "target": r["target"]} for r in daemon.audit("outcome")
            for step in r["steps"] if step["action"] == "docker.restart"]


def test_a_breach_lasting_for_restarts_the_named_container_once(
        kpi_stack: KpiStack, containers: ContainerFactory, docker_host: str,
        daemons: Any) -> None:
    name = f"kpi-api-{os.getpid()}"
    cid = containers("--name", name)
    started_at = docker_inspect(docker_host, cid)["State"]["StartedAt"]
    kpi_stack.service.set(name, error_ratio=0.0)
    wait_for(lambda: kpi_stack.query(ratio_query(name)), 20, "the service's ratio in Prometheus")
    daemon = daemons(error_ratio_rule(name), kpi_stack.url, docker_host)
    wait_for(lambda: kpi_states(daemon, "error-ratio") == ["ok"], 10, "the first answer")

    kpi_stack.service.set(name, error_ratio=0.5)
    done = wait_for(lambda: restarts(daemon), 20, f"docker.restart ({daemon.log()[-3000:]})")
    assert done[0]["outcome"] == "success", done
    assert done[0]["target"]["name"] == name and done[0]["target"]["source"] == "docker"
    assert docker_inspect(docker_host, cid)["State"]["StartedAt"] != started_at
    (acted,) = [d for d in daemon.audit("decision") if d["decision"] == "act"]
    assert acted["event"]["subject"]["id"] == f'{{service="{name}"}}'
    assert acted["event"]["attributes"]["value"] > THRESHOLD
    assert any(g["guard"] == "recheck" and g["verdict"] == "ok" for g in acted["guards"])

    kpi_stack.service.set(name, error_ratio=0.0)
    wait_for(lambda: any(v and float(v[0]["value"][1]) < THRESHOLD
                         for v in [kpi_stack.query(ratio_query(name))]), 20, "the recovery")
    wait_for(lambda: any(r.get("change") == "resolved" for r in daemon.audit("state")),
             20, "the state to resolve")
    (verified,) = wait_for(lambda: daemon.audit("verification"), 10, "the verification")
    assert verified["outcome"] == "recovered" and verified["incident"] == acted["incident"]
    # Once, and no more while it lasted or after.
    assert len([s for s in restarts(daemon) if s["outcome"] == "success"]) == 1
    assert kpi_states(daemon, "error-ratio") == ["ok"]


def test_a_breach_the_restart_does_not_clear_escalates_and_ends_in_notify(
        kpi_stack: KpiStack, containers: ContainerFactory, docker_host: str,
        daemons: Any) -> None:
    name = f"kpi-stuck-{os.getpid()}"
    containers("--name", name)
    kpi_stack.service.set(name, error_ratio=0.0)
    wait_for(lambda: kpi_stack.query(ratio_query(name)), 20, "the service's ratio in Prometheus")
    with WebhookSink() as sink:
        rules = error_ratio_rule(name).replace("verify: {within: 30s}", "verify: {within: 3s}")
        rules += f"""    escalate:
      - notify.webhook: {{url: "{sink.url}", message: still failing after a restart}}
"""
        daemon = daemons(rules, kpi_stack.url, docker_host)
        wait_for(lambda: kpi_states(daemon, "error-ratio") == ["ok"], 10, "the first answer")
        kpi_stack.service.set(name, error_ratio=0.5)  # and it stays broken
        wait_for(lambda: sink.bodies, 30, f"the notification ({daemon.log()[-3000:]})")
        (acted, *_) = [d for d in daemon.audit("decision") if d["decision"] == "act"]
        story = [(r["kind"], r.get("outcome") or r.get("decision") or r.get("change"))
                 for r in daemon.audit() if r.get("incident") == acted["incident"]]
        assert ("verification", "not_recovered") in story, story
        assert sink.bodies[0]["incident"] == acted["incident"]
        assert sink.bodies[0]["message"] == "still failing after a restart"
        assert len([s for s in restarts(daemon) if s["outcome"] == "success"]) == 1
        kpi_stack.service.set(name, error_ratio=0.0)


def test_prometheus_down_invents_nothing_and_polling_resumes(
        kpi_stack: KpiStack, daemons: Any) -> None:
    kpi_stack.service.set("steady", error_ratio=0.0)
    rules = error_ratio_rule("steady").replace(
        "docker.restart: {timeout: 1s}", "notify.webhook: {url: 'http://127.0.0.1:9/'}")
    rules += """
  - name: broken
    source: kpi
    query: 'sum(rate('
    interval: 1s
    when: event.attributes.value > 1
    actions: [notify.webhook]
  - name: nothing
    source: kpi
    query: 'up{job="no-such-job"}'
    interval: 1s
    when: event.attributes.value > 1
    actions: [notify.webhook]
"""
    wait_for(lambda: kpi_stack.query(ratio_query("steady")), 20, "the ratio in Prometheus")
    daemon = daemons(rules, kpi_stack.url)
    wait_for(lambda: kpi_states(daemon, "error-ratio") == ["ok"], 10, "the first answer")
    wait_for(lambda: kpi_states(daemon, "broken") == ["error"], 10, "the query error")
    (broken,) = [r for r in daemon.audit("kpi") if r["rule"] == "broken"]
    assert "400 bad_data" in broken["error"] and "parse error" in broken["error"]
    wait_for(lambda: kpi_states(daemon, "nothing") == ["empty"], 10, "the empty answer")

    kpi_stack.stop_prometheus()
    try:
        wait_for(lambda: kpi_states(daemon, "error-ratio") == ["ok", "unreachable"], 10,
                 "the outage to be audited")
        report = daemon.readiness()
        assert daemon.ready(), report
        check = report["checks"]["source:kpi"]
        assert check["rules"]["error-ratio"]["state"] == "unreachable"
        assert "error-ratio" in check["failing"]
        assert daemon.metric("remedyd_kpi_query_state", rule="error-ratio",
                             state="unreachable") == 1
        polls = daemon.metric("remedyd_kpi_queries_total", rule="error-ratio",
                              result="unreachable")
        wait_for(lambda: daemon.metric("remedyd_kpi_queries_total", rule="error-ratio",
                                       result="unreachable") >= polls + 2, 10, "more polls")
        assert daemon.audit("decision") == []
    finally:
        kpi_stack.start_prometheus()
    wait_for(lambda: kpi_states(daemon, "error-ratio")[-1:] == ["ok"], 30,
             f"polling to resume ({kpi_states(daemon, 'error-ratio')})")
    # Nor after it: the gap in the data a restarted Prometheus has is missing data, which
    # `on_missing: hold` (the default) holds.
    invented = [d for d in daemon.audit("decision") if d["rule"] == "error-ratio"]
    assert invented == [], json.dumps(invented, indent=1)


def test_a_value_oscillating_around_the_threshold_flaps_no_action_one_notification(
        kpi_stack: KpiStack, daemons: Any) -> None:
    name = f"kpi-flappy-{os.getpid()}"
    query = f'kpi_test_level{{service="{name}"}}'
    kpi_stack.service.set_level(name, 0.0)
    wait_for(lambda: kpi_stack.query(query), 20, "the level in Prometheus")
    stop = threading.Event()

    def oscillate() -> None:
        for turn in range(80):  # bounded: at most two minutes
            kpi_stack.service.set_level(name, 1.0 if turn % 2 == 0 else 0.0)
            if stop.wait(1.5):
                return

    with WebhookSink() as repairs, WebhookSink() as pages:
        rules = f"""
rules:
  - name: level
    source: kpi
    query: '{query}'
    interval: 1s
    for: 5s
    when: event.attributes.value > 0.5
    flap: {{changes: 4, within: 1m, notify: [notify.webhook: {{url: "{pages.url}"}}]}}
    actions:
      - notify.webhook: {{url: "{repairs.url}"}}
"""
        daemon = daemons(rules, kpi_stack.url)
        wait_for(lambda: kpi_states(daemon, "level") == ["ok"], 10, "the first answer")
        driver = threading.Thread(target=oscillate, daemon=True)
        driver.start()
        try:
            wait_for(lambda: pages.bodies, 60, "the flap notification")
            # Bounded: six more answers of the still-oscillating series.
            polls = daemon.metric("remedyd_kpi_queries_total", rule="level")
            wait_for(lambda: daemon.metric("remedyd_kpi_queries_total", rule="level")
                     >= polls + 6, 30, "six more answers")
        finally:
            stop.set()
            driver.join(5)
        changes = [r["change"] for r in daemon.audit("state")]
        assert "flapping" in changes and "firing" not in changes, changes
        assert len(pages.bodies) == 1 and repairs.bodies == []
        acted = [d for d in daemon.audit("decision") if d["decision"] == "act"]
        assert [a["actions"][0]["params"]["url"] for a in acted] == [pages.url]
