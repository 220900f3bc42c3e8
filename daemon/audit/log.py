"""Append-only, hash-chained audit log stored as JSON Lines.

Every record carries ``prev_hash`` (the previous record's ``hash``) and its own
``hash`` over its canonical JSON, so an edited, deleted or reordered record shows
up in :func:`daemon.audit.verify.verify`. Stdlib only: the CLI imports this
without loading the daemon.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    compare_checkpoint,
    default_checkpoint_path,
    read_checkpoint,
    write_checkpoint,
)
from .records import (
    GENESIS_HASH,
    RESERVED_KEYS,
    canonical,
    describe_os_error,
    format_time,
    parse_record,
    record_hash,
    record_time,
)

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "AuditUnavailable",
    "Recovery",
    "canonical",
    "describe_os_error",
    "format_time",
    "iter_lines_backwards",
    "parse_record",
    "record_hash",
    "record_time",
]

_BLOCK = 64 * 1024


class AuditUnavailable(Exception):
    """The audit log cannot be opened or written; the message names path and OS error."""

    def __init__(self, message: str, path: Path, os_error: OSError | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.os_error = os_error


@dataclass(frozen=True)
class Recovery:
    """What :meth:`AuditLog.open` found and repaired.

    ``records`` is the seq of the last intact record already in the file (so the
    record count of a clean log), not counting a recovery record open() adds.
    ``checkpoint_problem`` says how the log disagrees with its checkpoint (cut
    tail, rewritten record, unreadable checkpoint): the daemon should log it as
    an error. ``missing_tail`` is the first and last seq cut from the tail.
    """

    records: int
    torn_bytes: int
    torn_saved_to: Path | None
    missing_tail: tuple[int, int] | None = None
    checkpoint_problem: str | None = None


def iter_lines_backwards(f: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """Yield ``(offset, line)`` from ``end`` towards the start, reading blockwise.

    Lines keep their trailing newline, so a torn final line is recognisable by
    its lack of one. Reading backwards keeps open() and tail() cheap on huge logs.
    """
    pos = end
    buf = b""  # the bytes at [pos, pos + len(buf)) not yet yielded
    while True:
        # The last byte is skipped: it may be this line's own terminator.
        cut = buf.rfind(b"\n", 0, len(buf) - 1) if buf else -1
        if cut >= 0:
            yield pos + cut + 1, buf[cut + 1 :]
            buf = buf[: cut + 1]
            continue
        if pos == 0:
            if buf:
                yield 0, buf
            return
        size = min(_BLOCK, pos)
        pos -= size
        f.seek(pos)
        chunk = f.read(size)
        if len(chunk) != size:  # the file shrank under us; stop rather than misplace lines
            return
        buf = chunk + buf


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    # Makes a newly created file's directory entry survive a power cut.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AuditLog:
    """Single-writer, hash-chained JSON Lines audit log.

    ``append`` is synchronous and durable (with ``fsync=True``) before it returns,
    so a decision is on disk before the action it records is taken.
    """

    def __init__(
        self,
        path: Path,
        *,
        fsync: bool = True,
        clock: Callable[[], float] = time.time,
        checkpoint: Path | None = None,
        scrub: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None,
    ) -> None:
        self._path = Path(path)
        # Masks secrets in every record before it is chained (the daemon's redaction).
        self._scrub = scrub
        self._checkpoint = Path(checkpoint) if checkpoint else default_checkpoint_path(self._path)
        self._checkpoint_error: str | None = None
        # With a scheduler (the event loop's call_soon), the checkpoint is written once the
        # caller yields, off the path between an intent and its action's request, and once
        # for every burst of appends; without one, after every append.
        self._schedule: Callable[[Callable[[], None]], object] | None = None
        self._checkpoint_pending = False
        # What a failed open() found and repaired but could not record; the next
        # open() writes it, since the repair (a torn line cut away) is not repeated.
        self._pending: tuple[Recovery, dict[str, Any]] | None = None
        self._fsync = fsync
        self._clock = clock
        self._fd: int | None = None
        self._regular = False
        self._size = 0  # end of the last good record: where a failed write is cut back to
        self._dirty_tail = False  # a failed write left bytes that could not be cut yet
        self._seq = 0
        self._prev_hash = GENESIS_HASH
        self._head_time: str | None = None
        self._healthy = True
        self._last_error: str | None = None
        self._recovery: Recovery | None = None
        # The chain breaks if two threads interleave; cheap insurance against executors.
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path

    @property
    def healthy(self) -> bool:
        """False after a failed open or write, until the next successful append."""
        return self._healthy

    @property
    def last_error(self) -> str | None:
        """The most recent failure; kept after recovery so status can show it."""
        return self._last_error

    @property
    def recovery(self) -> Recovery | None:
        """What the last open() found; lets ``with AuditLog(...)`` users see it."""
        return self._recovery

    @property
    def last_seq(self) -> int:
        """Seq of the newest record (0 for an empty log): the checkpoint to export."""
        return self._seq

    @property
    def last_hash(self) -> str:
        """Hash of the newest record (the genesis hash for an empty log)."""
        return self._prev_hash

    @property
    def checkpoint_path(self) -> Path:
        return self._checkpoint

    @property
    def checkpoint_error(self) -> str | None:
        """Why the checkpoint is behind the log, until a later write catches it up."""
        return self._checkpoint_error

    def open(self) -> Recovery:
        """Open for appending, repairing a torn tail; callable again after it failed."""
        with self._lock:
            if self._fd is not None:
                raise RuntimeError(f"audit log {self._path} is already open")
            fd = self._open_fd()
            try:
                recovery, note = self._load(fd)
                stored = self._check_checkpoint(note) if self._regular else None
                cut = (note["missing_from"], note["missing_to"]) if "missing_from" in note else None
                recovery = replace(
                    recovery, missing_tail=cut, checkpoint_problem=note.get("checkpoint_problem")
                )
                if self._pending is not None:
                    recovery, note = _merge_pending(self._pending, recovery, note)
            except OSError as exc:
                os.close(fd)
                raise self._fail("recovery", exc) from exc
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            self._recovery = recovery
            self._healthy = True
            if note:
                try:
                    self._append_locked("recovery", note)
                except AuditUnavailable:
                    self._pending = (recovery, note)
                    self._close_locked()
                    raise
            elif self._regular and self._seq and stored != Checkpoint(self._seq, self._prev_hash):
                self._save_checkpoint()  # adopt a log that has none, or one that lagged
            self._pending = None
            return recovery

    def append(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Write one record and return it exactly as stored (hash included)."""
        if not isinstance(kind, str) or not kind:
            raise ValueError("audit kind must be a non-empty string")
        clash = RESERVED_KEYS.intersection(fields)
        if clash:
            names = ", ".join(sorted(clash))
            raise ValueError(f"audit fields may not set reserved key(s): {names}")
        if self._scrub is not None:
            fields = self._scrub(fields)
        with self._lock:
            return self._append_locked(kind, fields)

    def tail(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, oldest first; unparseable lines are skipped."""
        if limit <= 0:
            return []
        records = list(itertools.islice(self.iter_backwards(), limit))
        records.reverse()
        return records

    def iter_backwards(self) -> Iterator[dict[str, Any]]:
        """Every record, newest first, read lazily; unparseable lines are skipped."""
        try:
            # Checked before opening: opening a FIFO for reading would block.
            if not stat.S_ISREG(os.stat(self._path).st_mode):
                return
            with open(self._path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                for _, line in iter_lines_backwards(f, size):
                    # A line without newline is a write in progress or torn.
                    record = parse_record(line) if line.endswith(b"\n") else None
                    if record is not None:
                        yield record
        except FileNotFoundError:
            return
        except OSError as exc:
            message = f"audit log {self._path}: read failed: {describe_os_error(exc)}"
            raise AuditUnavailable(message, self._path, exc) from exc

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def __enter__(self) -> AuditLog:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------

    def _fail(self, action: str, exc: OSError) -> AuditUnavailable:
        message = f"audit log {self._path}: {action} failed: {describe_os_error(exc)}"
        self._healthy = False
        self._last_error = message
        return AuditUnavailable(message, self._path, exc)

    def _open_fd(self) -> int:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            created = not self._path.exists()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            fd = os.open(self._path, flags, 0o640)
        except OSError as exc:
            raise self._fail("open", exc) from exc
        try:
            # Two writers would fork the chain, so a second daemon must not start.
            # A device (/dev/full in tests, a pipe) has no chain to fork, and its lock
            # would be shared with every other opener of the same device.
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            message = f"audit log {self._path}: locked by another process"
            self._healthy = False
            self._last_error = message
            raise AuditUnavailable(message, self._path, exc) from exc
        except OSError as exc:
            os.close(fd)
            raise self._fail("lock", exc) from exc
        if created and self._fsync:
            try:
                _fsync_dir(self._path.parent)
            except OSError as exc:
                os.close(fd)
                raise self._fail("open", exc) from exc
        return fd

    def _load(self, fd: int) -> tuple[Recovery, dict[str, Any]]:
        """Find where the chain continues; cut away a torn last line."""
        self._regular = stat.S_ISREG(os.fstat(fd).st_mode)
        self._seq, self._prev_hash, self._size, self._dirty_tail = 0, GENESIS_HASH, 0, False
        self._head_time = None
        if not self._regular:
            # A device or pipe (e.g. /dev/full in tests) has no history to read back.
            return Recovery(0, 0, None), {}
        with open(self._path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            lines = iter_lines_backwards(f, size)
            torn_start: int | None = None
            last: dict[str, Any] | None = None
            newest = next(lines, None)
            if newest is not None:
                start, line = newest
                last = parse_record(line) if line.endswith(b"\n") else None
                if last is None:
                    torn_start = start
                    # Corruption further up is verify()'s to report, not ours to repair.
                    last = next((r for _, ln in lines if (r := parse_record(ln)) is not None), None)
            torn = b""
            if torn_start is not None:
                f.seek(torn_start)
                torn = f.read(size - torn_start)
        note: dict[str, Any] = {}
        saved_to: Path | None = None
        if torn_start is not None:
            # Save before truncating so a crash in between loses nothing.
            saved_to = self._save_torn(torn)
            os.ftruncate(fd, torn_start)
            if self._fsync:
                os.fsync(fd)
            size = torn_start
            note.update(
                reason="torn last line after an unclean shutdown was cut away",
                torn_bytes=len(torn),
                saved_to=str(saved_to),
            )
        if last is not None:
            self._seq = last["seq"]
            # Chain from the stored hash even if it is wrong, so verify() blames
            # only the altered record and not every record after it.
            self._prev_hash = last["hash"]
            self._head_time = last.get("time") if isinstance(last.get("time"), str) else None
            if record_hash(last) != last["hash"]:
                note["last_record_problem"] = (
                    f"record seq {last['seq']} fails its hash check; "
                    "chain continued from its stored hash"
                )
        self._size = size
        recovery = Recovery(self._seq, len(torn), saved_to)
        return recovery, note

    def _check_checkpoint(self, note: dict[str, Any]) -> Checkpoint | None:
        """Compare the loaded log with its checkpoint, noting any problem in ``note``."""
        try:
            stored = read_checkpoint(self._checkpoint)
        except CheckpointError as exc:
            note["checkpoint_problem"] = str(exc)
            return None
        if stored is None:
            return None
        problem, missing = compare_checkpoint(stored, self._checkpoint, self._seq, self._hash_at)
        if problem is not None:
            note.update(checkpoint_problem=problem, checkpoint=str(self._checkpoint))
        if missing is not None:
            note.update(missing_from=missing[0], missing_to=missing[1])
        return stored

    def _hash_at(self, seq: int) -> str | None:
        """Stored hash of record ``seq``, read back from the end (the checkpoint is near it)."""
        if seq == self._seq:
            return self._prev_hash
        with open(self._path, "rb") as f:
            for _, line in iter_lines_backwards(f, self._size):
                record = parse_record(line)
                if record is None:
                    continue
                if record["seq"] == seq:
                    return str(record["hash"])
                if record["seq"] < seq:
                    return None
        return None

    def _save_checkpoint(self) -> None:
        """Point the checkpoint at the newest record; a failure is kept, not raised.

        The record is already durable, so failing the append would misreport it;
        a checkpoint that lags the log is still consistent and catches up next time.
        """
        head = Checkpoint(self._seq, self._prev_hash)
        try:
            write_checkpoint(self._checkpoint, head, time=self._head_time, fsync=self._fsync)
        except OSError as exc:
            self._checkpoint_error = (
                f"audit checkpoint {self._checkpoint}: write failed: {describe_os_error(exc)}"
            )
        else:
            self._checkpoint_error = None

    def _save_torn(self, data: bytes) -> Path:
        base = f"{self._path}.torn-{int(self._clock())}"
        for n in range(1000):
            candidate = Path(base if n == 0 else f"{base}.{n}")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o640)
            except FileExistsError:
                continue
            try:
                _write_all(fd, data)
                if self._fsync:
                    os.fsync(fd)
            except OSError:
                os.unlink(candidate)  # an empty or partial copy would mislead
                raise
            finally:
                os.close(fd)
            if self._fsync:
                _fsync_dir(candidate.parent)
            return candidate
        raise FileExistsError(errno.EEXIST, "no free name for torn bytes", base)

    def _append_locked(self, kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        fd = self._fd
        if fd is None:
            raise RuntimeError(f"audit log {self._path} is not open")
        draft = {
            "seq": self._seq + 1,
            "time": format_time(self._clock()),
            "kind": kind,
            **fields,
            "prev_hash": self._prev_hash,
        }
        try:
            # Hash what verify() will read back: the round trip turns tuples into
            # lists and int keys into strings, which would change canonical order.
            plain = json.dumps(draft, ensure_ascii=False, allow_nan=False)
            record: dict[str, Any] = json.loads(plain)
            record["hash"] = record_hash(record)
            line = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise ValueError(f"audit fields are not JSON-serialisable: {exc}") from exc
        try:
            if self._dirty_tail:
                os.ftruncate(fd, self._size)
                self._dirty_tail = False
            _write_all(fd, line)
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            self._cut_back(fd)
            raise self._fail("write", exc) from exc
        self._size += len(line)
        self._seq = record["seq"]
        self._prev_hash = record["hash"]
        self._head_time = record["time"]
        self._healthy = True
        if self._regular:
            if self._schedule is None:
                self._save_checkpoint()
            elif not self._checkpoint_pending:
                self._checkpoint_pending = True
                self._schedule(self.flush_checkpoint)
        return record

    def schedule_checkpoints(self, schedule: Callable[[Callable[[], None]], object]) -> None:
        """Write the checkpoint through `schedule` (e.g. loop.call_soon) instead of inline."""
        self._schedule = schedule

    def flush_checkpoint(self) -> None:
        """Write a checkpoint that appends left pending."""
        with self._lock:
            if self._checkpoint_pending:
                self._checkpoint_pending = False
                if self._fd is not None:
                    self._save_checkpoint()

    def _cut_back(self, fd: int) -> None:
        """Drop a partial write so the next record follows a valid chain."""
        if not self._regular:
            return
        try:
            os.ftruncate(fd, self._size)
            self._dirty_tail = False
        except OSError:
            self._dirty_tail = True  # retried before the next write

    def _close_locked(self) -> None:
        if self._fd is not None:
            if self._checkpoint_pending:
                self._checkpoint_pending = False
                self._save_checkpoint()
            fd, self._fd = self._fd, None
            os.close(fd)  # also releases the flock


def _merge_pending(
    pending: tuple[Recovery, dict[str, Any]], recovery: Recovery, note: dict[str, Any]
) -> tuple[Recovery, dict[str, Any]]:
    """Fold what an earlier, failed open() repaired into this open()'s findings."""
    old_recovery, old_note = pending
    if recovery.torn_bytes == 0 and old_recovery.torn_bytes:
        recovery = replace(
            recovery, torn_bytes=old_recovery.torn_bytes, torn_saved_to=old_recovery.torn_saved_to
        )
    # This open's comparison with the checkpoint is the current truth; keep the rest.
    return recovery, {**old_note, **note}
