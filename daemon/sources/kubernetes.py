"""Kubernetes watch streams -> Events, informer style, without losing or repeating one.

One informer per kind, one list-then-watch loop per namespace it covers (one loop for
all namespaces when none are named):
- list, and hand the items to the cache (`Cache.replace`): after a gap it yields the
  missed updates and deletes once, marked synthetic; then watch from the list's
  resourceVersion, keeping the newest version seen in events and BOOKMARKs;
- a watch the server ends cleanly, a torn line, a payload error mid-stream or a silent
  stall: watch again from the kept version (the cache ignores an object seen twice);
- 410 Gone, as an HTTP status or as an in-stream ERROR event: the version is too old to
  watch from, so list again;
- 429: wait (Retry-After, else backoff) and watch again without listing;
- 403: one error naming the verb and the resource, then slow retries;
- 5xx, refused connections: backoff with jitter.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from daemon import heap
from daemon.aio import Backoff
from daemon.clients.kubernetes import (
    RESOURCES,
    KubeClient,
    KubeStatusError,
    KubeStreamBroken,
    KubeUnavailable,
    Resource,
    status_error,
)
from daemon.core.events import Event
from daemon.kube.cache import Cache, Change, controller_ref, trim_listed
from daemon.kube.transitions import transitions
from daemon.kube.trim import Canon, TrimError
from daemon.kube.watchdecode import Trimmed
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.source.kubernetes")

SOURCE = "kubernetes"
# After a 403 an operator has to change RBAC: retrying faster only fills the server's log.
FORBIDDEN_RETRY = 30.0
# A watch that ends this soon with nothing delivered counts as a failure (as in client-go).
QUICK_CLOSE = 1.0
# The kinds a kind's transitions look up in the cache (a Pod's owner chain, an Event's
# Pod). Its changes wait until those have listed once, as client-go controllers wait for
# every informer to sync: else a Pod crash-looping when remedyd starts is judged before
# its Deployment is known, and its rollback has no target.
LOOKS_UP = {"Pod": ("ReplicaSet", "Deployment"), "Event": ("Pod", "ReplicaSet", "Deployment")}
# Changes held at most while waiting; beyond, the oldest go (counted as a gap).
HELD_MAX = 50_000
# Watches of different kinds are separate streams: a new Pod's ADDED can come before its
# ReplicaSet's. A change whose controller the cache does not hold yet waits this long for
# it (then goes on without: the owner may be gone for good).
OWNER_WAIT = 2.0


class _Expired(Exception):
    """The resourceVersion is too old to watch from: list again."""


@dataclasses.dataclass
class _Scope:
    namespace: str | None
    listed: bool = False
    version: str = ""
    lists: int = 0
    watches: int = 0
    error: str | None = None
    # Node mode: the pods of this node (node_name, True), or of every other node (False).
    node: tuple[str, bool] | None = None

    @property
    def field_selector(self) -> str | None:
        if self.node is None:
            return None
        return f"spec.nodeName{'=' if self.node[1] else '!='}{self.node[0]}"

    def partial(self) -> bool:
        return self.namespace is not None or self.node is not None

    def owns(self, obj: dict[str, Any]) -> bool:
        if self.namespace is not None and obj["metadata"].get("namespace") != self.namespace:
            return False
        if self.node is not None:
            on_node = (obj.get("spec") or {}).get("nodeName") == self.node[0]
            return on_node == self.node[1]
        return True
    # Why the cache may be behind the server since the last list or watch event (a
    # broken stream, a 410, failing requests); None once a relist or a re-watch caught up.
    gap: str | None = None


@dataclasses.dataclass(frozen=True)
class Tuning:
    stall_timeout: float = 70.0
    forbidden_retry: float = FORBIDDEN_RETRY
    # Server-side watch length; None: random 5-10 minutes per watch.
    watch_timeout: int | None = None
    backoff_initial: float = 0.8
    backoff_max: float = 30.0


class KubernetesSource:
    name = SOURCE

    def __init__(self, client: KubeClient, emit: Callable[[Event], object], metrics: Metrics,
                 kinds: list[str], namespaces: list[str] | None = None,
                 label_selector: str | None = None, tuning: Tuning | None = None,
                 cache: Cache | None = None, clock: Callable[[], float] = time.time,
                 node_name: str | None = None) -> None:
        self.client = client
        self.cache = cache if cache is not None else Cache()
        self._emit = emit
        self._metrics = metrics
        self._selector = label_selector
        self._tuning = tuning or Tuning()
        self._clock = clock
        self._informers = [
            _Informer(self, RESOURCES[kind], namespaces or [], node_name) for kind in kinds]
        # Node mode: set while this replica leads, when it also watches other nodes' pods.
        self._leading = asyncio.Event()
        watched = {RESOURCES[kind].kind for kind in kinds}
        self._waits_for = {kind: tuple(k for k in needs if k in watched)
                           for kind, needs in LOOKS_UP.items()}
        self._watched = watched
        # (change, when it was held), in the order they came.
        self._held: collections.deque[tuple[Change, float]] = collections.deque()
        self._release_timer: asyncio.TimerHandle | None = None
        self._on_resync: list[Callable[[str], object]] = []
        self._on_change: list[Callable[[Change], object]] = []
        self._on_listed: list[Callable[[str], object]] = []
        metrics.source_connected.labels(SOURCE).set(0)
        metrics.source_synced.labels(SOURCE).set(0)

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self._informers)

    def in_sync(self, kind: str) -> tuple[bool, str]:
        """Whether the cache of `kind` (e.g. "Pod") is as current as its watch can make it,
        and if not why: listed, and no gap since (a kind not watched here is not behind)."""
        for informer in self._informers:
            if informer.resource.kind != kind:
                continue
            for scope in informer.scopes:
                if not scope.listed:
                    return False, "not listed yet"
                if scope.gap is not None:
                    return False, scope.gap
        return True, ""

    def on_resync(self, callback: Callable[[str], object]) -> None:
        """Call `callback(kind)` whenever a kind is back in sync after a gap."""
        self._on_resync.append(callback)

    def on_change(self, callback: Callable[[Change], object]) -> None:
        """Call `callback(change)` with every change once the cache holds it and it is
        released (after its lookups are in, as the transitions see it): watch events,
        first listings and what relists imply alike."""
        self._on_change.append(callback)

    def on_listed(self, callback: Callable[[str], object]) -> None:
        """Call `callback(kind)` after each list of a kind (first or again) has been
        cached and its changes handed out."""
        self._on_listed.append(callback)

    @property
    def selector(self) -> str | None:
        """The label selector every list and watch carries (the cache holds only those)."""
        return self._selector

    def watches(self, kind: str) -> bool:
        return kind in self._watched

    def covers(self, kind: str, namespace: str) -> bool:
        """Whether `kind` is watched in `namespace` (all of them, or that one named)."""
        return bool(self._scopes(kind, namespace))

    def listed(self, kind: str, namespace: str | None = None) -> bool:
        """Whether the cache can tell what exists of `kind` (in `namespace`, or in every
        namespace it watches): watched there and listed at least once."""
        scopes = self._scopes(kind, namespace)
        return bool(scopes) and all(scope.listed for scope in scopes)

    def _scopes(self, kind: str, namespace: str | None) -> list[_Scope]:
        return [scope for informer in self._informers if informer.resource.kind == kind
                for scope in informer.scopes
                if namespace is None or scope.namespace in (None, namespace)]

    def status(self) -> dict[str, Any]:
        return {"synced": self.synced, "peer": self.client.peer,
                "kinds": {i.resource.plural: i.status() for i in self._informers}}

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for informer in self._informers:
                for scope in informer.scopes:
                    group.create_task(informer.run(scope))
                for scope in informer.elsewhere:
                    group.create_task(informer.run_while_leading(scope))

    def lead(self, leading: bool) -> None:
        """Node mode: the leader also watches the other nodes' pods (its workload- and
        cluster-scoped actions must see crash loops wherever they are); a follower only
        its own node's."""
        if leading:
            self._leading.set()
        else:
            self._leading.clear()

    def resync(self) -> None:
        """Every cached object's current state as events again, as on a first listing:
        a new leader acts on incidents still pending that it saw (and was refused) as a
        follower; transitions fire states only, never edges."""
        for informer in self._informers:
            kind = informer.resource.kind
            self._publish([Change(kind, None, obj, initial=True)
                           for obj in list(self.cache.objects(kind))])

    def _publish(self, changes: list[Change]) -> None:
        if self._held:
            self._release()
        now = time.monotonic()
        ready = []
        for change in changes:
            if self._held or not self._ready(change, now, now):
                self._hold(change, now)
            else:
                ready.append(change)
        self._emit_transitions(ready)

    def _ready(self, change: Change, since: float, now: float) -> bool:
        """Whether what the change's transitions look up is in the cache: the kinds they
        read have listed, and the object's controller has arrived (or waited for long
        enough)."""
        if not all(self.cache.synced(k) for k in self._waits_for.get(change.kind, ())):
            return False
        return now - since >= OWNER_WAIT or not self._owner_missing(change)

    def _owner_missing(self, change: Change) -> bool:
        current = change.new
        if change.kind != "Pod" or current is None or current["metadata"].get(
                "deletionTimestamp"):
            return False  # only a Pod's transitions name its owners; a going one names none
        # Up the chain (ReplicaSet, then Deployment): each watched owner must be in.
        for _ in range(4):
            ref = controller_ref(current)
            uid = ref.get("uid") if ref else None
            if ref is None or not isinstance(uid, str) or ref.get("kind") not in self._watched:
                return False
            owner = self.cache.by_uid(uid)
            if owner is None:
                return True
            current = owner
        return False

    def _hold(self, change: Change, now: float) -> None:
        if len(self._held) >= HELD_MAX:
            self._held.popleft()
            self._metrics.gaps.labels(SOURCE, "unsynced").inc()
        self._held.append((change, now))
        if self._release_timer is None:
            # Nothing else may come to release it: look again once the wait is over.
            self._release_timer = asyncio.get_running_loop().call_later(
                OWNER_WAIT, self._timed_release)

    def _timed_release(self) -> None:
        self._release_timer = None
        self._release()
        if self._held:
            self._release_timer = asyncio.get_running_loop().call_later(
                OWNER_WAIT, self._timed_release)

    def _release(self) -> None:
        """The held changes whose lookups are in by now, in the order they came."""
        now = time.monotonic()
        ready = []
        while self._held and self._ready(self._held[0][0], self._held[0][1], now):
            ready.append(self._held.popleft()[0])
        self._emit_transitions(ready)

    def _emit_transitions(self, changes: list[Change]) -> None:
        now = self._clock()
        taps = self._on_change
        for change in changes:
            for event in transitions(self.cache, change, now):
                if event.synthetic:
                    self._metrics.recovered.labels(SOURCE, "list").inc()
                self._metrics.events.labels(SOURCE, event.kind, event.action).inc()
                self._emit(event)
            for tap in taps:
                tap(change)

    def _state_changed(self) -> None:
        connected = all(s.error is None for i in self._informers for s in i.scopes)
        self._metrics.source_connected.labels(SOURCE).set(int(connected))
        self._metrics.source_synced.labels(SOURCE).set(int(self.synced))


class _Informer:
    def __init__(self, source: KubernetesSource, resource: Resource,
                 namespaces: list[str], node_name: str | None = None) -> None:
        self.source = source
        self.resource = resource
        names: list[str | None] = (list(namespaces) if namespaces and resource.namespaced
                                   else [None])
        node = node_name if resource.kind == "Pod" else None
        self.scopes = [_Scope(name, node=(node, True) if node else None) for name in names]
        # Node mode, Pods: the other nodes' pods, watched only while leading (kept apart
        # from `scopes`: a follower is in sync without them).
        self.elsewhere = [_Scope(name, node=(node, False)) for name in names] if node else []
        self._forbidden_logged: set[str] = set()

    @property
    def synced(self) -> bool:
        return all(scope.listed for scope in self.scopes)

    def status(self) -> dict[str, Any]:
        return {"synced": self.synced, "scopes": [
            {"namespace": s.namespace or "*", "listed": s.listed, "resourceVersion": s.version,
             "lists": s.lists, "watches": s.watches, "error": s.error, "gap": s.gap}
            for s in self.scopes]}

    async def run(self, scope: _Scope) -> None:
        tuning = self.source._tuning
        backoff = Backoff(tuning.backoff_initial, tuning.backoff_max)
        relist = True
        while True:
            delay = 0.0
            try:
                if relist:
                    await self._list(scope)
                    relist = False
                if await self._watch(scope):
                    backoff.reset()
                    self._caught_up(scope)  # a whole watch without a gap
                else:
                    delay = backoff.next_delay()
                self._ok(scope)
            except _Expired:
                log.info("%s: resourceVersion %s expired (410): listing again",
                         self._what(scope), scope.version)
                self.source._metrics.gaps.labels(SOURCE, "expired").inc()
                scope.gap = f"resourceVersion {scope.version} expired (410): relisting"
                relist = True
            except KubeStreamBroken as exc:
                log.warning("%s: %s; watching again from %s", self._what(scope), exc,
                            scope.version)
                self.source._metrics.reconnects.labels(SOURCE).inc()
                self._fail(scope, str(exc))
            except KubeStatusError as exc:
                delay = self._status_delay(scope, exc, backoff)
                relist = relist or exc.code == 410
            except KubeUnavailable as exc:
                delay = backoff.next_delay()
                log.warning("%s: %s; retrying in %.1fs", self._what(scope), exc, delay)
                self._fail(scope, str(exc))
            if delay:
                await asyncio.sleep(delay)

    async def run_while_leading(self, scope: _Scope) -> None:
        """`run` while the source leads; on losing the lead its objects leave the cache
        without a word (they were not deleted), and the next term lists them afresh."""
        leading = self.source._leading
        while True:
            await leading.wait()
            follow = asyncio.create_task(self.run(scope))
            try:
                while leading.is_set() and not follow.done():
                    # Event has no "cleared" wait: poll the flag, cheaply.
                    await asyncio.wait({follow}, timeout=0.2)
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
            kind = self.resource.kind
            self.source.cache.replace(kind, [obj for obj in self.source.cache.objects(kind)
                                             if not scope.owns(obj)])
            scope.listed, scope.version = False, ""

    def _status_delay(self, scope: _Scope, exc: KubeStatusError, backoff: Backoff) -> float:
        self._fail(scope, exc.describe())
        if exc.code == 410:
            self.source._metrics.gaps.labels(SOURCE, "expired").inc()
            return 0.0
        if exc.code == 403:
            key = f"{exc.verb} {scope.namespace}"
            if key not in self._forbidden_logged:
                self._forbidden_logged.add(key)
                log.error("%s", exc.describe())
            return self.source._tuning.forbidden_retry
        delay = backoff.next_delay()
        if exc.code == 429 and exc.retry_after:
            delay = max(delay, exc.retry_after)
        log.warning("%s; retrying in %.1fs", exc.describe(), delay)
        return delay

    async def _list(self, scope: _Scope) -> None:
        kind, api_version = self.resource.kind, self.resource.group_version
        try:
            # Trimmed page by page: a whole list of raw objects would be held at once.
            items, version = await self.source.client.list(
                self.resource, scope.namespace, self.source._selector,
                transform=functools.partial(trim_listed, kind=kind, api_version=api_version,
                                            canon=Canon()),
                field_selector=scope.field_selector)
        except TrimError as exc:
            raise KubeUnavailable(f"list {self.resource.plural}: {exc}") from None
        first = not scope.listed
        if scope.partial():
            # The cache replaces a whole kind: keep the other namespaces' (or nodes')
            # objects as they are.
            items = items + [obj for obj in self.source.cache.objects(kind)
                             if not scope.owns(obj)]
        try:
            changes = self.source.cache.replace(kind, items, self.resource.group_version,
                                                trimmed=True)
        except TrimError as exc:
            raise KubeUnavailable(f"list {self.resource.plural}: {exc}") from None
        if first:
            # This namespace's first listing: what it shows is state, not news.
            changes = [dataclasses.replace(c, initial=True, synthetic=False)
                       if c.old is None else c for c in changes]
        scope.listed, scope.version = True, version
        scope.lists += 1
        self._ok(scope)
        self.source._publish(changes)
        for callback in self.source._on_listed:
            callback(kind)
        self._caught_up(scope)
        if first:
            # The list's raw pages are freed: hand their heap back (once; relists are rare).
            heap.release()

    async def _watch(self, scope: _Scope) -> bool:
        """Follow one watch to its end; False when it ended at once with nothing in it."""
        tuning = self.source._tuning
        started = time.monotonic()
        delivered = False
        scope.watches += 1
        stream = self.source.client.watch(
            self.resource, scope.namespace, self.source._selector, scope.version,
            stall=tuning.stall_timeout, timeout_seconds=tuning.watch_timeout,
            field_selector=scope.field_selector)
        async for event in stream:
            delivered = True
            self._handle(scope, event)
        return delivered or time.monotonic() - started >= QUICK_CLOSE

    def _handle(self, scope: _Scope, event: dict[str, Any] | Trimmed) -> None:
        # Trimmed: a plain event, decoded trimmed by the client; a dict: anything else.
        kind, obj = (event.type, event.object) if isinstance(event, Trimmed) else (
            event.get("type"), event["object"])
        if kind == "ERROR":
            error = status_error("watch", self.resource.plural, 0, obj)
            if error.code == 410:
                raise _Expired()
            raise error
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind != "BOOKMARK":
            if "kind" not in obj:
                obj = {**obj, "kind": self.resource.kind}
            try:
                change = (self.source.cache.apply_trimmed(event) if isinstance(event, Trimmed)
                          else self.source.cache.apply(str(kind), obj))
            except (TrimError, KeyError) as exc:
                log.warning("%s: skipped a %s event: %s", self._what(scope), kind, exc)
                change = None
            if change is not None:
                self.source._publish([change])
        if isinstance(version, str) and version:
            scope.version = version
        # The server accepted the version and streams from it: the watch caught up.
        self._caught_up(scope)

    def _ok(self, scope: _Scope) -> None:
        if scope.error is not None:
            scope.error = None
            self._forbidden_logged.clear()
        self.source._state_changed()

    def _fail(self, scope: _Scope, error: str) -> None:
        scope.error = error
        scope.gap = error
        self.source._state_changed()

    def _caught_up(self, scope: _Scope) -> None:
        if scope.gap is None:
            return
        scope.gap = None
        if self.in_sync:
            log.info("%s: in sync again", self._what(scope))
            for callback in self.source._on_resync:
                callback(self.resource.kind)

    @property
    def in_sync(self) -> bool:
        return all(scope.listed and scope.gap is None for scope in self.scopes)

    def _what(self, scope: _Scope) -> str:
        return f"kubernetes {self.resource.plural}" + (
            f" in {scope.namespace}" if scope.namespace else "")
