"""remedyd as a process against a real Docker engine: what an operator would see."""

from __future__ import annotations

import http.client
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ContainerFactory, DockerdControl, docker_cli, docker_inspect
from tests.harness import DaemonProcess, SocketProxy, WebhookSink, wait_for

HEALTH_FAILS = ("--health-cmd", "/bin/false", "--health-interval", "1s", "--health-retries", "1")
# Unhealthy while /tmp/sick exists inside the container.
HEALTH_FILE = ("--health-cmd", "test ! -f /tmp/sick", "--health-interval", "1s",
               "--health-retries", "1")


def restart_rule(cooldown: str = "0s", budget_max: int = 10, escalate: bool = False,
                 timeout: str = "1s") -> str:
    then = "\n      then:\n        - notify.webhook: {message: budget spent}" if escalate else ""
    return f"""
rules:
  - name: restart-unhealthy
    description: restart a container whose health check fails
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    cooldown: {cooldown}
    budget:
      max: {budget_max}
      per: 1h{then}
    actions:
      - docker.restart: {{timeout: {timeout}}}
"""


def records_for(daemon: DaemonProcess, cid: str, kind: str) -> list[dict[str, Any]]:
    return [r for r in daemon.audit(kind) if r["target"]["id"] == cid]


def steps(daemon: DaemonProcess, cid: str, action: str) -> list[dict[str, Any]]:
    """The steps of `action` in the target's outcome records, each with its incident."""
    return [{**step, "incident": r["incident"], "seq": r["seq"]}
            for r in records_for(daemon, cid, "outcome") for step in r["steps"]
            if step["action"] == action]


def successful_restarts(daemon: DaemonProcess, cid: str) -> list[dict[str, Any]]:
    return [s for s in steps(daemon, cid, "docker.restart") if s["outcome"] == "success"]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Any:
    started: list[DaemonProcess] = []

    def make(rules: str, **kwargs: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"d{len(started)}", rules, **kwargs)
        started.append(daemon)
        return daemon

    yield make
    for daemon in started:
        daemon.stop()


def test_unhealthy_container_is_restarted_and_audited(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=docker_host).start()
    cid = containers(*HEALTH_FAILS)
    before = docker_inspect(docker_host, cid)["State"]["StartedAt"]

    wait_for(lambda: successful_restarts(daemon, cid), 30, "a successful restart outcome")

    assert docker_inspect(docker_host, cid)["State"]["StartedAt"] != before
    decision = records_for(daemon, cid, "decision")[0]
    assert decision["decision"] == "act"
    assert decision["rule"] == "restart-unhealthy"
    assert decision["event"]["attributes"]["health"] == "unhealthy"
    outcome = successful_restarts(daemon, cid)[0]
    assert outcome["incident"] == decision["incident"]
    assert outcome["verified"] is True
    # Intent is on disk before the outcome.
    assert decision["seq"] < outcome["seq"]
    assert daemon.metric("remedyd_actions_total", rule="restart-unhealthy",
                         action="docker.restart", outcome="success") >= 1
    assert daemon.metric("remedyd_events_total", source="docker", action="health_status") >= 1
    assert daemon.metric("remedyd_event_to_decision_seconds_count") >= 1
    assert daemon.verify_audit().returncode == 0


def test_container_already_unhealthy_at_start_is_healed(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    cid = containers(*HEALTH_FAILS)
    wait_for(lambda: docker_inspect(docker_host, cid)["State"]["Health"]["Status"] == "unhealthy",
             20, "the container to turn unhealthy before remedyd starts")
    daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=docker_host).start()
    wait_for(lambda: successful_restarts(daemon, cid), 30, "the listing at start to heal it")
    assert records_for(daemon, cid, "decision")[0]["event"]["synthetic"] is True


def test_dry_run_audits_decisions_and_touches_nothing(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    daemon = daemon_factory(restart_rule(), docker_url=docker_host, args=("--dry-run",)).start()
    cid = containers(*HEALTH_FAILS)
    before = docker_inspect(docker_host, cid)["State"]["StartedAt"]

    decisions = wait_for(lambda: records_for(daemon, cid, "decision"), 30, "a dry-run decision")

    assert decisions[0]["decision"] == "suppressed"
    assert decisions[0]["suppressed_by"] == "dry_run"
    assert decisions[0]["dry_run"] is True
    time.sleep(2)  # a restart, had one been sent, would have shown by now
    assert docker_inspect(docker_host, cid)["State"]["StartedAt"] == before
    assert records_for(daemon, cid, "outcome") == []
    assert daemon.metric("remedyd_decisions_suppressed_total", guard="dry_run") >= 1


def test_flapping_container_stays_within_budget_and_escalates_once(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    with WebhookSink() as sink:
        # Every unhealthy report a decision of its own (no coalescing into the first
        # incident), so the budget is what holds the restarts at three: eight decisions
        # come in about 16 s, not the 40 s or more five-second windows took.
        daemon = daemon_factory(restart_rule(cooldown="2s", budget_max=3, escalate=True),
                                docker_url=docker_host, webhook_url=sink.url,
                                extra={"safety": {"coalesce_window": "0s"}}).start()
        # Flips between healthy and unhealthy every second, restart or not.
        cid = containers("--health-cmd", 'test $(( $(date +%s) % 2 )) -eq 0',
                         "--health-interval", "1s", "--health-retries", "1",
                         command=("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"))
        wait_for(lambda: len(records_for(daemon, cid, "decision")) >= 8, 60,
                 "eight unhealthy decisions from the flapping container")
        time.sleep(1)

        decisions = records_for(daemon, cid, "decision")
        restarts = steps(daemon, cid, "docker.restart")
        escalations = [d for d in decisions if d["decision"] == "escalate"]
        suppressed = {d["suppressed_by"] for d in decisions if d["decision"] == "suppressed"}

        assert len(restarts) == 3, [d["decision"] for d in decisions]
        assert len(escalations) == 1
        assert "budget_target" in suppressed
        assert len(sink.bodies) == 1
        assert sink.bodies[0]["rule"] == "restart-unhealthy"
        assert sink.bodies[0]["target"]["id"] == cid


def _unix_post(socket_path: str, path: str) -> int:
    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(socket_path)

    conn = UnixConnection("docker", timeout=10)
    try:
        conn.request("POST", path)
        return conn.getresponse().status
    finally:
        conn.close()


def test_event_gap_over_256_events_is_detected_and_reconciled(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,
        tmp_path: Path) -> None:
    with SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=proxy.url).start()
        noisy = containers()
        sick = containers(*HEALTH_FILE)
        wait_for(lambda: docker_inspect(docker_host, sick)["State"]["Health"]["Status"]
                 == "healthy", 20, "the second container to be healthy")
        wait_for(lambda: daemon.metric("remedyd_events_total", source="docker") > 0, 10,
                 "remedyd to see an event")

        proxy.cut()
        wait_for(lambda: not daemon.ready(), 20, "remedyd to notice the dropped connection")
        engine = docker_host.removeprefix("unix://")
        for _ in range(300):  # the engine keeps only the last 256 events
            assert _unix_post(engine, f"/containers/{noisy}/kill?signal=SIGWINCH") == 204
        docker_cli(docker_host, "exec", sick, "touch", "/tmp/sick")
        wait_for(lambda: docker_inspect(docker_host, sick)["State"]["Health"]["Status"]
                 == "unhealthy", 20, "the container to turn unhealthy during the outage")
        proxy.resume()

        wait_for(lambda: successful_restarts(daemon, sick), 60,
                 "the container that turned unhealthy in the gap to be healed")
        assert daemon.metric("remedyd_source_gaps_total", source="docker") >= 1
        assert daemon.metric("remedyd_source_reconnects_total", source="docker") >= 1


def test_boundary_event_is_not_acted_on_twice_after_reconnect(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,
        tmp_path: Path) -> None:
    rules = """
rules:
  - name: notify-die
    source: docker
    when: event.action == "die"
    actions:
      - notify.webhook: {}
"""
    with WebhookSink() as sink, SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon = daemon_factory(rules, docker_url=proxy.url, webhook_url=sink.url).start()
        cid = containers(command=("true",))
        wait_for(lambda: len(sink.bodies) == 1, 20, "the die event's notification")
        # The die event is now the last one remedyd saw: the boundary of the replay.
        proxy.cut()
        wait_for(lambda: not daemon.ready(), 20, "remedyd to notice the dropped connection")
        proxy.resume()
        wait_for(daemon.ready, 30, "remedyd to reconnect")
        time.sleep(2)  # the replay from `since` arrives at once; give it ample time

        assert len(sink.bodies) == 1
        assert len(records_for(daemon, cid, "decision")) == 1
        assert daemon.metric("remedyd_source_gaps_total", source="docker") == 0
        assert daemon.metric("remedyd_source_reconnects_total", source="docker") >= 1


def test_container_unhealthy_during_dockerd_restart_is_healed(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,
        restart_dockerd: DockerdControl, tmp_path: Path) -> None:
    with SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=proxy.url).start()
        # Healthy on its first run; sick on every run after (the engine restarts it on boot).
        cid = containers("--restart", "always", *HEALTH_FILE, command=(
            "sh", "-c", "test -f /tmp/ran && touch /tmp/sick; touch /tmp/ran; "
            "trap 'exit 0' TERM; while :; do sleep 1; done"))
        wait_for(lambda: docker_inspect(docker_host, cid)["State"]["Health"]["Status"]
                 == "healthy", 20, "the container to be healthy")

        proxy.cut()
        restart_dockerd.stop()
        restart_dockerd.start()
        wait_for(lambda: docker_inspect(docker_host, cid)["State"].get("Health", {})
                 .get("Status") == "unhealthy", 30, "the container to turn unhealthy")
        assert records_for(daemon, cid, "decision") == []
        proxy.resume()

        wait_for(lambda: successful_restarts(daemon, cid), 60, "remedyd to heal it afterwards")
        time.sleep(2)
        assert len([d for d in records_for(daemon, cid, "decision")
                    if d["decision"] == "act"]) == 1


def test_sighup_with_broken_rules_keeps_the_old_rules(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=docker_host).start()
    rule_file = daemon.rules_dir / "rules.yaml"
    rule_file.write_text(restart_rule().replace('event.action == "health_status"',
                                                'event.action == = "health_status"'))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.metric("remedyd_rule_reload_failures_total") == 1, 10,
             "the reload failure to be counted")
    assert "restart-unhealthy" in daemon.log() and str(rule_file) in daemon.log()
    answer = daemon.get("/api/v1/rules")
    assert answer is not None and b'"restart-unhealthy"' in answer[1]

    cid = containers(*HEALTH_FAILS)
    wait_for(lambda: successful_restarts(daemon, cid), 30, "the old rules to still act")


def test_sigterm_during_an_action_exits_within_deadline_and_audit_verifies(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    # busybox `sleep` as PID 1 ignores SIGTERM: a restart waits the whole 30 s grace.
    daemon = daemon_factory(restart_rule(timeout="30s"), docker_url=docker_host,
                            extra={"safety": {"shutdown_timeout": "1s"}}).start()
    cid = containers(*HEALTH_FAILS, "--stop-timeout", "30")
    wait_for(lambda: records_for(daemon, cid, "decision"), 30, "the restart to begin")

    started = time.monotonic()
    assert daemon.stop(timeout=15) == 0
    assert time.monotonic() - started < 10

    outcomes = records_for(daemon, cid, "outcome")
    assert [o["outcome"] for o in outcomes] == ["cancelled"]
    result = daemon.verify_audit()
    assert result.returncode == 0, result.stderr


def test_container_restarted_by_its_own_policy_is_not_fought(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    rules = """
rules:
  - name: restart-on-die
    source: docker
    when: event.action == "die"
    actions:
      - docker.restart: {timeout: 1s}
"""
    daemon = daemon_factory(rules, docker_url=docker_host).start()
    cid = containers("--restart", "on-failure", command=("sh", "-c", "sleep 1; exit 1"))
    wait_for(lambda: len(records_for(daemon, cid, "decision")) >= 2, 30,
             "two die events from the crashing container")
    decisions = records_for(daemon, cid, "decision")
    assert {d["suppressed_by"] for d in decisions} == {"restart_policy"}
    assert records_for(daemon, cid, "outcome") == []


def flood_until_engine_skips(docker_host: str, noisy: str) -> None:
    """With remedyd stopped, send events until dockerd drops them for it.

    Once remedyd's socket is full, each event waits 100 ms for it and is dropped. Five
    slow kills in a row, not one: on a loaded machine one slow request says nothing, and
    the events that follow would then still fit in and arrive."""
    engine = docker_host.removeprefix("unix://")
    deadline, slow = time.monotonic() + 60, 0
    for _ in range(20_000):
        started = time.monotonic()
        _unix_post(engine, f"/containers/{noisy}/kill?signal=SIGWINCH")
        slow = slow + 1 if time.monotonic() - started > 0.09 else 0
        if slow >= 5:
            return
        if time.monotonic() > deadline:
            break
    raise AssertionError("dockerd never started skipping remedyd")


def test_periodic_reconcile_heals_what_the_engine_silently_skipped(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    # dockerd drops events for a listener that does not take them within 100 ms,
    # without closing the stream. Freeze remedyd, fill the socket with events so
    # dockerd starts dropping, and turn a container unhealthy meanwhile.
    daemon = daemon_factory(restart_rule(cooldown="1m"), docker_url=docker_host).start()
    noisy = containers()
    sick = containers(*HEALTH_FILE)
    wait_for(lambda: docker_inspect(docker_host, sick)["State"]["Health"]["Status"]
             == "healthy", 20, "the container to be healthy")
    daemon.signal(signal.SIGSTOP)
    try:
        flood_until_engine_skips(docker_host, noisy)
        docker_cli(docker_host, "exec", sick, "touch", "/tmp/sick")
        wait_for(lambda: docker_inspect(docker_host, sick)["State"]["Health"]["Status"]
                 == "unhealthy", 20, "the container to turn unhealthy while remedyd is frozen")
    finally:
        daemon.signal(signal.SIGCONT)

    wait_for(lambda: successful_restarts(daemon, sick), 30, "the periodic listing to heal it")
    [decision] = [d for d in records_for(daemon, sick, "decision") if d["decision"] == "act"]
    # The stream never delivered it: the periodic replay found it in dockerd's buffer, or,
    # once the flood pushed it out of there, the container's state made it up (synthetic).
    replayed = daemon.metric("remedyd_source_recovered_events_total", source="docker",
                             via="replay") or 0
    assert decision["event"]["synthetic"] is True or replayed >= 1, decision["event"]
    assert daemon.metric("remedyd_source_reconnects_total", source="docker") == 0
