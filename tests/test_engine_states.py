"""A rule's state per subject on a fake clock: pending (`for`) -> firing -> resolved, one
decision per KPI breach, hysteresis, keep_firing_for, on_missing, routing, incidents."""

from __future__ import annotations

from pathlib import Path

from daemon.core.events import Event, Ref
from daemon.engine.evaluator import Evaluator
from tests.enginekit import Run, missing, ruleset

ERRORS = """
  - name: errors
    source: kpi
    query: sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))
    when: event.attributes.value > 0.01
"""


def run(tmp_path: Path, body: str) -> Run:
    return Run(Evaluator(ruleset(tmp_path, body)))


def test_a_breach_lasting_for_two_minutes_acts_once(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    for: 2m
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05] * 40)  # every 15 s for 10 minutes
    [decision] = r.decisions
    assert decision.decided_at == 120.0
    assert [(c.change, c.at) for c in r.changes] == [("pending", 0.0), ("firing", 120.0)]
    assert decision.incident_id == r.changes[0].incident == r.changes[1].incident


def test_a_breach_shorter_than_for_never_acts_and_is_reported_as_over(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    for: 2m
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05] * 6 + [0.001] * 20)
    assert r.decisions == []
    assert r.kinds() == ["pending", "resolved"]
    assert r.engine.next_due() is None


def test_resolved_after_firing_carries_the_episode_incident(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05, 0.05, 0.001, 0.001, 0.05, 0.001])
    first, second = r.decisions
    assert r.kinds() == ["firing", "resolved", "firing", "resolved"]
    assert [c.incident for c in r.changes] == [first.incident_id] * 2 + [second.incident_id] * 2
    assert first.incident_id != second.incident_id
    resolved = r.changes[1]
    assert resolved.event is not None and resolved.event.attributes["value"] == 0.001


HOVERING = [0.02, 0.009, 0.011, 0.0095, 0.0105, 0.008, 0.012, 0.006, 0.0101]


def test_hysteresis_a_value_hovering_at_the_threshold_neither_flaps_nor_fires_again(
        tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    clear_when: event.attributes.value < 0.005
    actions: [test.fix: {}]
""")
    end = r.samples("errors", HOVERING)
    assert len(r.decisions) == 1 and r.kinds() == ["firing"]
    r.samples("errors", [0.004], start=end)  # below the clearing threshold: over
    assert r.kinds() == ["firing", "resolved"]


def test_without_hysteresis_the_same_values_fire_again_and_again(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""")
    r.samples("errors", HOVERING)
    assert len(r.decisions) == 5
    assert r.kinds().count("resolved") == 4


def test_keep_firing_for_rides_out_a_short_dip_and_clears_after_a_long_one(
        tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    keep_firing_for: 1m
    actions: [test.fix: {}]
""")
    now = r.samples("errors", [0.05, 0.05, 0.001, 0.001, 0.05, 0.05])  # a 30 s dip
    assert len(r.decisions) == 1 and r.kinds() == ["firing"]
    r.samples("errors", [0.001] * 8, start=now)  # the dip starts at 90 s and lasts
    assert len(r.decisions) == 1
    assert [(c.change, c.at) for c in r.changes] == [("firing", 0.0), ("resolved", 150.0)]
    assert r.changes[1].event is None  # time resolved it, not a sample


def test_on_missing_hold_keeps_the_state_as_it_was(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05])
    for t in (15.0, 30.0, 45.0):
        r.feed(missing("errors", t), t)
    assert len(r.decisions) == 1 and r.kinds() == ["firing"]
    assert r.engine.take_problems() == []  # `when` never saw a sample without a value
    r.samples("errors", [0.05, 0.001], start=60.0)
    assert len(r.decisions) == 1 and r.kinds() == ["firing", "resolved"]


def test_on_missing_breach_counts_an_empty_result_as_a_breach(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    on_missing: breach
    for: 30s
    actions: [test.fix: {}]
""")
    for t in (0.0, 15.0, 30.0):
        r.feed(missing("errors", t, reason="nan"), t)
    [decision] = r.decisions
    assert decision.event.action == "missing" and decision.decided_at == 30.0
    assert r.kinds() == ["pending", "firing"]
    assert r.engine.take_problems() == []


def test_on_missing_ok_counts_an_empty_result_as_healthy(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    on_missing: ok
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05])
    r.feed(missing("errors", 15.0), 15.0)
    assert r.kinds() == ["firing", "resolved"]
    r.feed(missing("errors", 30.0), 30.0)  # nothing to clear: nothing happens
    assert r.kinds() == ["firing", "resolved"] and len(r.decisions) == 1


def test_a_sample_is_evaluated_by_its_own_rule_only(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""" + ERRORS.replace("name: errors", "name: errors-too") + """
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05])
    assert [d.rule.name for d in r.decisions] == ["errors"]
    r.samples("errors-too", [0.05])
    assert [d.rule.name for d in r.decisions] == ["errors", "errors-too"]


def test_each_series_has_a_state_of_its_own(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""")
    r.samples("errors", [0.05, 0.05], service="api")
    r.samples("errors", [0.001, 0.05], service="web")
    assert [d.event.subject.id for d in r.decisions] == ['{service="api"}', '{service="web"}']


def test_params_reach_the_rules_that_read_them(tmp_path: Path) -> None:
    r = run(tmp_path, """
  - name: latency
    source: kpi
    query: histogram_quantile(0.99, rate(http_request_duration_seconds_bucket[5m]))
    params: {max_seconds: 0.3}
    when: event.attributes.value > params.max_seconds
    clear_when: event.attributes.value < params.max_seconds * 0.8
    actions: [test.fix: {}]
  - name: any-event
    source: kpi
    query: up
    when: event.attributes.value == 0.0
    actions: [notify.page: {}]
""")
    r.samples("latency", [0.2, 0.31, 0.25, 0.23])
    assert [d.decided_at for d in r.decisions] == [15.0]
    assert r.kinds() == ["firing", "resolved"]
    r.samples("any-event", [0.0])  # the rule without params shares a context, and works
    assert [d.rule.name for d in r.decisions] == ["latency", "any-event"]


def _alert(action: str, resolves: tuple[str, ...] = ()) -> Event:
    subject = Ref("webhook", "alert", "HighErrorRate", id="fp-1")
    return Event("webhook", "alert", action, subject, f"fp-1:{action}", 0.0, 0.0,
                 {"labels": {"alertname": "HighErrorRate"}}, resolves=resolves)


def test_an_event_that_resolves_the_one_that_fired_clears_the_state(tmp_path: Path) -> None:
    r = run(tmp_path, """
  - name: on-alert
    source: webhook
    when: event.kind == "alert" && event.action == "firing"
    keep_firing_for: 10m
    actions: [test.fix: {}]
""")
    r.feed(_alert("firing"), 0.0)
    r.feed(_alert("resolved", resolves=("firing",)), 60.0)
    assert r.kinds() == ["firing", "resolved"]
    assert r.changes[1].at == 60.0  # at once: keep_firing_for is for noisy conditions
    assert r.changes[0].incident == r.changes[1].incident == r.decisions[0].incident_id


def test_event_rules_still_decide_on_every_match_while_firing(tmp_path: Path) -> None:
    r = run(tmp_path, """
  - name: on-alert
    source: webhook
    when: event.kind == "alert" && event.action == "firing"
    actions: [test.fix: {}]
""")
    for t in (0.0, 10.0, 20.0):
        r.feed(_alert("firing"), t)
    assert len(r.decisions) == 3 and r.kinds() == ["firing"]
    assert len({d.incident_id for d in r.decisions}) == 1  # one episode, one incident


def test_states_of_series_that_resolved_are_dropped(tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    for: 30s
    actions: [test.fix: {}]
""")
    for i in range(2000):  # series come and go: each breaches, fires, recovers
        r.samples("errors", [0.05, 0.05, 0.05, 0.001], series=str(i))
    assert len(r.decisions) == 2000
    assert r.engine.state.size().alerts == 0 and r.engine.next_due() is None


def test_a_match_on_the_event_that_ends_the_subject_keeps_no_state(tmp_path: Path) -> None:
    r = run(tmp_path, """
  - name: on-gone
    source: webhook
    when: event.action == "gone"
    actions: [notify.page: {}]
""")
    r.feed(_alert("gone", resolves=("*",)), 0.0)
    assert len(r.decisions) == 1 and r.kinds() == ["firing", "resolved"]
    assert r.engine.state.size().alerts == 0


def test_a_kpi_decision_refused_for_now_is_decided_again_on_the_next_breaching_sample(
        tmp_path: Path) -> None:
    r = run(tmp_path, ERRORS + """
    actions: [test.fix: {}]
""")
    now = r.samples("errors", [0.05, 0.05])
    [first] = r.decisions
    # A gate said "not now" (a silence, an unless query): the episode is not over.
    r.engine.rearm("errors", first.event.subject.key)
    now = r.samples("errors", [0.05, 0.05], start=now)
    assert len(r.decisions) == 2, "once more, on the first sample after the refusal"
    assert r.decisions[1].incident_id == first.incident_id
    assert r.decisions[1].decided_at == 30.0
    # Once it resolved there is nothing to re-arm: the next breach is a new episode.
    now = r.samples("errors", [0.0], start=now)
    r.engine.rearm("errors", first.event.subject.key)
    r.samples("errors", [0.0, 0.0], start=now)
    assert len(r.decisions) == 2
