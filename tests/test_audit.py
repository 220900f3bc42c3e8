"""Audit log: chain integrity, tamper detection, crash recovery, write failures."""

from __future__ import annotations

import json
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.audit import GENESIS_HASH, AuditLog, AuditUnavailable, verify

T0 = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


def write_records(path: Path, count: int, *, fsync: bool = False) -> None:
    with AuditLog(path, fsync=fsync, clock=FakeClock()) as log:
        for i in range(1, count + 1):
            log.append(
                "decision",
                {"incident": f"inc-{i}", "rule": "disk-full", "action": "restart", "n": i},
            )


def lines_of(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "audit.jsonl"


def test_records_form_a_verifiable_chain(log_path: Path) -> None:
    with AuditLog(log_path, clock=FakeClock()) as log:
        first = log.append(
            "decision", {"incident": "inc-1", "guards": ["cooldown"], "trace_id": "t1"}
        )
        second = log.append("outcome", {"incident": "inc-1", "outcome": "ok"})

    assert first["seq"] == 1 and first["prev_hash"] == GENESIS_HASH
    assert second["seq"] == 2 and second["prev_hash"] == first["hash"]
    assert first["time"] == "2023-11-14T22:13:20.250000Z"
    on_disk = [json.loads(line) for line in lines_of(log_path)]
    assert on_disk == [first, second]
    assert on_disk[0]["guards"] == ["cooldown"]

    result = verify(log_path)
    assert result.ok and result.records == 2 and result.reason is None


def test_reopening_continues_the_chain(log_path: Path) -> None:
    write_records(log_path, 3)
    with AuditLog(log_path) as log:
        assert log.recovery is not None and log.recovery.records == 3
        assert log.recovery.torn_bytes == 0 and log.recovery.torn_saved_to is None
        record = log.append("lifecycle", {"event": "started"})
    assert record["seq"] == 4
    assert verify(log_path).ok
    assert verify(log_path).records == 4


def test_edited_field_is_reported_at_its_line(log_path: Path) -> None:
    write_records(log_path, 5)
    text = log_path.read_text().splitlines(keepends=True)
    assert '"action":"restart"' in text[2]
    text[2] = text[2].replace('"action":"restart"', '"action":"noop"')
    log_path.write_text("".join(text))

    result = verify(log_path)
    assert not result.ok
    assert (result.first_bad_line, result.first_bad_seq, result.records) == (3, 3, 2)
    assert result.reason == "line 3 (seq 3): hash mismatch: record was altered"


def test_deleted_record_is_reported_as_a_gap(log_path: Path) -> None:
    write_records(log_path, 5)
    lines = lines_of(log_path)
    del lines[2]
    log_path.write_bytes(b"".join(lines))

    result = verify(log_path)
    assert not result.ok
    assert (result.first_bad_line, result.first_bad_seq) == (3, 4)
    assert result.reason is not None
    assert result.reason.startswith("line 3 (seq 4): seq gap: expected seq 3")
    assert "deleted" in result.reason


def test_reordered_records_are_detected(log_path: Path) -> None:
    write_records(log_path, 5)
    lines = lines_of(log_path)
    lines[1], lines[2] = lines[2], lines[1]
    log_path.write_bytes(b"".join(lines))

    result = verify(log_path)
    assert not result.ok and result.first_bad_line == 2
    assert result.reason is not None and "expected seq 2" in result.reason


def test_replaced_record_with_valid_hash_breaks_the_chain(log_path: Path, tmp_path: Path) -> None:
    # A forger who recomputes the record's own hash is still caught by the next link.
    write_records(log_path, 3)
    other = tmp_path / "other.jsonl"
    with AuditLog(other, fsync=False) as log:
        log.append("decision", {"forged": True})
        log.append("decision", {"forged": True})
    lines = lines_of(log_path)
    lines[1] = lines_of(other)[1]
    log_path.write_bytes(b"".join(lines))

    result = verify(log_path)
    assert not result.ok and result.first_bad_line == 2
    assert result.reason is not None and "prev_hash does not match" in result.reason


def test_invalid_json_in_the_middle_is_reported(log_path: Path) -> None:
    write_records(log_path, 3)
    lines = lines_of(log_path)
    lines[1] = b"{not json\n"
    log_path.write_bytes(b"".join(lines))

    result = verify(log_path)
    assert not result.ok and result.first_bad_line == 2
    assert result.reason is not None and result.reason.startswith("line 2: invalid JSON")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    result = verify(tmp_path / "nope.jsonl")
    assert not result.ok and result.records == 0
    assert result.reason is not None and "file not found" in result.reason


def test_torn_last_line_is_detected_then_recovered(log_path: Path) -> None:
    write_records(log_path, 5)
    whole = json.dumps({"seq": 6, "time": "x", "kind": "decision", "incident": "inc-6"}).encode()
    torn = whole[: len(whole) // 2]
    with log_path.open("ab") as f:
        f.write(torn)

    result = verify(log_path)
    assert not result.ok and result.first_bad_line == 6 and result.records == 5
    assert result.reason is not None and "torn last line" in result.reason

    clock = FakeClock()
    with AuditLog(log_path, clock=clock) as log:
        recovery = log.recovery
        assert recovery is not None
        after = log.append("lifecycle", {"event": "started"})

    assert recovery.records == 5 and recovery.torn_bytes == len(torn)
    assert recovery.torn_saved_to == Path(f"{log_path}.torn-{int(T0 + 0.25)}")
    assert recovery.torn_saved_to.read_bytes() == torn

    records = [json.loads(line) for line in lines_of(log_path)]
    note = records[5]
    assert note["kind"] == "recovery" and note["seq"] == 6
    assert note["torn_bytes"] == len(torn) and note["saved_to"] == str(recovery.torn_saved_to)
    assert after["seq"] == 7
    fixed = verify(log_path)
    assert fixed.ok and fixed.records == 7


def test_garbage_last_line_with_newline_is_cut_away(log_path: Path) -> None:
    write_records(log_path, 2)
    with log_path.open("ab") as f:
        f.write(b'{"seq":3,"ti\x00\x00\n')

    assert "torn last line" in (verify(log_path).reason or "")
    with AuditLog(log_path) as log:
        assert log.recovery is not None and log.recovery.torn_bytes == 15
    assert verify(log_path).ok


def test_recovery_notes_an_altered_last_record(log_path: Path) -> None:
    write_records(log_path, 3)
    log_path.write_text(log_path.read_text().replace('"n":3', '"n":33'))
    with AuditLog(log_path) as log:
        note = log.tail(1)[0]
    assert note["kind"] == "recovery" and "seq 3" in note["last_record_problem"]
    # Only the altered record is blamed; the chain after it still links up.
    result = verify(log_path)
    assert result.first_bad_line == 3 and "hash mismatch" in (result.reason or "")


def test_caller_fields_cannot_override_chain_fields(log_path: Path) -> None:
    with AuditLog(log_path) as log:
        with pytest.raises(ValueError, match="seq"):
            log.append("decision", {"seq": 99})
        with pytest.raises(ValueError, match="hash"):
            log.append("decision", {"hash": "0" * 64, "prev_hash": "x"})
        with pytest.raises(ValueError, match="JSON"):
            log.append("decision", {"when": object()})
        record = log.append("decision", {"ok": True})
    assert record["seq"] == 1
    assert log_path.read_bytes().count(b"\n") == 1


def test_unserialisable_keys_still_verify(log_path: Path) -> None:
    # Int keys turn into strings on disk; the hash must match what is read back.
    with AuditLog(log_path) as log:
        record = log.append("decision", {"by_code": {10: "a", 2: "b"}, "pair": (1, 2)})
    assert record["by_code"] == {"10": "a", "2": "b"} and record["pair"] == [1, 2]
    assert verify(log_path).ok


def test_disk_full_raises_audit_unavailable() -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    log = AuditLog(Path("/dev/full"))
    log.open()
    try:
        with pytest.raises(AuditUnavailable) as info:
            log.append("decision", {"incident": "inc-1"})
        assert str(info.value) == (
            "audit log /dev/full: write failed: No space left on device (ENOSPC)"
        )
        assert not log.healthy and log.last_error == str(info.value)
        # Every later write fails too, loudly, rather than being dropped.
        with pytest.raises(AuditUnavailable):
            log.append("decision", {"incident": "inc-1"})
    finally:
        log.close()


def test_unopenable_path_raises_audit_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    log = AuditLog(blocker / "logs" / "audit.jsonl")
    with pytest.raises(AuditUnavailable) as info:
        log.open()
    assert str(blocker) in str(info.value) and "Not a directory" in str(info.value)
    assert not log.healthy


@pytest.fixture
def file_size_limit() -> Iterator[None]:
    """Lets a test cap file size for real; restores the limit afterwards."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Over the limit the kernel sends SIGXFSZ, which would kill pytest.
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


def test_partial_write_is_cut_back_and_chain_continues(
    log_path: Path, file_size_limit: None
) -> None:
    log = AuditLog(log_path)
    log.open()
    try:
        log.append("lifecycle", {"event": "started"})
        good_size = log_path.stat().st_size
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        # Room for only part of the next record: the kernel writes a prefix, then EFBIG.
        resource.setrlimit(resource.RLIMIT_FSIZE, (good_size + 40, hard))
        with pytest.raises(AuditUnavailable, match="File too large"):
            log.append("decision", {"incident": "inc-1", "detail": "x" * 200})
        assert not log.healthy
        assert log_path.stat().st_size == good_size

        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
        record = log.append("decision", {"incident": "inc-1"})
        assert record["seq"] == 2 and log.healthy
    finally:
        log.close()
    assert verify(log_path).ok


def test_second_writer_is_refused(log_path: Path) -> None:
    with (
        AuditLog(log_path),
        pytest.raises(AuditUnavailable, match="locked by another process"),
    ):
        AuditLog(log_path).open()


def test_tail_returns_newest_records(log_path: Path) -> None:
    write_records(log_path, 1000)  # ~130 kB: spans several read blocks
    log = AuditLog(log_path)
    assert [r["seq"] for r in log.tail(3)] == [998, 999, 1000]
    assert [r["seq"] for r in log.tail(700)] == list(range(301, 1001))
    assert len(log.tail(5000)) == 1000
    assert log.tail(0) == []

    with log_path.open("ab") as f:
        f.write(b'{"seq":1001,"ti')  # a write in progress is not a record yet
    assert log.tail(1)[0]["seq"] == 1000


def test_tail_of_missing_log_is_empty(tmp_path: Path) -> None:
    assert AuditLog(tmp_path / "none.jsonl").tail(10) == []


def test_a_recovery_note_that_could_not_be_written_is_kept_for_the_next_open(
    log_path: Path, file_size_limit: None
) -> None:
    write_records(log_path, 3)
    good_size = log_path.stat().st_size
    with log_path.open("ab") as f:
        f.write(b'{"seq":4,"ti')
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    # The torn bytes can be saved aside and cut, but the recovery record does not fit.
    resource.setrlimit(resource.RLIMIT_FSIZE, (good_size + 10, hard))
    log = AuditLog(log_path)
    with pytest.raises(AuditUnavailable, match="File too large"):
        log.open()
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))

    recovery = log.open()
    try:
        note = log.tail(1)[0]
    finally:
        log.close()
    assert recovery.torn_bytes == 12
    assert note["kind"] == "recovery" and note["torn_bytes"] == 12
    assert Path(note["saved_to"]).read_bytes() == b'{"seq":4,"ti'
    assert verify(log_path).ok


def test_a_failed_open_can_be_retried(log_path: Path) -> None:
    holder = AuditLog(log_path)
    holder.open()
    second = AuditLog(log_path)
    with pytest.raises(AuditUnavailable, match="locked"):
        second.open()
    holder.close()
    second.open()
    try:
        # Healthy at once: the executor refuses to act, and so to write, while it is not.
        assert second.healthy
        assert second.append("lifecycle", {"event": "started"})["seq"] == 1
    finally:
        second.close()
