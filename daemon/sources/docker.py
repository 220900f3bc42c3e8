"""Docker engine events -> Events, without gaps across disconnects and slow reads.

Three ways to miss an event, three answers:
- a disconnect or engine restart: resume with `since` = the last event seen, and
  drop the repeated boundary event;
- more than 256 events in the gap (the engine keeps no more): the replay no longer
  starts with the boundary event; that is a gap, and the state listing taken on
  every (re)connect covers it;
- the engine skips a listener that lags by 100 ms without saying so: a periodic
  listing catches health states the stream never delivered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from daemon.aio import Backoff
from daemon.clients.docker import CONNECTION_ERRORS, DockerClient
from daemon.core.errors import SourceError
from daemon.core.events import Event, Ref
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.source.docker")

SOURCE = "docker"
# Event types remedyd has rules for; the engine filters the rest server-side.
EVENT_FILTERS = {"type": ["container"]}


def event_key(raw: dict[str, Any]) -> str:
    actor = raw.get("Actor") or {}
    return f"{raw.get('timeNano', 0)}:{actor.get('ID', raw.get('id', ''))}:{raw.get('Action', '')}"


def normalise(raw: dict[str, Any], observed_at: float) -> Event | None:
    """A raw engine event as an Event, or None for noise (health probes' exec_* events)."""
    action_text = str(raw.get("Action") or raw.get("status") or "")
    if action_text.startswith("exec_"):
        return None
    actor = raw.get("Actor") or {}
    attributes = {str(k): str(v) for k, v in (actor.get("Attributes") or {}).items()}
    action, _, detail = action_text.partition(":")
    detail = detail.strip()
    if action == "health_status" and detail:
        attributes["health"] = detail
    kind = str(raw.get("Type") or "container")
    ident = str(actor.get("ID") or raw.get("id") or "")
    time_nano = int(raw.get("timeNano") or 0)
    return Event(
        source=SOURCE, kind=kind, action=action,
        subject=Ref(source=SOURCE, kind=kind, name=attributes.get("name", ident[:12]), id=ident),
        id=event_key(raw),
        occurred_at=time_nano / 1e9 if time_nano else observed_at,
        observed_at=observed_at,
        attributes=attributes,
    )


def health_of(container: dict[str, Any]) -> str | None:
    """A listed container's health from its Status text ('Up 5s (unhealthy)')."""
    status = str(container.get("Status", ""))
    for health in ("unhealthy", "healthy", "health: starting"):
        if f"({health})" in status:
            return health.removeprefix("health: ")
    return None


class _Seen:
    """The keys of recent events, to drop the ones a replay delivers twice."""

    def __init__(self, size: int = 1024) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, key: str) -> bool:
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True


class DockerSource:
    name = SOURCE

    def __init__(self, client: DockerClient, emit: Callable[[Event], object], metrics: Metrics,
                 reconcile_interval: float = 30.0, backoff: Backoff | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self._emit = emit
        self._metrics = metrics
        self.reconcile_interval = reconcile_interval
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._clock = clock
        self._seen = _Seen()
        self._last: tuple[int, str] | None = None  # (timeNano, key) of the last event seen
        self._health: dict[str, str] = {}  # container id -> last known health
        self._snapshot_ns: dict[str, int] = {}  # container id -> when its state was last listed
        self.connected = False
        self.synced = False
        self.last_error: str | None = None
        metrics.source_connected.labels(SOURCE).set(0)
        metrics.source_synced.labels(SOURCE).set(0)

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "synced": self.synced, "peer": self.client.peer,
                "error": self.last_error}

    async def run(self) -> None:
        reconciler = asyncio.create_task(self._reconcile_periodically(), name="docker-reconcile")
        try:
            first = True
            while True:
                try:
                    await self._connect_and_follow(first)
                    self.last_error = "event stream ended"
                except (*CONNECTION_ERRORS, SourceError, ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                self._set_state(connected=False, synced=False)
                first = False
                self._metrics.reconnects.labels(SOURCE).inc()
                delay = self._backoff.next_delay()
                log.warning("docker engine at %s unavailable (%s); retrying in %.1fs",
                            self.client.peer, self.last_error, delay)
                await asyncio.sleep(delay)
        finally:
            reconciler.cancel()
            await asyncio.gather(reconciler, return_exceptions=True)

    async def _connect_and_follow(self, first: bool) -> None:
        since_ns = self._last[0] if self._last else await self.client.system_time_ns()
        self._set_state(connected=True, synced=False)
        await self.reconcile()
        self._set_state(connected=True, synced=True)
        self._backoff.reset()
        if not first:
            log.info("reconnected to docker engine at %s; replaying since %d",
                     self.client.peer, since_ns)
        boundary = self._last[1] if self._last else None
        checking_gap = boundary is not None
        async for raw in self.client.events(since_ns, EVENT_FILTERS):
            key = event_key(raw)
            if checking_gap:
                checking_gap = False
                if key != boundary:
                    # The engine no longer holds the last event we saw: the events
                    # between are gone. The listing above already caught the state up.
                    self._metrics.gaps.labels(SOURCE).inc()
                    log.warning("docker event gap: replay since %d did not start with the "
                                "last event seen; state was reconciled from a listing", since_ns)
            self._handle(raw, key)

    def _handle(self, raw: dict[str, Any], key: str) -> None:
        time_nano = int(raw.get("timeNano") or 0)
        if not self._seen.add(key):
            return
        self._last = (time_nano, key)
        event = normalise(raw, self._clock())
        if event is None:
            return
        cid = event.subject.id
        if event.action == "health_status":
            if time_nano < self._snapshot_ns.get(cid, 0):
                return  # older than the state we listed since: superseded
            self._health[cid] = str(event.attributes.get("health", ""))
        elif event.action in ("start", "die"):
            # Health starts over with every start; what we knew no longer holds.
            self._health.pop(cid, None)
        elif event.action == "destroy":
            self._health.pop(cid, None)
            self._snapshot_ns.pop(cid, None)
        self._metrics.events.labels(SOURCE, event.kind, event.action).inc()
        self._emit(event)

    async def reconcile(self) -> int:
        """List containers and emit a health event for each whose health we have not seen."""
        self._metrics.reconciles.labels(SOURCE).inc()
        listed_ns = int(self._clock() * 1e9)
        emitted = 0
        for container in await self.client.list_containers():
            health = health_of(container)
            cid = str(container.get("Id", ""))
            if health is None or self._health.get(cid) == health:
                continue
            try:
                state = await self.client.inspect(cid)
            except CONNECTION_ERRORS as exc:
                if getattr(exc, "status", None) == 404:
                    continue  # removed since the listing
                raise
            current = state.get("State") or {}
            if not current.get("Running") or current.get("Restarting"):
                # Mid-restart or stopped: Health still shows the last probe's verdict
                # from before the stop. The start event that follows resets health.
                continue
            health = str((current.get("Health") or {}).get("Status") or health)
            if self._health.get(cid) == health:
                continue
            self._health[cid] = health
            self._snapshot_ns[cid] = listed_ns
            self._emit(self._synthetic(container, state, health))
            emitted += 1
        return emitted

    def _synthetic(self, listed: dict[str, Any], state: dict[str, Any], health: str) -> Event:
        now = self._clock()
        cid = str(listed.get("Id", ""))
        names = listed.get("Names") or [cid[:12]]
        name = str(names[0]).lstrip("/")
        attributes = {str(k): str(v) for k, v in (listed.get("Labels") or {}).items()}
        attributes.update(name=name, image=str(listed.get("Image", "")), health=health)
        self._metrics.events.labels(SOURCE, "container", "health_status").inc()
        return Event(
            source=SOURCE, kind="container", action="health_status",
            subject=Ref(source=SOURCE, kind="container", name=name, id=cid),
            id=f"reconcile:{int(now * 1e9)}:{cid}:{health}",
            occurred_at=now, observed_at=now, attributes=attributes, object=state,
            synthetic=True,
        )

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval)
            if not self.synced:
                continue
            try:
                found = await self.reconcile()
                if found:
                    log.info("periodic reconcile found %d container(s) whose health the event "
                             "stream did not deliver", found)
            except CONNECTION_ERRORS as exc:
                log.debug("periodic reconcile failed: %s", exc)

    def _set_state(self, connected: bool, synced: bool) -> None:
        self.connected, self.synced = connected, synced
        self._metrics.source_connected.labels(SOURCE).set(int(connected))
        self._metrics.source_synced.labels(SOURCE).set(int(synced))
