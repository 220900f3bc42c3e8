"""`remedyd replay`: recorded events through a rule set on a fake clock; per rule what it
would decide, next to what was decided then when the recording is an audit log."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from daemon.actions.params import ACTIONS
from daemon.engine.ruleset import compile_rules
from daemon.kube.stamps import seconds
from daemon.sources.docker import normalise
from daemon.testing.replay import main
from daemon.testing.sim import Simulation, executor_settings
from tests.test_kube_cache import load
from tests.test_kube_transitions import BACKOFF, app, edited, terminated
from tests.test_rule_tests import RESTART

ROOT = Path(__file__).resolve().parents[1]
START = 1764547200  # 2025-12-01T00:00:00Z
CONTAINER = "c1" * 32

# The restart rule of the test tool's own tests, with its cooldown the knob a change turns.
def rules_text(cooldown: str) -> str:
    return RESTART.format(hold="0s").replace("cooldown: 2m", f"cooldown: {cooldown}")


def docker_line(at: float, action: str, name: str = "web", kind: str = "container",
                container: str = CONTAINER) -> dict[str, Any]:
    """A line of `docker events --format '{{json .}}'`."""
    nano = int((START + at) * 1e9)
    return {"status": action, "id": container, "from": "busybox:latest", "Type": kind,
            "Action": action, "Actor": {"ID": container, "Attributes": {
                "image": "busybox:latest", "name": name}},
            "scope": "local", "time": nano // 10**9, "timeNano": nano}


UNHEALTHY = [docker_line(at, "health_status: unhealthy") for at in (10, 70, 200)]


def replay(*args: str | Path, rules: Path, **recorded: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    events = recorded.get("events")
    code = main([str(rules)], None, recorded.get("audit"), [events] if events else [], out,
                err, verbose="-v" in args)
    return code, out.getvalue(), err.getvalue()


def write_rules(tmp_path: Path, cooldown: str) -> Path:
    path = tmp_path / f"rules-{cooldown}.yaml"
    path.write_text(rules_text(cooldown))
    return path


def recorded_audit(tmp_path: Path, rules: Path) -> Path:
    """An audit log as a daemon running `rules` writes it: the executor's own records."""
    ruleset, errors = compile_rules([rules], ACTIONS)
    assert not errors
    path = tmp_path / "audit.jsonl"
    sim = Simulation(ruleset, executor_settings(), path, wall_start=START)

    async def run() -> None:
        for line in UNHEALTHY:
            event = normalise(line, observed_at=line["timeNano"] / 1e9)
            assert event is not None
            await sim.advance(event.occurred_at - START)
            await sim.feed([event])
        await sim.drain()

    try:
        sim.loop.run_until_complete(run())
    finally:
        sim.close()
    return path


def test_raw_docker_events_show_what_the_rules_would_decide(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [docker_line(0, "start"), docker_line(5, "exec_start: sh -c true"), *UNHEALTHY,
             docker_line(300, "create", kind="network")]
    events.write_text("".join(json.dumps(line) + "\n" for line in lines))
    code, out, _ = replay("-v", rules=write_rules(tmp_path, "2m"), events=events)
    assert code == 0, out
    assert "replay: 4 event(s) from" in out  # exec_* and network events never reach rules
    assert "restart-unhealthy" in out and "2 act, 1 suppressed" in out
    assert "12-01 00:00:10  act [docker.restart] on docker/container/web" in out
    assert "12-01 00:01:10  suppressed by cooldown [docker.restart] on docker/container/web" \
        in out
    assert "12-01 00:03:20  act [docker.restart] on docker/container/web" in out


def test_an_audit_log_replayed_shows_a_rule_change_next_to_what_was_decided(
        tmp_path: Path) -> None:
    audit = recorded_audit(tmp_path, write_rules(tmp_path, "2m"))
    # The same rules: the same decisions, nothing marked changed.
    code, out, _ = replay(rules=write_rules(tmp_path, "2m"), audit=audit)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith("restart-unhealthy ")]
    assert row.split() == ["restart-unhealthy", "2", "act,", "1", "suppressed", "2", "act,",
                           "1", "suppressed"]
    # A shorter cooldown: the decision at 00:01:10 would have acted.
    code, out, _ = replay(rules=write_rules(tmp_path, "30s"), audit=audit)
    assert code == 0
    (row,) = [line for line in out.splitlines() if line.startswith("restart-unhealthy ")]
    assert row.split()[-1] == "changed" and "3 act" in row
    assert "- 12-01 00:01:10  suppressed by cooldown [docker.restart] on docker/container/web" \
        in out
    assert "+ 12-01 00:01:10  act [docker.restart] on docker/container/web" in out
    assert "  12-01 00:00:10  act [docker.restart] on docker/container/web" in out


def test_a_removed_rule_shows_what_it_decided_then(tmp_path: Path) -> None:
    audit = recorded_audit(tmp_path, write_rules(tmp_path, "2m"))
    other = tmp_path / "other.yaml"
    other.write_text(rules_text("2m").replace("restart-unhealthy", "restart-new"))
    code, out, _ = replay(rules=other, audit=audit)
    assert code == 0
    assert any(line.startswith("restart-unhealthy (not in the rules)") and "changed" in line
               for line in out.splitlines()), out
    assert any(line.startswith("restart-new") and line.split()[1:] == ["-", "2", "act,", "1",
                                                                      "suppressed", "changed"]
               for line in out.splitlines()), out


def watch(kind: str, obj: dict[str, Any], at: str) -> dict[str, Any]:
    return {"type": kind, "object": obj, "time": at}


def test_kubernetes_watch_events_go_through_the_cache_and_the_owner_chain(
        tmp_path: Path) -> None:
    crashing = edited("pod", "500", app(3, BACKOFF, terminated("Error", "2024-05-02T09:19:30Z")))
    lines = [watch("ADDED", load("deployment"), "2024-05-02T09:14:07Z"),
             watch("ADDED", load("replicaset"), "2024-05-02T09:14:07Z"),
             watch("ADDED", load("pod"), "2024-05-02T09:14:09Z"),
             # Six minutes after the rollout: the fresh revision crash-loops.
             watch("MODIFIED", crashing, "2024-05-02T09:20:00Z"),
             {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {
                 "resourceVersion": "501"}}}]
    # kubectl get -w -o json --output-watch-events watches one kind and prints indented
    # objects: a file per kind, merged by time (the pods' file first on purpose).
    files = [tmp_path / "pods.json", tmp_path / "workloads.json"]
    files[0].write_text("".join(json.dumps(line, indent=2) + "\n" for line in lines[2:]))
    files[1].write_text("".join(json.dumps(line, indent=2) + "\n" for line in lines[:2]))
    printed, err = io.StringIO(), io.StringIO()
    code = main([str(ROOT / "rules" / "kubernetes.yaml")], None, None, files, printed, err, True)
    out = printed.getvalue()
    assert code == 0, out + err.getvalue()
    # Aimed at the Deployment through the cached chain, as the daemon's rollback is.
    assert ("05-02 09:20:00  act [kubernetes.rollback, notify.webhook] on "
            "kubernetes/deployment/shop/checkout") in out, out
    (row,) = [line for line in out.splitlines() if line.startswith("kube-notify-crashloop")]
    assert row.split()[1:] == ["-"]


def test_watch_events_without_a_time_take_the_objects_newest_timestamp(
        tmp_path: Path) -> None:
    crashing = edited("pod", "500", app(3, BACKOFF, terminated("Error", "2024-05-02T09:19:30Z")))
    events = tmp_path / "watch.jsonl"
    events.write_text("".join(json.dumps({"type": t, "object": o}) + "\n" for t, o in [
        ("ADDED", load("deployment")), ("ADDED", load("replicaset")), ("ADDED", load("pod")),
        ("MODIFIED", crashing)]))
    code, out, _ = replay("-v", rules=ROOT / "rules" / "kubernetes.yaml", events=events)
    assert code == 0
    newest = max(seconds(s) or 0.0 for s in _stamps_of(crashing))
    assert newest > 0 and "kube-" in out


def _stamps_of(obj: Any) -> list[str]:
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k.endswith(("At", "Time", "Timestamp"))
                and isinstance(v, str)] + [s for v in obj.values() for s in _stamps_of(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _stamps_of(v)]
    return []


def test_bad_input_is_exit_2_naming_the_file_and_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(UNHEALTHY[0]) + "\n{not json\n")
    code, _, err = replay(rules=write_rules(tmp_path, "2m"), events=events)
    assert code == 2 and f"error: {events}:2: not JSON" in err
    code, _, err = replay(rules=write_rules(tmp_path, "2m"), events=tmp_path / "gone.jsonl")
    assert code == 2 and "cannot read" in err


def test_rules_that_do_not_load_are_exit_1(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(rules_text("2m").replace("docker.restart", "docker.restrat"))
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(UNHEALTHY[0]) + "\n")
    code, _, err = replay(rules=broken, events=events)
    assert code == 1 and "docker.restrat" in err and "nothing replayed" in err


def test_the_command_line(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(line) + "\n" for line in UNHEALTHY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    done = subprocess.run([sys.executable, "-m", "daemon", "replay", "--rules",
                           str(write_rules(tmp_path, "2m")), "--events", str(events)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr
    assert "2 act, 1 suppressed" in done.stdout
