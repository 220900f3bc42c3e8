"""The Docker half of the security posture: each container's inspect output handed to
the posture tracker when it is created, started, updated or renamed, and on every
reconcile listing (which is what finds changes made while remedyd was away).

Inspects run off the event stream's read path, in tasks, a few at a time and one per
container at a time (a burst of events for one container costs at most two inspects),
so a slow engine never holds up the events other rules wait on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from daemon.clients.docker import CONNECTION_ERRORS, DockerClient
from daemon.core.events import Event, Ref
from daemon.security.tracker import PostureTracker
from daemon.sources.docker import DockerSource
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.security.docker")

INSPECT_ON = frozenset({"create", "start", "update", "rename"})
# Container ids destroyed lately, so an inspect that was under way cannot bring one back.
_GONE_KEPT = 1024


class DockerPosture:
    name = "docker-posture"

    def __init__(self, source: DockerSource, client: DockerClient, tracker: PostureTracker,
                 metrics: Metrics, *, concurrency: int = 8) -> None:
        self.source = source
        self.client = client
        self.tracker = tracker
        self._metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()  # an event arrived while its inspect ran
        self._gone: OrderedDict[str, None] = OrderedDict()
        self.inspected = 0
        self.errors = 0
        source.observe(self.observe)
        source.on_inspected(self.listed)

    def status(self) -> dict[str, Any]:
        # Ready with the Docker source: its first listing is the posture's first sighting.
        return {"synced": self.source.synced, "tracked": len(self.tracker),
                "inspecting": len(self._running), "errors": self.errors,
                # Set: the baseline file could not be loaded; drift is not compared.
                "baseline_error": self.tracker.baseline.error}

    async def run(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- what the Docker source hands over ------------------------------------------------

    def observe(self, event: Event) -> None:
        if event.kind != "container":
            return
        cid = event.subject.id
        if event.action == "destroy":
            self._forget(cid)
            self.tracker.gone(event.subject)
        elif event.action in INSPECT_ON and cid:
            if event.action == "rename":
                old = str(event.attributes.get("oldName") or "").lstrip("/")
                if old:  # the findings were about the old name
                    self.tracker.gone(Ref(source="docker", kind="container", name=old, id=cid))
            self._gone.pop(cid, None)
            self._inspect_soon(cid)

    def listed(self, inspect: dict[str, Any]) -> None:
        if str(inspect.get("Id") or "") in self._gone:
            return
        self._see(inspect, "list")

    # -- internals ----------------------------------------------------------------------

    def _forget(self, cid: str) -> None:
        self._gone[cid] = None
        while len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)
        self._again.discard(cid)

    def _inspect_soon(self, cid: str) -> None:
        if cid in self._running:
            self._again.add(cid)
            return
        task = asyncio.get_running_loop().create_task(self._inspect(cid),
                                                      name=f"posture-inspect-{cid[:12]}")
        self._running[cid] = task

    async def _inspect(self, cid: str) -> None:
        try:
            while True:
                async with self._slots:
                    await self._inspect_once(cid)
                if cid not in self._again:
                    return
                self._again.discard(cid)
        finally:
            self._running.pop(cid, None)

    async def _inspect_once(self, cid: str) -> None:
        try:
            inspect = await self.client.inspect(cid)
        except CONNECTION_ERRORS as exc:
            if getattr(exc, "status", None) == 404:
                log.debug("container %s was removed before it could be inspected", cid[:12])
                return
            self.errors += 1
            self._metrics.security_inspect_errors.inc()
            log.warning("could not inspect container %s for its security posture: %s "
                        "(looked at again on its next event or listing)", cid[:12], exc)
            return
        if cid in self._gone:
            return  # destroyed while the inspect was under way
        self._see(inspect, "live")

    def _see(self, inspect: dict[str, Any], origin: str) -> None:
        self.inspected += 1
        try:
            self.tracker.seen("docker", inspect, origin=origin)
        except Exception:
            # A view that cannot read one container's odd inspect must not end the source.
            self.errors += 1
            self._metrics.security_inspect_errors.inc()
            name = str(inspect.get("Name") or inspect.get("Id") or "?").lstrip("/")
            log.exception("security posture of container %s could not be computed", name)
