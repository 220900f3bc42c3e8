"""The watch stream: replay from a resourceVersion, follow, bookmarks, timeouts, 410 in both
forms, selector-aware ADDED/DELETED, and the stream faults (drop, stall, torn line)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.kube.faults import Fault, Request, query_flag
from tests.kube.resources import Kind
from tests.kube.selectors import Predicate
from tests.kube.status import ApiError
from tests.kube.store import Change, Obj, Store

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


@dataclass
class WatchOptions:
    bookmark_interval: float = 60.0
    # A real apiserver with its watch cache answers an expired version in-stream; without it,
    # as HTTP 410. Tests pick.
    expired_as_http: bool = False
    default_timeout: float = 1800.0
    stall_seconds: float = 600.0


def _bookmark(kind: Kind, rv: int, initial_end: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"resourceVersion": str(rv), "creationTimestamp": None}
    if initial_end:
        meta["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"type": "BOOKMARK", "object": {"kind": kind.kind, "apiVersion": kind.api_version,
                                           "metadata": meta}}


def filtered(change: Change, match: Predicate) -> dict[str, Any] | None:
    """The event a watcher with this selector sees, if any (as the watch cache decides)."""
    now = match(change.obj)
    before = change.prev is not None and match(change.prev)
    if change.type == "DELETED":
        return {"type": "DELETED", "object": change.obj} if before else None
    if change.type == "ADDED":
        return {"type": "ADDED", "object": change.obj} if now else None
    if now and before:
        return {"type": "MODIFIED", "object": change.obj}
    if now:
        return {"type": "ADDED", "object": change.obj}
    if before and change.prev is not None:
        gone: Obj = json.loads(json.dumps(change.prev))
        gone["metadata"]["resourceVersion"] = str(change.rv)
        return {"type": "DELETED", "object": gone}
    return None


async def serve_watch(request: web.Request, store: Store, kind: Kind, match: Predicate,
                      options: WatchOptions, fault: Fault | None,
                      closing: asyncio.Event, entry: Request) -> web.StreamResponse:
    q = request.query
    bookmarks = query_flag(q, "allowWatchBookmarks")
    timeout = float(q.get("timeoutSeconds") or options.default_timeout)
    rv_text = q.get("resourceVersion", "")
    initial_events = query_flag(q, "sendInitialEvents")

    # Subscribe and snapshot in one synchronous step: nothing can slip between them.
    watcher = store.subscribe(kind)
    try:
        backlog: list[dict[str, Any]] = []
        if initial_events or rv_text in ("", "0"):
            for obj in store.list(kind):
                if match(obj):
                    backlog.append({"type": "ADDED", "object": obj})
            if initial_events and bookmarks:
                backlog.append(_bookmark(kind, store.rv, initial_end=True))
        else:
            try:
                requested = int(rv_text)
            except ValueError as exc:
                raise ApiError(400, f'invalid resource version "{rv_text}"', "BadRequest") from exc
            try:
                changes = store.changes_since(requested)
            except ApiError as exc:
                if options.expired_as_http:
                    raise
                backlog = [{"type": "ERROR", "object": exc.body()}]
                changes = []
                timeout = 0
            for change in changes:
                # The history spans every kind (one resourceVersion counter); a watch
                # replays its own kind's changes only, as the watch cache does.
                event = filtered(change, match) if change.kind == kind else None
                if event is not None:
                    backlog.append(event)

        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        entry.status = 200
        if fault is not None and fault.action == "stall":
            await _wait(closing, min(options.stall_seconds, timeout))
            return response
        sent = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        next_bookmark = loop.time() + options.bookmark_interval

        async def send(event: dict[str, Any]) -> bool:
            nonlocal sent
            if fault is not None and sent >= fault.after_events:
                if fault.action == "drop":
                    if request.transport is not None:
                        request.transport.abort()
                    return False
                if fault.action == "torn":
                    line = json.dumps(event)
                    await response.write(line[: len(line) // 2].encode() + b"\n")
                    return False
            await response.write(json.dumps(event).encode() + b"\n")
            entry.sent.append((time.monotonic(), event["type"], str(
                (event["object"].get("metadata") or {}).get("resourceVersion", ""))))
            sent += 1
            return True

        for event in backlog:
            if not await send(event):
                return response
        while not closing.is_set():
            now = loop.time()
            if now >= deadline:
                break
            wake = deadline if not bookmarks else min(deadline, next_bookmark)
            try:
                change = await asyncio.wait_for(watcher.queue.get(), timeout=max(0.0, wake - now))
            except TimeoutError:
                if bookmarks and loop.time() >= next_bookmark:
                    next_bookmark = loop.time() + options.bookmark_interval
                    if not await send(_bookmark(kind, store.rv)):
                        return response
                continue
            event = filtered(change, match)
            if event is not None and not await send(event):
                return response
        await response.write_eof()
        return response
    finally:
        store.unsubscribe(watcher)


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
