"""The Docker source's ledger: transitions missed by the events are made up from state once,
and the real events, when they turn up late, are not emitted again."""

from __future__ import annotations

from dataclasses import replace

from daemon.sources.docker_ledger import ContainerState, Ledger

S = 1_000_000_000  # one second in ns
WATCHING_SINCE = 1_000 * S
SETTLED = 10_000 * S
CID = "c0ffee"


def state(**changes: object) -> ContainerState:
    base = ContainerState(created_ns=WATCHING_SINCE + S, started_ns=0, finished_ns=0,
                          restart_count=0, running=False, restarting=False, oom_killed=False,
                          exit_code=0)
    return replace(base, **changes)  # type: ignore[arg-type]


def ledger() -> Ledger:
    book = Ledger()
    book.watching_since_ns = WATCHING_SINCE
    return book


def looping(dies: int, at: int = WATCHING_SINCE + 10 * S) -> ContainerState:
    """A container with a restart policy after `dies` deaths, running again."""
    return state(started_ns=at + dies * S + S // 2, finished_ns=at + dies * S,
                 restart_count=dies, running=True, exit_code=3)


def test_deaths_the_events_never_reported_are_made_up_once() -> None:
    book = ledger()
    missed = book.compare(CID, looping(6), SETTLED)
    assert [m.action for m in missed].count("die") == 6
    assert [m.exit_code for m in missed if m.action == "die"].count(3) == 1  # the latest
    assert book.compare(CID, looping(6), SETTLED) == []


def test_real_deaths_that_arrive_after_being_made_up_are_dropped() -> None:
    book = ledger()
    book.compare(CID, looping(6), SETTLED)
    first = WATCHING_SINCE + 10 * S
    late = [book.accept(CID, "die", first + i * S + S // 100) for i in range(1, 7)]
    assert late == [False] * 6
    assert book.compare(CID, looping(6), SETTLED) == []


def test_deaths_the_events_reported_are_not_made_up() -> None:
    book = ledger()
    first = WATCHING_SINCE + 10 * S
    for i in range(1, 7):
        assert book.accept(CID, "start", first + (i - 1) * S + S // 2 + 1)
        assert book.accept(CID, "die", first + i * S + 1)
    assert book.accept(CID, "start", first + 6 * S + S // 2 + 1)
    assert book.compare(CID, looping(6), SETTLED) == []


def test_only_the_deaths_missing_from_the_events_are_made_up() -> None:
    book = ledger()
    first = WATCHING_SINCE + 10 * S
    book.accept(CID, "die", first + 6 * S + 1)  # the latest reached us, five did not
    missed = book.compare(CID, looping(6), SETTLED)
    assert [m.action for m in missed].count("die") == 5
    assert all(m.exit_code is None for m in missed if m.action == "die")


def test_a_real_death_after_the_next_start_is_a_new_exit() -> None:
    book = ledger()
    book.compare(CID, looping(1), SETTLED)
    assert book.accept(CID, "die", looping(1).started_ns + S)


def test_an_oom_kill_in_state_becomes_one_oom_and_late_reports_are_dropped() -> None:
    book = ledger()
    killed = state(started_ns=WATCHING_SINCE + 2 * S, finished_ns=WATCHING_SINCE + 3 * S,
                   oom_killed=True, exit_code=137)
    missed = book.compare(CID, killed, SETTLED)
    assert [(m.action, m.exit_code) for m in missed] == [
        ("start", None), ("oom", None), ("die", 137)]
    # cgroup v1 reports one kill many times
    assert not any(book.accept(CID, "oom", WATCHING_SINCE + 3 * S - i) for i in range(1, 4))
    assert not book.accept(CID, "die", WATCHING_SINCE + 3 * S + 1)
    assert not book.accept(CID, "start", WATCHING_SINCE + 2 * S + 1)


def test_an_oom_the_events_reported_is_not_made_up() -> None:
    book = ledger()
    book.accept(CID, "start", WATCHING_SINCE + 2 * S + 1)
    book.accept(CID, "oom", WATCHING_SINCE + 3 * S - 1)
    book.accept(CID, "die", WATCHING_SINCE + 3 * S + 1)
    killed = state(started_ns=WATCHING_SINCE + 2 * S, finished_ns=WATCHING_SINCE + 3 * S,
                   oom_killed=True, exit_code=137)
    assert book.compare(CID, killed, SETTLED) == []


def test_a_transition_newer_than_the_settled_horizon_waits_for_its_event() -> None:
    book = ledger()
    fresh = looping(1, at=SETTLED)
    assert book.compare(CID, fresh, SETTLED) == []
    assert book.accept(CID, "die", fresh.finished_ns + 1)
    assert book.accept(CID, "start", fresh.started_ns + 1)
    assert book.compare(CID, fresh, fresh.started_ns + S) == []


def test_history_from_before_remedyd_watched_is_not_replayed() -> None:
    book = ledger()
    old = replace(looping(6), created_ns=WATCHING_SINCE - S)
    assert book.compare(CID, old, SETTLED) == []
    # Its last exit's event, arriving late, is still news, and still not a new exit.
    stopped = replace(old, running=False, started_ns=old.finished_ns - S)
    other = "d00d"
    assert book.compare(other, stopped, SETTLED) == []
    assert book.accept(other, "die", stopped.finished_ns + 1)
    assert book.compare(other, stopped, SETTLED) == []


def test_a_manual_start_that_reset_the_restart_count_still_counts_a_death() -> None:
    book = ledger()
    book.compare(CID, looping(3), SETTLED)
    manual = replace(looping(3), restart_count=0, finished_ns=looping(3).started_ns + S,
                     started_ns=looping(3).started_ns + 2 * S)
    assert [m.action for m in book.compare(CID, manual, SETTLED)] == ["die", "start"]


def test_a_quick_exit_stamped_before_its_start_is_one_start_and_one_death() -> None:
    book = ledger()
    # `true` exits before dockerd stamps StartedAt, let alone logs the start event.
    ran = state(started_ns=WATCHING_SINCE + 2 * S + 1_000, finished_ns=WATCHING_SINCE + 2 * S,
                exit_code=0)
    assert book.accept(CID, "start", ran.started_ns + 2_000)
    assert book.accept(CID, "die", ran.started_ns + 30_000)
    assert book.compare(CID, ran, SETTLED) == []
    other = "d00d"
    assert [m.action for m in book.compare(other, ran, SETTLED)] == ["die", "start"]
    assert not book.accept(other, "start", ran.started_ns + 2_000)
    assert not book.accept(other, "die", ran.started_ns + 30_000)
