"""Docker engine events -> Events, without losing a transition or emitting one twice.

Ways to miss an event, and the answers:
- a disconnect or engine restart: replay from the last event seen (`since`/`until`),
  then follow from there, dropping the repeated boundary event;
- more than 256 events in the gap (the engine keeps no more): the replay no longer
  starts with the boundary event. That is a gap; the listing that follows makes up the
  missed deaths, OOM kills and starts from each container's state (docker_ledger);
- the engine skips a listener that lags by 100 ms without saying so: every
  `reconcile_interval` a bounded replay of the engine's buffer is compared with what
  arrived, and a listing compares health and state with what the events said.
A made-up or replayed transition is emitted once, and not again when its real event
turns up later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from daemon.aio import Backoff
from daemon.clients.docker import CONNECTION_ERRORS, DockerClient, state_time_ns
from daemon.core.errors import SourceError
from daemon.core.events import Event, JSONValue, Ref
from daemon.sources.docker_ledger import ContainerState, Ledger, Missed
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.source.docker")

SOURCE = "docker"
# Event types remedyd has rules for; the engine filters the rest server-side.
EVENT_FILTERS = {"type": ["container"]}
# An event older than this that has not arrived is not on its way: dockerd hands an event
# to each listener within 100 ms or skips it.
SETTLE_NS = 1_000_000_000
TRANSITIONS = ("start", "die", "oom")


def event_key(raw: dict[str, Any]) -> str:
    actor = raw.get("Actor") or {}
    return f"{raw.get('timeNano', 0)}:{actor.get('ID', raw.get('id', ''))}:{raw.get('Action', '')}"


COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"


def with_compose_names(attributes: dict[str, Any]) -> None:
    """`compose_project` and `compose_service`, "" outside Compose: a rule can match them
    on any container, where reading an absent label would be an evaluation error."""
    attributes["compose_project"] = str(attributes.get(COMPOSE_PROJECT, ""))
    attributes["compose_service"] = str(attributes.get(COMPOSE_SERVICE, ""))


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
    if kind == "container":
        with_compose_names(attributes)
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


def container_state(inspected: dict[str, Any]) -> ContainerState:
    """The parts of `docker inspect` that tell which transitions happened."""
    current = inspected.get("State") or {}
    return ContainerState(
        created_ns=state_time_ns(inspected.get("Created")),
        started_ns=state_time_ns(current.get("StartedAt")),
        finished_ns=state_time_ns(current.get("FinishedAt")),
        restart_count=_int(inspected.get("RestartCount")),
        running=bool(current.get("Running")),
        restarting=bool(current.get("Restarting")),
        oom_killed=bool(current.get("OOMKilled")),
        exit_code=_int(current.get("ExitCode")),
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


class _Seen:
    """The keys of recent events, to drop the ones a replay delivers twice."""

    # More than a replay window holds: the engine keeps 256 events of every type.
    def __init__(self, size: int = 4096) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def __contains__(self, key: str) -> bool:
        return key in self._keys

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
        self._last: tuple[int, str] | None = None  # (timeNano, key) of the newest event seen
        # Up to where the engine's buffer was compared with what arrived (timeNano, key).
        self._checkpoint: tuple[int, str | None] | None = None
        self._ledger = Ledger()
        self._catching_up = asyncio.Lock()  # one replay/listing at a time
        self._health: dict[str, str] = {}  # container id -> last known health
        self._snapshot_ns: dict[str, int] = {}  # container id -> when its state was last listed
        self.connected = False
        self.synced = False
        self.last_error: str | None = None
        # Who else hears each handled event and each listed container's inspect (the
        # security posture); empty, the hot path pays one truth test.
        self._observers: list[Callable[[Event], None]] = []
        self._inspected: list[Callable[[dict[str, Any]], None]] = []
        metrics.source_connected.labels(SOURCE).set(0)
        metrics.source_synced.labels(SOURCE).set(0)

    def observe(self, callback: Callable[[Event], None]) -> None:
        """`callback` hears each normalised event once it is handled (emitted)."""
        self._observers.append(callback)

    def on_inspected(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """`callback` hears each container's inspect output of a reconcile listing."""
        self._inspected.append(callback)

    def status(self) -> dict[str, Any]:
        return {"connected": self.connected, "synced": self.synced, "peer": self.client.peer,
                "error": self.last_error}

    async def run(self) -> None:
        reconciler = asyncio.create_task(self._reconcile_periodically(), name="docker-reconcile")
        try:
            while True:
                try:
                    await self._connect_and_follow()
                    self.last_error = f"docker engine at {self.client.peer} ended the event stream"
                except (*CONNECTION_ERRORS, SourceError, ValueError) as exc:
                    self.last_error = f"{type(exc).__name__}: {exc}"
                was_connected = self.connected
                self._set_state(connected=False, synced=False)
                self._metrics.reconnects.labels(SOURCE).inc()
                delay = self._backoff.next_delay()
                log.warning("docker engine at %s: %s (%s); reconnecting in %.1fs",
                            self.client.peer,
                            "event stream lost" if was_connected else "unavailable",
                            self.last_error, delay)
                await asyncio.sleep(delay)
        finally:
            reconciler.cancel()
            await asyncio.gather(reconciler, return_exceptions=True)

    async def _connect_and_follow(self) -> None:
        engine_now = await self.client.system_time_ns()
        self._set_state(connected=True, synced=False)
        async with self._catching_up:
            if self._checkpoint is None:
                self._ledger.watching_since_ns = engine_now
                self._checkpoint = (engine_now, None)
            else:
                log.info("reconnected to docker engine at %s; replaying since %d",
                         self.client.peer, self._checkpoint[0])
                await self._replay(engine_now)
            await self.reconcile(engine_now)
        self._set_state(connected=True, synced=True)
        self._backoff.reset()
        since_ns, boundary = self._last if self._last else (engine_now, None)
        checking_gap = boundary is not None
        async with contextlib.aclosing(self.client.events(since_ns, EVENT_FILTERS)) as stream:
            async for raw in stream:
                key = event_key(raw)
                if checking_gap:
                    checking_gap = False
                    if key != boundary:
                        self._gap("overflow", "the stream since %d did not start with the last "
                                  "event seen; the next listing makes up what it shows", since_ns)
                self._handle(raw, key)

    async def _replay(self, until_ns: int) -> None:
        """Compare the engine's buffer up to `until_ns` with what arrived; handle what did not."""
        if self._checkpoint is None or until_ns <= self._checkpoint[0]:
            return
        since_ns, boundary = self._checkpoint
        events = await self.client.replay(since_ns, until_ns, EVENT_FILTERS)
        if boundary is not None and (not events or event_key(events[0]) != boundary):
            self._gap("overflow", "the engine no longer holds the events since %d; the listing "
                      "makes up what it shows", since_ns)
        missed = [(raw, key) for raw in events if (key := event_key(raw)) not in self._seen]
        for raw, key in missed:
            self._handle(raw, key, recovered_via="replay")
        if missed:
            self._gap("skipped", "%d event(s) since %d never arrived on the stream; handled "
                      "them from the engine's replay", len(missed), since_ns)
        if events:
            self._checkpoint = (int(events[-1].get("timeNano") or since_ns), event_key(events[-1]))

    def _gap(self, reason: str, message: str, *args: object) -> None:
        self._metrics.gaps.labels(SOURCE, reason).inc()
        log.warning("docker event gap at %s (%s): " + message, self.client.peer, reason, *args)

    def _handle(self, raw: dict[str, Any], key: str, recovered_via: str | None = None) -> None:
        time_nano = int(raw.get("timeNano") or 0)
        if not self._seen.add(key):
            return
        if self._last is None or time_nano >= self._last[0]:
            self._last = (time_nano, key)
        event = normalise(raw, self._clock())
        if event is None:
            return
        cid = event.subject.id
        if event.action in TRANSITIONS and not self._ledger.accept(cid, event.action, time_nano):
            return  # already made up from the container's state
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
            self._ledger.forget(cid)
        if recovered_via:
            self._metrics.recovered.labels(SOURCE, recovered_via).inc()
        self._metrics.events.labels(SOURCE, event.kind, event.action).inc()
        self._emit(event)
        if self._observers:
            for observer in self._observers:
                observer(event)

    async def reconcile(self, settled_ns: int | None = None) -> int:
        """List containers; emit what their state shows and the events did not: health, and
        deaths, OOM kills and starts up to `settled_ns` (engine clock). Returns how many."""
        self._metrics.reconciles.labels(SOURCE).inc()
        listed_ns = int(self._clock() * 1e9)
        emitted = 0
        for container in await self.client.list_containers():
            cid = str(container.get("Id", ""))
            try:
                state = await self.client.inspect(cid)
            except CONNECTION_ERRORS as exc:
                if getattr(exc, "status", None) == 404:
                    continue  # removed since the listing
                raise
            for callback in self._inspected:
                callback(state)
            if settled_ns is not None:
                emitted += self._make_up_transitions(cid, state, settled_ns)
            emitted += self._heal_health(container, state, listed_ns)
        return emitted

    def _make_up_transitions(self, cid: str, state: dict[str, Any], settled_ns: int) -> int:
        missed = self._ledger.compare(cid, container_state(state), settled_ns)
        if not missed:
            return 0
        name = str(state.get("Name") or cid[:12]).lstrip("/")
        self._gap("state", "%d transition(s) of container %s (%s) never arrived as events; "
                  "made up from its state", len(missed), name,
                  ", ".join(m.action for m in missed))
        for index, transition in enumerate(missed):
            if transition.action in ("start", "die"):
                self._health.pop(cid, None)
            self._metrics.recovered.labels(SOURCE, "state").inc()
            self._metrics.events.labels(SOURCE, "container", transition.action).inc()
            self._emit(self._from_state(cid, name, state, transition, index))
        return len(missed)

    def _from_state(self, cid: str, name: str, state: dict[str, Any], transition: Missed,
                    index: int) -> Event:
        config = state.get("Config") or {}
        # Docker's own attributes as the strings Docker sends; our additions typed.
        attributes: dict[str, JSONValue] = {
            str(k): str(v) for k, v in (config.get("Labels") or {}).items()}
        attributes.update(name=name, image=str(config.get("Image", "")))
        with_compose_names(attributes)
        if transition.exit_code is not None:
            attributes["exitCode"] = str(transition.exit_code)
        attributes["restartCount"] = _int(state.get("RestartCount"))
        now = self._clock()
        return Event(
            source=SOURCE, kind="container", action=transition.action,
            subject=Ref(source=SOURCE, kind="container", name=name, id=cid),
            id=f"state:{cid}:{transition.action}:{transition.at_ns}:{index}",
            occurred_at=transition.at_ns / 1e9 if transition.at_ns else now,
            observed_at=now, attributes=attributes, object=state, synthetic=True,
        )

    def _heal_health(self, listed: dict[str, Any], state: dict[str, Any], listed_ns: int) -> int:
        """Emit a health event when the container's health differs from what the stream said."""
        cid = str(listed.get("Id", ""))
        current = state.get("State") or {}
        health = health_of(listed)
        if health is None or not current.get("Running") or current.get("Restarting"):
            # Mid-restart or stopped: Health still shows the last probe's verdict
            # from before the stop. The start event that follows resets health.
            return 0
        health = str((current.get("Health") or {}).get("Status") or health)
        if self._health.get(cid) == health:
            return 0
        self._health[cid] = health
        self._snapshot_ns[cid] = listed_ns
        self._emit(self._synthetic(listed, state, health))
        return 1

    def _synthetic(self, listed: dict[str, Any], state: dict[str, Any], health: str) -> Event:
        now = self._clock()
        cid = str(listed.get("Id", ""))
        names = listed.get("Names") or [cid[:12]]
        name = str(names[0]).lstrip("/")
        attributes = {str(k): str(v) for k, v in (listed.get("Labels") or {}).items()}
        attributes.update(name=name, image=str(listed.get("Image", "")), health=health)
        with_compose_names(attributes)
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
                async with self._catching_up:
                    settled_ns = await self.client.system_time_ns() - SETTLE_NS
                    await self._replay(settled_ns)
                    found = await self.reconcile(settled_ns)
                if found:
                    log.info("periodic reconcile found %d change(s) the event stream did not "
                             "deliver", found)
            except (*CONNECTION_ERRORS, SourceError, ValueError) as exc:
                log.warning("periodic reconcile with docker engine at %s failed: %s",
                            self.client.peer, exc)

    def _set_state(self, connected: bool, synced: bool) -> None:
        self.connected, self.synced = connected, synced
        self._metrics.source_connected.labels(SOURCE).set(int(connected))
        self._metrics.source_synced.labels(SOURCE).set(int(synced))
