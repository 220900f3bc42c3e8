"""Check an audit log's hash chain from the first record to the last.

Streams the file line by line, so a large log costs time but not memory.
Stops at the first problem: everything after a break is unanchored anyway.
With a checkpoint it also sees a cut tail, which the chain alone cannot. Open
intents and holes the daemon recorded on open are warnings, not failures.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .checkpoint import Checkpoint, CheckpointError, compare_checkpoint, read_checkpoint
from .intents import intent_incident, outcome_incident
from .records import GENESIS_HASH, describe_os_error, record_hash

# The writer puts seq first, so even a torn or mangled line usually names its seq.
_SEQ_PREFIX = re.compile(rb'^\{"seq":(\d+)')
_TEXT_FIELDS = ("time", "kind", "prev_hash", "hash")


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    records: int  # records that verified before the first problem (all of them if ok)
    first_bad_seq: int | None
    first_bad_line: int | None
    reason: str | None
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    checkpoint: Checkpoint | None = None  # the checkpoint compared against, if any
    open_intents: tuple[tuple[int, str], ...] = ()  # (seq, incident), oldest first
    warnings: tuple[str, ...] = ()


def verify(path: Path, *, checkpoint: Path | None = None) -> VerifyResult:
    """Check the chain, and with ``checkpoint`` that no record was cut from the end."""
    path = Path(path)
    stored: Checkpoint | None = None
    if checkpoint is not None:
        try:
            stored = read_checkpoint(checkpoint)
        except CheckpointError as exc:
            return _unreadable(str(exc))
        if stored is None:
            return _unreadable(f"checkpoint {checkpoint}: file not found")
    try:
        with open(path, "rb") as f:
            # A device such as /dev/zero would never yield a line.
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return _unreadable(f"{path}: not a regular file")
            walk = _Walk(watch_seq=stored.seq if stored else None)
            bad = walk.run(f)
    except FileNotFoundError:
        return _unreadable(f"{path}: file not found")
    except OSError as exc:
        return _unreadable(f"{path}: cannot read: {describe_os_error(exc)}")
    if bad is None and stored is not None and checkpoint is not None:
        problem, _ = compare_checkpoint(
            stored, checkpoint, walk.last_seq, lambda seq: walk.watched_hash
        )
        if problem is not None:
            bad = _Bad(problem, None)
    return VerifyResult(
        ok=bad is None,
        records=walk.verified,
        first_bad_seq=bad.seq if bad else None,
        first_bad_line=walk.bad_line,
        reason=bad.reason if bad else None,
        last_seq=walk.last_seq,
        last_hash=walk.last_hash,
        checkpoint=stored,
        open_intents=tuple(sorted((seq, incident) for incident, seq in walk.pending.items())),
        warnings=tuple(walk.warnings),
    )


def _unreadable(reason: str) -> VerifyResult:
    return VerifyResult(False, 0, None, None, reason)


class _Bad(Exception):
    def __init__(self, reason: str, seq: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


@dataclass
class _Walk:
    """One forward pass: the chain, the hash at the checkpoint's seq, open intents."""

    watch_seq: int | None
    verified: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS_HASH
    watched_hash: str | None = None
    bad_line: int | None = None
    pending: dict[str, int] = field(default_factory=dict)  # incident -> seq of its intent
    warnings: list[str] = field(default_factory=list)

    def run(self, f: BinaryIO) -> _Bad | None:
        line_no = 0
        upcoming = f.readline()
        while upcoming:
            # One line of lookahead tells whether a bad line is the last one (torn).
            line, upcoming = upcoming, f.readline()
            line_no += 1
            try:
                record = _parse(line, line_no, is_last=not upcoming)
                self._link(record, f"line {line_no} (seq {record['seq']})")
            except _Bad as bad:
                self.bad_line = line_no
                return bad
            self._note(record)
        return None

    def _link(self, record: dict[str, Any], where: str) -> None:
        seq: int = record["seq"]
        expected_seq = self.last_seq + 1
        if record_hash(record) != record["hash"]:
            raise _Bad(f"{where}: hash mismatch: record was altered", seq)
        if seq > expected_seq:
            missing = seq - expected_seq
            raise _Bad(
                f"{where}: seq gap: expected seq {expected_seq}, "
                f"{missing} record(s) deleted or moved",
                seq,
            )
        if seq < expected_seq:
            raise _Bad(
                f"{where}: seq out of order: expected seq {expected_seq}, "
                "record reordered or duplicated",
                seq,
            )
        if record["prev_hash"] != self.last_hash:
            raise _Bad(
                f"{where}: prev_hash does not match the previous record's hash: "
                "chain broken (record replaced or inserted)",
                seq,
            )

    def _note(self, record: dict[str, Any]) -> None:
        seq: int = record["seq"]
        self.verified += 1
        self.last_seq, self.last_hash = seq, record["hash"]
        if seq == self.watch_seq:
            self.watched_hash = record["hash"]
        if (promised := intent_incident(record)) is not None:
            self.pending.setdefault(promised, seq)
        elif (done := outcome_incident(record)) is not None:
            self.pending.pop(done, None)
        elif record["kind"] == "recovery" and "checkpoint_problem" in record:
            self.warnings.append(_recovered_hole(record))


def _recovered_hole(record: dict[str, Any]) -> str:
    """A warning for what the daemon found missing when it opened the log."""
    first, last = record.get("missing_from"), record.get("missing_to")
    if isinstance(first, int) and isinstance(last, int):
        return (
            f"seq {record['seq']}: records {first}..{last} were missing from the tail "
            "when the log was opened"
        )
    return f"seq {record['seq']}: when the log was opened: {record['checkpoint_problem']}"


def _parse(line: bytes, line_no: int, *, is_last: bool) -> dict[str, Any]:
    match = _SEQ_PREFIX.match(line)
    guessed_seq = int(match.group(1)) if match else None
    where = f"line {line_no}" + (f" (seq {guessed_seq})" if guessed_seq is not None else "")
    if not line.endswith(b"\n"):
        # Only the final line can lack a newline.
        raise _Bad(
            f"{where}: torn last line: {len(line)} bytes without a trailing newline "
            "(unclean shutdown?)",
            guessed_seq,
        )
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        # A bad final line is what a crash mid-write leaves; open() cuts it away.
        torn = "torn last line: " if is_last else ""
        problem = f"invalid JSON ({exc.msg} at column {exc.colno})"
        raise _Bad(f"{where}: {torn}{problem}", guessed_seq) from exc
    except (ValueError, RecursionError) as exc:  # bad UTF-8, absurd nesting
        raise _Bad(f"{where}: invalid JSON ({exc})", guessed_seq) from exc
    if not isinstance(obj, dict):
        raise _Bad(f"{where}: not a JSON object", guessed_seq)
    seq = obj.get("seq")
    if type(seq) is not int:  # bool is an int subclass
        raise _Bad(f"{where}: missing or non-integer seq", guessed_seq)
    for key in _TEXT_FIELDS:
        if not isinstance(obj.get(key), str):
            raise _Bad(f"line {line_no} (seq {seq}): missing or non-string {key!r}", seq)
    return obj
