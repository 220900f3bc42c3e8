"""The request log and fault injection tests drive the test bed with."""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

FaultAction = Literal["status", "drop", "stall", "torn", "slow"]
# Go's strconv.ParseBool, which the apiserver uses for watch=, allowWatchBookmarks= and the like
# (kubernetes-asyncio sends "True").
TRUE_VALUES = ("1", "t", "T", "TRUE", "true", "True")


def query_flag(query: dict[str, str] | object, name: str) -> bool:
    get = getattr(query, "get", None)
    return get is not None and get(name) in TRUE_VALUES


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: bytes
    status: int = 0
    user_agent: str = ""
    # Who the server authenticated: a bearer token's user (Testbed.tokens), a client
    # certificate's CN; "" for anonymous.
    user: str = ""
    # Seconds a `slow` fault holds the answer back after the request was carried out.
    answer_delay: float = 0.0
    # time.monotonic() once the request (headers and body) was in.
    received_at: float = field(default_factory=time.monotonic)
    # A watch's events as they went out: (time.monotonic(), type, resourceVersion).
    sent: list[tuple[float, str, str]] = field(default_factory=list)

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def is_watch(self) -> bool:
        return query_flag(self.query, "watch")

    @property
    def mutating(self) -> bool:
        return self.method in ("POST", "PUT", "PATCH", "DELETE")


@dataclass
class Fault:
    """Applies to the next `count` requests matching method, path regex, watch-ness and
    User-Agent regex (one client of several: a leader's Lease renewals).

    status: answer `code` with a real Status body (Retry-After for 429).
    drop:   (watches) send `after_events` events, then abort the connection mid-stream.
    stall:  (watches) send the headers, then no byte at all until the client gives up.
    torn:   (watches) send `after_events` events, then half of a JSON line and close.
    slow:   (other requests) do what was asked, then answer `delay` seconds later: a slow
            server, or an answer lost on the way (the change happened, the client cannot
            know).
    """

    action: FaultAction
    path: str = ".*"
    method: str | None = None
    watch: bool | None = None
    count: int = 1
    code: int = 500
    after_events: int = 0
    retry_after: int = 1
    delay: float = 0.0
    user_agent: str | None = None
    hits: int = 0

    def matches(self, method: str, path: str, is_watch: bool, user_agent: str = "") -> bool:
        if self.count <= 0:
            return False
        if self.user_agent is not None and re.search(self.user_agent, user_agent) is None:
            return False
        if self.method is not None and self.method != method:
            return False
        if self.watch is not None and self.watch != is_watch:
            return False
        return re.search(self.path, path) is not None


@dataclass
class Faults:
    pending: list[Fault] = field(default_factory=list)

    def add(self, action: FaultAction, **kwargs: Any) -> Fault:
        fault = Fault(action, **kwargs)
        self.pending.append(fault)
        return fault

    def take(self, method: str, path: str, is_watch: bool,
             user_agent: str = "") -> Fault | None:
        for fault in self.pending:
            if fault.matches(method, path, is_watch, user_agent):
                fault.count -= 1
                fault.hits += 1
                return fault
        return None

    def clear(self) -> None:
        self.pending.clear()


@dataclass
class RequestLog:
    entries: list[Request] = field(default_factory=list)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    def append(self, request: Request) -> None:
        self.entries.append(request)
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._arrived:
            self._arrived.notify_all()

    async def wait_for(self, method: str | None = None, path: str | None = None,
                       watch: bool | None = None, limit: float = 5.0) -> Request:
        """The first matching request, waiting up to `limit` seconds for it to arrive."""
        async with asyncio.timeout(limit), self._arrived:
            await self._arrived.wait_for(lambda: bool(self.find(method, path, watch)))
        return self.find(method, path, watch)[0]

    def find(self, method: str | None = None, path: str | None = None,
             watch: bool | None = None) -> list[Request]:
        return [r for r in self.entries
                if (method is None or r.method == method)
                and (path is None or re.search(path, r.path))
                and (watch is None or r.is_watch == watch)]

    def sent_at(self, path: str, event_type: str, resource_version: str) -> float | None:
        """When a watch on `path` (a regex) wrote that event, or None while none has."""
        for entry in self.find(path=path, watch=True):
            for at, kind, version in entry.sent:
                if kind == event_type and version == resource_version:
                    return at
        return None

    def mutations(self) -> list[Request]:
        return [r for r in self.entries if r.mutating]

    def clear(self) -> None:
        self.entries.clear()
