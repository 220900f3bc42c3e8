"""Check an audit log's hash chain from the first record to the last.

Streams the file line by line, so a large log costs time but not memory.
Stops at the first problem: everything after a break is unanchored anyway.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .log import GENESIS_HASH, describe_os_error, record_hash

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


def verify(path: Path) -> VerifyResult:
    path = Path(path)
    try:
        with open(path, "rb") as f:
            # A device such as /dev/zero would never yield a line.
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return _unreadable(f"{path}: not a regular file")
            return _verify_stream(f)
    except FileNotFoundError:
        return _unreadable(f"{path}: file not found")
    except OSError as exc:
        return _unreadable(f"{path}: cannot read: {describe_os_error(exc)}")


def _unreadable(reason: str) -> VerifyResult:
    return VerifyResult(False, 0, None, None, reason)


class _Bad(Exception):
    def __init__(self, reason: str, seq: int | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq


def _verify_stream(f: BinaryIO) -> VerifyResult:
    expected_seq = 1
    prev_hash = GENESIS_HASH
    verified = 0
    line_no = 0
    upcoming = f.readline()
    while upcoming:
        # One line of lookahead tells whether a bad line is the last one (torn).
        line, upcoming = upcoming, f.readline()
        line_no += 1
        try:
            record = _parse(line, line_no, is_last=not upcoming)
            seq: int = record["seq"]
            where = f"line {line_no} (seq {seq})"
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
            if record["prev_hash"] != prev_hash:
                raise _Bad(
                    f"{where}: prev_hash does not match the previous record's hash: "
                    "chain broken (record replaced or inserted)",
                    seq,
                )
        except _Bad as bad:
            return VerifyResult(False, verified, bad.seq, line_no, bad.reason)
        verified += 1
        expected_seq = seq + 1
        prev_hash = record["hash"]
    return VerifyResult(True, verified, None, None, None)


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
