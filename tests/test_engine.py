"""The pure engine: which events make decisions, and when (time passed in explicitly)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from daemon.core.events import Event, Ref
from daemon.engine.evaluator import Evaluator
from daemon.engine.state import MatchState
from tests.rulekit import docker_event, ruleset

UNHEALTHY = 'event.action == "health_status" && event.attributes.health == "unhealthy"'


def rules(body: str) -> str:
    return "rules:\n" + body


def test_health_rule_decides_on_unhealthy_only(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules(f"""
  - name: heal
    source: docker
    when: {UNHEALTHY}
    actions: [docker.restart: {{}}]
""")))
    assert engine.evaluate(docker_event("health_status: healthy"), 0) == []
    assert engine.evaluate(docker_event("start"), 0) == []
    [decision] = engine.evaluate(docker_event("health_status: unhealthy", name="db"), 0)
    assert decision.rule.name == "heal"
    assert decision.target.name == "db"
    assert [a.name for a in decision.actions] == ["docker.restart"]


def test_exec_noise_from_health_probes_never_reaches_rules() -> None:
    from daemon.sources.docker import normalise

    raw = {"Type": "container", "Action": "exec_start: /bin/sh -c /bin/false",
           "Actor": {"ID": "x", "Attributes": {"name": "web"}}, "timeNano": 1}
    assert normalise(raw, 0.0) is None


def test_for_waits_and_a_recovery_cancels(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: heal-later
    source: docker
    when: event.action == "health_status" && event.attributes.health != "healthy"
    for: 30s
    actions: [docker.restart: {}]
""")))
    assert engine.evaluate(docker_event("health_status: unhealthy"), 100) == []
    assert engine.next_due() == 130
    assert engine.due(129.9) == []
    [decision] = engine.due(130)
    assert decision.rule.name == "heal-later"
    assert engine.next_due() is None

    engine.evaluate(docker_event("health_status: unhealthy"), 200)
    engine.evaluate(docker_event("health_status: healthy"), 210)
    assert engine.due(1000) == []


def test_occurrences_count_per_container_within_window(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: loop
    source: docker
    when: event.action == "die"
    occurrences: {count: 3, within: 1m}
    actions: [notify.webhook: {}]
""")))
    a, b = "a" * 64, "b" * 64
    assert engine.evaluate(docker_event("die", a), 0) == []
    assert engine.evaluate(docker_event("die", b), 1) == []
    assert engine.evaluate(docker_event("die", a), 30) == []
    assert engine.evaluate(docker_event("die", a), 70) == []  # the first one aged out
    assert len(engine.evaluate(docker_event("die", a), 71)) == 1


def test_condition_error_is_no_match_and_reported(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: by-label
    source: docker
    when: event.attributes["com.example.tier"] == "db"
    actions: [notify.webhook: {}]
""")))
    assert engine.evaluate(docker_event("die"), 0) == []
    [problem] = engine.take_problems()
    assert problem.rule == "by-label"
    assert len(engine.evaluate(docker_event("die", **{"com.example.tier": "db"}), 0)) == 1


def test_object_is_visible_to_conditions_that_use_it(tmp_path: Path) -> None:
    from dataclasses import replace

    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: by-state
    source: docker
    when: has(object.State) && object.State.Health.FailingStreak >= 3
    actions: [notify.webhook: {}]
""")))
    event = docker_event("health_status: unhealthy")
    assert engine.evaluate(event, 0) == []
    engine.take_problems()
    sick = replace(event, object={"State": {"Health": {"FailingStreak": 3}}})
    assert len(engine.evaluate(sick, 0)) == 1


def test_reload_drops_pending_timers_of_removed_rules(tmp_path: Path) -> None:
    text = rules("""
  - name: slow
    source: docker
    when: event.action == "die"
    for: 1m
    actions: [notify.webhook: {}]
""")
    engine = Evaluator(ruleset(tmp_path, text))
    engine.evaluate(docker_event("die"), 0)
    engine.swap(ruleset(tmp_path, text.replace("name: slow", "name: other")))
    assert engine.due(120) == []


def test_only_named_attributes_reach_cel_and_rules_still_match(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: by-service
    source: docker
    when: event.attributes["com.docker.compose.service"] == "db"
    actions: [notify.webhook: {}]
  - name: by-index
    source: docker
    when: event.action == "die" && event["attributes"]["name"] == "web"
    actions: [notify.webhook: {}]
""")))
    labels = {f"com.example.label{i}": str(i) for i in range(30)}
    db = docker_event("die", name="web", **labels, **{"com.docker.compose.service": "db"})
    assert sorted(d.rule.name for d in engine.evaluate(db, 0)) == ["by-index", "by-service"]
    other = docker_event("start", **labels, **{"com.docker.compose.service": "web"})
    assert engine.evaluate(other, 0) == []


def test_many_pending_timers_fire_in_due_order(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: slow
    source: docker
    when: event.action == "die"
    for: 10s
    actions: [notify.webhook: {}]
""")))
    ids = [f"{i:064x}" for i in range(500)]
    for n, cid in enumerate(ids):
        engine.evaluate(docker_event("die", cid), n)       # due at n + 10
    for cid in ids[::2]:
        engine.evaluate(docker_event("destroy", cid), 600)  # forgotten: never fires
    assert engine.next_due() == 11
    fired = engine.due(259)
    assert [d.target.id for d in fired] == ids[1:250:2]
    assert engine.next_due() == 261


LOOP = rules("""
  - name: loop
    source: docker
    when: event.action == "die"
    occurrences: {count: 3, within: 1m}
    actions: [notify.webhook: {}]
""")


def test_occurrence_history_of_100k_subjects_that_went_away_is_evicted() -> None:
    # A Kubernetes Pod or a KPI series never sends `destroy`: 100k subjects, 1,000 new
    # ones a second, each hit once, on a 10 s window, so about 10,000 are live at once.
    state = MatchState()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            state.count_hit(("loop", f"kubernetes/pod/ns/pod-{i:08d}"), i / 1000, 3, 10.0)
        peak = tracemalloc.get_traced_memory()[1] - base
        for _ in range(200):  # each sweep evicts a bounded batch
            state.take_due(160.0)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert peak < 12 * 2**20, f"{peak / 2**20:.1f} MiB at the peak for ~10k live subjects"
    # What stays is the emptied dicts' tables, sized for the live peak, not the total.
    assert held < 2**20, f"{held / 2**10:.0f} KiB still held after every window closed"
    assert state.size().series == 0


def test_eviction_keeps_counting_subjects_still_inside_their_window(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, LOOP))
    flapping = "f" * 64
    for i in range(3000):  # others come and go before it
        engine.evaluate(docker_event("die", f"{i:064x}"), i / 100)
    assert engine.evaluate(docker_event("die", flapping), 31) == []
    assert engine.evaluate(docker_event("die", flapping), 60) == []
    for _ in range(5):  # each call evicts a bounded batch
        assert engine.due(90) == []  # the crowd's windows closed; the flapping one's not
    assert engine.state.size().series == 1
    [decision] = engine.evaluate(docker_event("die", flapping), 90)
    assert decision.target.id == flapping
    assert engine.state.size().series == 0


def test_reload_drops_occurrence_history_of_removed_rules(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, LOOP))
    engine.evaluate(docker_event("die"), 0)
    engine.evaluate(docker_event("die"), 1)
    engine.swap(ruleset(tmp_path, LOOP.replace("name: loop", "name: other")))
    assert engine.state.size().series == 0
    engine.swap(ruleset(tmp_path, LOOP))
    assert engine.evaluate(docker_event("die"), 2) == []  # counting starts over


def _pod_event(action: str, resolves: tuple[str, ...] = (), name: str = "web-1") -> Event:
    subject = Ref("kubernetes", "pod", name, id=f"uid-{name}", namespace="shop")
    return Event("kubernetes", "pod", action, subject, f"{name}:{action}", 0.0, 0.0,
                 {"name": name}, resolves=resolves)


def test_an_event_that_resolves_another_ends_the_wait_of_a_for(tmp_path: Path) -> None:
    engine = Evaluator(ruleset(tmp_path, rules("""
  - name: evict-unready
    source: kubernetes
    when: event.kind == "pod" && event.action == "unready"
    for: 5m
    actions: [notify.webhook: {}]
""")))
    engine.evaluate(_pod_event("unready"), 100)
    engine.evaluate(_pod_event("unready", name="web-2"), 100)
    # A Pod ready again is not a candidate of the rule, yet it ends that Pod's wait.
    engine.evaluate(_pod_event("ready", resolves=("unready",)), 200)
    [decision] = engine.due(400)
    assert decision.target.name == "web-2"

    engine.evaluate(_pod_event("unready"), 500)
    engine.evaluate(_pod_event("deleted", resolves=("*",)), 600)
    assert engine.due(10_000) == []
