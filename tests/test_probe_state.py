"""Counting a probe's checks into up and down, on a fake clock: N failures in a row make one
`failed`, M successes after it one `recovered`, and nothing in between."""

from __future__ import annotations

import pytest

from daemon.engine.probe_state import CheckResult, ProbeState, Transition

OK = CheckResult(ok=True, status=200, latency_ms=3.0)


def fail(error: str = "status 503") -> CheckResult:
    return CheckResult(ok=False, error=error, status=503)


def run(state: ProbeState, results: list[CheckResult], start: float = 0.0,
        every: float = 10.0) -> list[tuple[float, Transition]]:
    """Feed checks `every` seconds apart; the transitions with the time they happened."""
    out = []
    for index, result in enumerate(results):
        at = start + index * every
        if (transition := state.record(result, at)) is not None:
            out.append((at, transition))
    return out


def test_three_failures_in_a_row_fail_once() -> None:
    state = ProbeState(failures=3, successes=1)
    happened = run(state, [fail()] * 7)
    assert happened == [(20.0, Transition("failed", 3, "status 503"))]
    assert state.status == "down" and state.since == 20.0


def test_a_success_between_failures_starts_the_count_again() -> None:
    state = ProbeState(failures=3, successes=1)
    assert run(state, [fail(), fail(), OK, fail(), fail(), OK]) == []
    assert state.status == "up"


def test_the_failed_event_carries_the_last_failures_reason() -> None:
    state = ProbeState(failures=2, successes=1)
    [(_, failed)] = run(state, [fail("timeout after 1s"), fail("connection refused")])
    assert failed.error == "connection refused"


def test_recovered_after_m_successes_with_the_outage_it_ends() -> None:
    state = ProbeState(failures=2, successes=2)
    happened = run(state, [fail(), fail(), fail("connection refused"), OK, OK, OK],
                   start=100.0)
    assert happened == [
        (110.0, Transition("failed", 2, "status 503")),
        (140.0, Transition("recovered", 3, "connection refused", down_for=30.0)),
    ]
    assert state.status == "up"


def test_a_failure_while_recovering_is_still_the_same_outage() -> None:
    state = ProbeState(failures=1, successes=2)
    happened = run(state, [fail(), OK, fail(), OK, OK])
    assert [t.action for _, t in happened] == ["failed", "recovered"]
    assert happened[1][1].failures == 2
    assert happened[1][1].down_for == 40.0


def test_states_on_the_way() -> None:
    state = ProbeState(failures=2, successes=2)
    seen = []
    for result in (OK, fail(), fail(), OK, OK):
        state.record(result, 0.0)
        seen.append(state.status)
    assert seen == ["up", "failing", "down", "recovering", "up"]


def test_successes_before_any_failure_recover_nothing() -> None:
    state = ProbeState(failures=1, successes=1)
    assert run(state, [OK] * 5) == []
    assert state.status == "up"


def test_nothing_checked_yet_is_unknown() -> None:
    view = ProbeState(failures=3, successes=1).view()
    assert view["state"] == "unknown" and view["last_check"] is None


@pytest.mark.parametrize(("failures", "successes"), [(0, 1), (1, 0)])
def test_thresholds_below_one_are_refused(failures: int, successes: int) -> None:
    with pytest.raises(ValueError):
        ProbeState(failures, successes)
