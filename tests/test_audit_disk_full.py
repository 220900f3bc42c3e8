"""A really full filesystem: the audit log fails loudly, then carries on once there is room."""

from __future__ import annotations

import errno
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon.audit import AuditLog, AuditUnavailable, verify
from daemon.cli import main
from tests.test_audit import write_records

ENOSPC_MESSAGE = "No space left on device (ENOSPC)"


@pytest.fixture
def small_disk(tmpfs: Callable[[str], Path]) -> Path:
    """A 64 kB tmpfs: a real ENOSPC without filling the machine's disk."""
    return tmpfs("64k")


def fill(disk: Path) -> Path:
    """Write a filler file until the filesystem has no free block left."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as f:
        for _ in range(1024):  # 64 kB at most in 4 kB steps, with room to spare
            try:
                f.write(b"\0" * 4096)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
        else:
            raise AssertionError(f"{disk} never filled up")
    return filler


def test_append_fails_on_a_full_disk_then_succeeds_once_there_is_room(
    small_disk: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = small_disk / "audit.jsonl"
    log = AuditLog(path)
    log.open()
    try:
        log.append("lifecycle", {"event": "started"})
        filler = fill(small_disk)
        good_size = path.stat().st_size

        # Larger than a page, so the slack at the end of the file cannot hold it.
        with pytest.raises(AuditUnavailable) as info:
            log.append("decision", {"incident": "inc-1", "decision": "act", "pad": "x" * 6000})
        assert str(info.value) == f"audit log {path}: write failed: {ENOSPC_MESSAGE}"
        assert not log.healthy
        assert path.stat().st_size == good_size  # the partial line was cut back

        filler.unlink()
        record = log.append("decision", {"incident": "inc-1", "decision": "act"})
        log.append("outcome", {"incident": "inc-1", "outcome": "success"})
        assert record["seq"] == 2 and log.healthy and log.checkpoint_error is None
    finally:
        log.close()

    assert main(["audit", "verify", str(path)]) == 0
    out, err = capsys.readouterr()
    assert f"checkpoint: {path}.checkpoint (seq 3)" in out
    assert "ok: 3 records, chain intact" in out and err == ""


def test_a_checkpoint_that_cannot_be_written_is_reported_and_caught_up(small_disk: Path) -> None:
    path = small_disk / "audit.jsonl"
    with AuditLog(path) as log:
        log.append("lifecycle", {"event": "started"})
        filler = fill(small_disk)
        # A small record fits the file's last page; the checkpoint needs a new one.
        log.append("decision", {"incident": "inc-1"})
        assert log.checkpoint_error is not None and ENOSPC_MESSAGE in log.checkpoint_error
        assert not list(small_disk.glob("*.tmp"))  # no half-written temporary left
        filler.unlink()
        log.append("decision", {"incident": "inc-2"})
        assert log.checkpoint_error is None
    assert verify(path, checkpoint=Path(f"{path}.checkpoint")).ok


def test_open_fails_on_a_full_disk_and_can_be_retried(small_disk: Path) -> None:
    path = small_disk / "audit.jsonl"
    write_records(path, 3)
    with path.open("ab") as f:
        f.write(b'{"seq":4,"ti')  # a torn line: recovery must save it aside first
    filler = fill(small_disk)

    log = AuditLog(path)
    with pytest.raises(AuditUnavailable, match="No space left on device"):
        log.open()
    assert not log.healthy

    filler.unlink()
    recovery = log.open()
    try:
        assert recovery.torn_bytes == 12 and log.healthy
        assert log.tail(1)[0]["kind"] == "recovery"
    finally:
        log.close()
    assert verify(path, checkpoint=Path(f"{path}.checkpoint")).ok
