"""What one audit record is: its canonical bytes, hash, time format and parsing.

Shared by the writer, the verifier and the checkpoint; stdlib only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = "0" * 64
RESERVED_KEYS = frozenset({"seq", "time", "kind", "prev_hash", "hash"})


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The byte form that record hashes are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of ``record`` without its ``hash`` key."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256(canonical(body)).hexdigest()


def format_time(ts: float) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2024-05-01T12:00:00.000001Z``."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_time(record: Mapping[str, Any]) -> float:
    """A record's `time` as seconds since the epoch (0.0 when it has none or a bad one)."""
    try:
        return datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return 0.0


def parse_record(line: bytes) -> dict[str, Any] | None:
    """The record on ``line``; None unless it is a JSON object with int seq and str hash."""
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):  # ValueError covers bad JSON and bad UTF-8
        return None
    if not isinstance(obj, dict):
        return None
    # bool is an int subclass, and `true` is no sequence number
    if type(obj.get("seq")) is not int or not isinstance(obj.get("hash"), str):
        return None
    return obj


def describe_os_error(exc: OSError) -> str:
    """``No space left on device (ENOSPC)`` rather than a bare errno number."""
    if exc.errno is None:
        return str(exc)
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return f"{exc.strerror or os.strerror(exc.errno)} ({name})"
