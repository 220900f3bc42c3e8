"""Audit checkpoint: a cut tail, which the hash chain alone cannot see, is reported."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.audit import AuditLog, verify
from daemon.cli import main
from tests.test_audit import FakeClock, lines_of, write_records


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


def checkpoint_of(log_path: Path) -> Path:
    return Path(f"{log_path}.checkpoint")


def cut_last_lines(path: Path, k: int) -> None:
    path.write_bytes(b"".join(lines_of(path)[:-k]))


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["audit", "verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_append_moves_the_checkpoint_to_the_newest_record(log_path: Path) -> None:
    with AuditLog(log_path, clock=FakeClock()) as log:
        assert log.last_seq == 0
        log.append("lifecycle", {"event": "started"})
        last = log.append("decision", {"incident": "inc-1", "decision": "suppressed"})
        assert (log.last_seq, log.last_hash) == (2, last["hash"])
        stored = json.loads(checkpoint_of(log_path).read_text())
        assert (stored["seq"], stored["hash"]) == (2, last["hash"])
    # Replaced by rename, so no temporary file is left next to it.
    assert sorted(p.name for p in log_path.parent.iterdir()) == [
        "audit.jsonl",
        "audit.jsonl.checkpoint",
    ]


def test_deleting_the_newest_records_fails_verify(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 10)
    cut_last_lines(log_path, 3)
    # The chain that is left is intact: only the checkpoint can tell.
    assert verify(log_path).ok

    result = verify(log_path, checkpoint=checkpoint_of(log_path))
    assert not result.ok and result.records == 7
    assert result.reason == (
        f"log ends at seq 7 but checkpoint {checkpoint_of(log_path)} records seq 10: "
        "records 8..10 were cut from the tail"
    )

    code, out, err = run_verify(capsys, str(log_path))
    assert code == 1
    assert f"checkpoint: {checkpoint_of(log_path)} (seq 10)" in out
    assert "records 8..10 were cut from the tail" in err


def test_explicit_checkpoint_is_used(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 4)
    shipped = tmp_path / "offhost.checkpoint"
    shipped.write_bytes(checkpoint_of(log_path).read_bytes())
    cut_last_lines(log_path, 1)
    checkpoint_of(log_path).unlink()  # an intruder removed the local one

    code, _, err = run_verify(capsys, str(log_path), "--checkpoint", str(shipped))
    assert code == 1 and "records 4..4 were cut from the tail" in err


def test_a_rewritten_record_at_the_checkpoint_seq_fails_verify(
    log_path: Path, tmp_path: Path
) -> None:
    write_records(log_path, 5)
    kept = checkpoint_of(log_path).read_bytes()
    # Same length, a valid chain, but not the log the checkpoint was taken of.
    log_path.unlink()
    checkpoint_of(log_path).unlink()
    with AuditLog(log_path, fsync=False) as log:
        for n in range(6):
            log.append("decision", {"forged": n})
    checkpoint_of(log_path).write_bytes(kept)

    result = verify(log_path, checkpoint=checkpoint_of(log_path))
    assert not result.ok
    assert result.reason is not None
    assert result.reason.startswith("record seq 5 has hash ")
    assert f"but checkpoint {checkpoint_of(log_path)} records " in result.reason
    assert "log rewritten" in result.reason


def test_without_a_checkpoint_verify_says_none_was_used(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 2)
    checkpoint_of(log_path).unlink()
    code, out, _ = run_verify(capsys, str(log_path))
    assert code == 0
    assert f"checkpoint: none ({checkpoint_of(log_path)} does not exist)" in out
    assert "ok: 2 records, chain intact" in out


def test_a_missing_explicit_checkpoint_is_an_error(
    log_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 2)
    code, _, err = run_verify(capsys, str(log_path), "--checkpoint", str(tmp_path / "nope"))
    assert code == 1 and f"{tmp_path / 'nope'}: file not found" in err


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "not a JSON object"),
        (b"{nope", "not a JSON object"),
        (b'{"seq": "7", "hash": "ab"}', "'seq' must be a non-negative integer"),
        (b'{"seq": 7, "hash": 3}', "'hash' must be 64 hex digits"),
    ],
)
def test_a_malformed_checkpoint_is_named_not_a_crash(
    log_path: Path, content: bytes, problem: str
) -> None:
    write_records(log_path, 3)
    checkpoint_of(log_path).write_bytes(content)

    result = verify(log_path, checkpoint=checkpoint_of(log_path))
    assert not result.ok
    assert result.reason == f"checkpoint {checkpoint_of(log_path)}: {problem}"

    with AuditLog(log_path) as log:
        recovery = log.recovery
        note = log.tail(1)[0]
    assert recovery is not None and recovery.checkpoint_problem is not None
    assert problem in recovery.checkpoint_problem
    assert note["kind"] == "recovery" and problem in note["checkpoint_problem"]
    # The unreadable checkpoint was replaced by a good one.
    assert verify(log_path, checkpoint=checkpoint_of(log_path)).ok


def test_open_behind_the_checkpoint_records_the_missing_tail(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 10)
    cut_last_lines(log_path, 3)

    with AuditLog(log_path, clock=FakeClock()) as log:
        recovery = log.recovery
        note = log.tail(1)[0]
        after = log.append("lifecycle", {"event": "started"})

    assert recovery is not None and recovery.missing_tail == (8, 10)
    assert recovery.checkpoint_problem == (
        f"log ends at seq 7 but checkpoint {checkpoint_of(log_path)} records seq 10: "
        "records 8..10 were cut from the tail"
    )
    assert note["kind"] == "recovery" and note["seq"] == 8
    assert (note["missing_from"], note["missing_to"]) == (8, 10)
    assert after["seq"] == 9

    # The hole is now part of the record: verify passes but keeps saying so.
    code, _, err = run_verify(capsys, str(log_path))
    assert code == 0
    assert "warning: seq 8: records 8..10 were missing from the tail when the log was opened" in (
        err
    )


def test_a_deleted_log_is_a_missing_tail_from_seq_1(log_path: Path) -> None:
    write_records(log_path, 4)
    log_path.unlink()
    with AuditLog(log_path) as log:
        assert log.recovery is not None and log.recovery.missing_tail == (1, 4)
        assert log.last_seq == 1
    assert verify(log_path, checkpoint=checkpoint_of(log_path)).ok


def test_open_notes_a_record_that_differs_from_the_checkpoint(log_path: Path) -> None:
    write_records(log_path, 3)
    kept = checkpoint_of(log_path).read_bytes()
    log_path.unlink()
    checkpoint_of(log_path).unlink()
    with AuditLog(log_path, fsync=False) as log:  # another chain, longer than the first
        for n in range(5):
            log.append("decision", {"forged": n})
    checkpoint_of(log_path).write_bytes(kept)

    with AuditLog(log_path) as log:
        recovery = log.recovery
        note = log.tail(1)[0]
    assert recovery is not None and recovery.missing_tail is None
    assert recovery.checkpoint_problem is not None
    assert recovery.checkpoint_problem.startswith("record seq 3 has hash ")
    assert note["kind"] == "recovery" and note["seq"] == 6


def test_a_checkpoint_behind_the_log_is_not_a_problem(log_path: Path) -> None:
    # A crash between the record's fsync and the checkpoint's rename leaves this.
    write_records(log_path, 3)
    kept = checkpoint_of(log_path).read_bytes()
    with AuditLog(log_path) as log:
        log.append("decision", {"incident": "inc-4"})
    checkpoint_of(log_path).write_bytes(kept)

    assert verify(log_path, checkpoint=checkpoint_of(log_path)).ok
    with AuditLog(log_path) as log:
        assert log.recovery is not None and log.recovery.checkpoint_problem is None
        assert log.tail(1)[0]["seq"] == 4  # no recovery record
    assert json.loads(checkpoint_of(log_path).read_text())["seq"] == 4


def test_torn_line_recovery_still_verifies_with_its_checkpoint(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_records(log_path, 5)
    with log_path.open("ab") as f:
        f.write(b'{"seq":6,"time":"2023-11-14T22:1')  # the crash came mid-write

    with AuditLog(log_path, clock=FakeClock()) as log:
        assert log.recovery is not None and log.recovery.torn_bytes > 0
        assert log.recovery.checkpoint_problem is None
        log.append("lifecycle", {"event": "started"})

    result = verify(log_path, checkpoint=checkpoint_of(log_path))
    assert result.ok and result.records == 7 and result.warnings == ()
    code, out, err = run_verify(capsys, str(log_path))
    assert code == 0 and err == ""
    assert "ok: 7 records, chain intact" in out


def test_a_scheduled_checkpoint_is_written_once_per_burst_and_on_close(tmp_path: Path) -> None:
    from daemon.audit.checkpoint import read_checkpoint

    later: list[Callable[[], None]] = []
    log = AuditLog(tmp_path / "audit.jsonl")
    log.schedule_checkpoints(later.append)
    log.open()
    before = read_checkpoint(log.checkpoint_path)
    for n in range(3):
        log.append("decision", {"n": n})
    # The burst is on disk; its checkpoint waits for the caller to yield, once.
    assert read_checkpoint(log.checkpoint_path) == before
    assert len(later) == 1
    later.pop()()
    stored = read_checkpoint(log.checkpoint_path)
    assert stored is not None and stored.seq == log.last_seq
    log.append("decision", {"n": 3})
    log.close()  # a checkpoint still pending is written on close
    stored = read_checkpoint(log.checkpoint_path)
    assert stored is not None and stored.seq == 4
    assert verify(tmp_path / "audit.jsonl").ok
