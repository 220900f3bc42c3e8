"""The baseline store: the approved security-relevant fields per object, and the
operator's waivers, kept in one JSON file so they survive a restart.

File format (`remedyd scan --write-baseline` writes the same, via `write_baseline`):

    {"version": 1, "written_at": RFC3339,
     "objects": {<baseline_key>: {"fields": {...}, "origin": "scan"|"learned"|"accepted",
                                  "at": RFC3339}},
     "waivers": {<baseline_key>: {<check id>: {"fingerprint", "by", "reason", "at"}}}}

A file that cannot be read or parsed is never overwritten: it may hold the operator's
approved baseline, and losing it silently would turn every later drift into a "first
sight". The store is then unusable (`usable` false) and the daemon runs without drift
comparisons until the file is fixed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.audit.checkpoint import replace_file
from daemon.core.events import JSONValue

log = logging.getLogger(__name__)

VERSION = 1
ORIGINS = ("scan", "learned", "accepted")


class BaselineError(Exception):
    """The baseline file exists but cannot be used; the message names the file."""


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Entry:
    # Never mutated once stored: a snapshot for the writer thread shares it safely.
    fields: Mapping[str, JSONValue]
    origin: str
    at: str

    def as_dict(self) -> dict[str, Any]:
        return {"fields": dict(self.fields), "origin": self.origin, "at": self.at}


@dataclass(frozen=True, slots=True)
class Waiver:
    fingerprint: str
    by: str
    reason: str
    at: str

    def as_dict(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "by": self.by, "reason": self.reason,
                "at": self.at}


class Baseline:
    """The objects' approved fields and waivers in memory; `on_change` hears each change
    (the persister schedules a write)."""

    def __init__(self, objects: Mapping[str, Entry] | None = None,
                 waivers: Mapping[str, Mapping[str, Waiver]] | None = None, *,
                 path: Path | None = None, error: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.objects: dict[str, Entry] = dict(objects or {})
        self.waivers: dict[str, dict[str, Waiver]] = {
            key: dict(checks) for key, checks in (waivers or {}).items()}
        self.path = path
        # Why the file could not be loaded; set, nothing is compared or written.
        self.error = error
        self.on_change: Callable[[], None] | None = None
        self._clock = clock

    @property
    def usable(self) -> bool:
        return self.error is None

    def get(self, key: str) -> Entry | None:
        return self.objects.get(key)

    def put(self, key: str, fields: Mapping[str, JSONValue], origin: str) -> Entry:
        if origin not in ORIGINS:
            raise ValueError(f"unknown baseline origin {origin!r}")
        entry = Entry(fields=dict(fields), origin=origin, at=rfc3339(self._clock()))
        self.objects[key] = entry
        self._changed()
        return entry

    def waivers_of(self, key: str) -> Mapping[str, Waiver]:
        return self.waivers.get(key, {})

    def waive(self, key: str, check: str, fingerprint: str, *, by: str, reason: str) -> Waiver:
        waiver = Waiver(fingerprint=fingerprint, by=by, reason=reason,
                        at=rfc3339(self._clock()))
        self.waivers.setdefault(key, {})[check] = waiver
        self._changed()
        return waiver

    def document(self) -> dict[str, Any]:
        """The file's content as it would be written now."""
        return {"version": VERSION, "written_at": rfc3339(self._clock()),
                "objects": {k: e.as_dict() for k, e in sorted(self.objects.items())},
                "waivers": {k: {c: w.as_dict() for c, w in sorted(ws.items())}
                            for k, ws in sorted(self.waivers.items()) if ws}}

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()


def load_baseline(path: Path, clock: Callable[[], float] = time.time) -> Baseline:
    """The baseline in `path`; a missing file is an empty baseline. Raises BaselineError
    naming the file (and the line of a JSON error) when it exists but is unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Baseline(path=path, clock=clock)
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read the security baseline: {exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}:{exc.lineno}:{exc.colno}: not JSON: {exc.msg}") from exc
    return Baseline(*_parse(doc, path), path=path, clock=clock)


def open_baseline(path: Path, clock: Callable[[], float] = time.time) -> Baseline:
    """`load_baseline`, but an unusable file gives an unusable store (logged) instead of
    an exception, so the daemon starts without drift comparisons."""
    try:
        return load_baseline(path, clock)
    except BaselineError as exc:
        log.error("%s; running without drift comparisons, the file is left as it is", exc)
        return Baseline(path=path, error=str(exc), clock=clock)


def _parse(doc: Any, path: Path) -> tuple[dict[str, Entry], dict[str, dict[str, Waiver]]]:
    def bad(where: str, what: str) -> BaselineError:
        return BaselineError(f"{path}: {where}: {what}")

    if not isinstance(doc, dict):
        raise bad("top level", "expected an object")
    if doc.get("version") != VERSION:
        raise bad("version", f"expected {VERSION}, got {doc.get('version')!r}")
    raw_objects = doc.get("objects", {})
    raw_waivers = doc.get("waivers", {})
    if not isinstance(raw_objects, dict):
        raise bad("objects", "expected an object")
    if not isinstance(raw_waivers, dict):
        raise bad("waivers", "expected an object")
    objects: dict[str, Entry] = {}
    for key, raw in raw_objects.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("fields"), dict):
            raise bad(f"objects.{key}", "expected {\"fields\": {...}, ...}")
        origin = raw.get("origin", "scan")
        if origin not in ORIGINS:
            raise bad(f"objects.{key}.origin", f"expected one of {', '.join(ORIGINS)}")
        objects[key] = Entry(fields=raw["fields"], origin=origin, at=str(raw.get("at", "")))
    waivers: dict[str, dict[str, Waiver]] = {}
    for key, checks in raw_waivers.items():
        if not isinstance(checks, dict):
            raise bad(f"waivers.{key}", "expected {<check id>: {...}}")
        for check, raw in checks.items():
            if not isinstance(raw, dict) or not isinstance(raw.get("fingerprint"), str):
                raise bad(f"waivers.{key}.{check}", "expected {\"fingerprint\": ..., ...}")
            waivers.setdefault(key, {})[check] = Waiver(
                fingerprint=raw["fingerprint"], by=str(raw.get("by", "")),
                reason=str(raw.get("reason", "")), at=str(raw.get("at", "")))
    return objects, waivers


def write_document(path: Path, doc: Mapping[str, Any]) -> None:
    """Replace `path` atomically (temporary file, fsync, rename, directory fsync)."""
    data = (json.dumps(doc, indent=1, sort_keys=False, ensure_ascii=False) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, data, fsync=True)
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_baseline(path: Path, entries: Mapping[str, Mapping[str, JSONValue]], *,
                   origin: str = "scan", now: float | None = None) -> int:
    """Write a fresh baseline of `entries` ({baseline_key: flattened fields}, see
    daemon/security/fields.py) to `path`; returns how many objects it holds."""
    baseline = Baseline(clock=(lambda: now) if now is not None else time.time)
    for key, fields in entries.items():
        baseline.put(key, fields, origin)
    write_document(path, baseline.document())
    return len(baseline.objects)


class Persister:
    """Writes the baseline at most once per `interval` after a change, and on `close`.

    The document is built on the loop (entries are immutable, so this is a shallow walk)
    and written in a thread, so a slow disk never stalls event handling."""

    def __init__(self, baseline: Baseline, *, interval: float = 1.0,
                 on_error: Callable[[OSError], None] | None = None) -> None:
        self.baseline = baseline
        self.interval = interval
        self.writes = 0
        self.last_error: str | None = None
        self._on_error = on_error
        self._dirty = False
        self._last_write = float("-inf")
        self._task: asyncio.Task[None] | None = None
        self._sleeping = False
        baseline.on_change = self.changed

    @property
    def pending(self) -> bool:
        return self._task is not None and not self._task.done()

    def changed(self) -> None:
        if not self.baseline.usable or self.baseline.path is None:
            return
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._later())

    async def _later(self) -> None:
        loop = asyncio.get_running_loop()
        wait = self._last_write + self.interval - loop.time()
        if wait > 0:
            self._sleeping = True
            try:
                await asyncio.sleep(wait)
            finally:
                self._sleeping = False
        await self._write()

    async def _write(self) -> None:
        if not self._dirty or self.baseline.path is None or not self.baseline.usable:
            return
        self._dirty = False
        self._last_write = asyncio.get_running_loop().time()
        doc = self.baseline.document()
        try:
            await asyncio.to_thread(write_document, self.baseline.path, doc)
        except OSError as exc:
            self._dirty = True  # kept for the next change or the shutdown flush
            self.last_error = f"{self.baseline.path}: {exc}"
            log.error("cannot write the security baseline %s", self.last_error)
            if self._on_error is not None:
                self._on_error(exc)
        else:
            self.writes += 1
            self.last_error = None

    async def close(self) -> None:
        """Write what is pending now (shutdown)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            # A write under way finishes (two writers would share the temporary file);
            # a wait for the debounce interval is cut short.
            if self._sleeping:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._write()
