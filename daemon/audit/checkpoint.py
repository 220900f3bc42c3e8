"""The audit log's checkpoint: seq and hash of its newest record, kept in another file.

A hash chain proves the order and content of the records it holds but cannot see
records cut from its end; a copy of the head kept elsewhere can. The file is
replaced by rename, so a reader sees the old head or the new one, never half.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .records import GENESIS_HASH, describe_os_error

_HEX64 = re.compile(r"[0-9a-f]{64}")
_MAX_BYTES = 4096  # a checkpoint is one short line; anything bigger is not one


class CheckpointError(Exception):
    """The checkpoint file exists but cannot be read or is malformed; names the file."""


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str


def default_checkpoint_path(log_path: Path) -> Path:
    return Path(f"{log_path}.checkpoint")


def read_checkpoint(path: Path) -> Checkpoint | None:
    """The checkpoint stored at ``path``; None when there is no such file."""
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path}: cannot read: {describe_os_error(exc)}") from exc
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        obj = None
    if len(data) > _MAX_BYTES or not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: not a JSON object")
    seq, digest = obj.get("seq"), obj.get("hash")
    if type(seq) is not int or seq < 0:  # bool is an int subclass
        raise CheckpointError(f"checkpoint {path}: 'seq' must be a non-negative integer")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise CheckpointError(f"checkpoint {path}: 'hash' must be 64 hex digits")
    return Checkpoint(seq, digest)


def compare_checkpoint(
    checkpoint: Checkpoint, where: Path, last_seq: int, hash_at: Callable[[int], str | None]
) -> tuple[str | None, tuple[int, int] | None]:
    """What is wrong with a log whose newest record is ``last_seq``, if anything.

    Returns the problem and, for a cut tail, the first and last missing seq.
    ``hash_at(seq)`` is the stored hash of the log's record ``seq`` (None if absent).
    """
    if last_seq < checkpoint.seq:
        first = last_seq + 1
        problem = (
            f"log ends at seq {last_seq} but checkpoint {where} records seq {checkpoint.seq}: "
            f"records {first}..{checkpoint.seq} were cut from the tail"
        )
        return problem, (first, checkpoint.seq)
    found = GENESIS_HASH if checkpoint.seq == 0 else hash_at(checkpoint.seq)
    if found == checkpoint.hash:
        return None, None
    has = f"has hash {found[:16]}…" if found is not None else "is missing"
    problem = (
        f"record seq {checkpoint.seq} {has} but checkpoint {where} records "
        f"{checkpoint.hash[:16]}…: log rewritten since the checkpoint was taken"
    )
    return problem, None


def write_checkpoint(
    path: Path, checkpoint: Checkpoint, *, time: str | None, fsync: bool
) -> None:
    """Replace ``path`` atomically; raises OSError, leaving no temporary file behind.

    The directory is not fsync'd: if the rename is lost in a power cut the old
    checkpoint, which is behind the log and so still consistent, remains.
    """
    body: dict[str, object] = {"seq": checkpoint.seq, "hash": checkpoint.hash}
    if time is not None:
        body["time"] = time  # the record's own time, to tell the operator how old it is
    data = json.dumps(body, separators=(",", ":")).encode() + b"\n"
    # One writer per log (it holds the log's flock), so a fixed temporary name is safe.
    replace_file(path, data, fsync=fsync)


def replace_file(path: Path, data: bytes, *, fsync: bool) -> None:
    """Write `data` to `path.tmp` (fsync'd when asked) and rename it over `path`;
    raises OSError, leaving no temporary file behind. The caller is the one writer."""
    temp = Path(f"{path}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
