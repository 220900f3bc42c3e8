"""The shared state's I/O: one ConfigMap every replica reads (daemon.kube.statestore holds
its encoding), written by the acting replica as it commits a decision and read back by a
new leader before its first action.

Writes use optimistic concurrency: a merge patch of the data keys that change carries the
resourceVersion last read or written, and a 409 re-reads, applies the same change over
what the other writer wrote and tries again, a bounded number of times. Changes queued
while a write is out go in the next one together, so a burst of decisions costs one
request per round trip, not one each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from daemon.clients.kubernetes import (
    MERGE_PATCH,
    KubeClient,
    KubeError,
    KubeStatusError,
    KubeUnavailable,
)
from daemon.core.decisions import Decision
from daemon.kube import statestore
from daemon.kube.resources import Resource
from daemon.kube.statestore import Change, Entry, StateError

log = logging.getLogger("remedyd.kubernetes.state")

CONFIGMAPS = Resource("configmaps", "v1", "ConfigMap")
# Conflicts in a row before a change is given up (logged; the audit log still has it).
MAX_CONFLICTS = 5


@dataclass
class _Read:
    resource_version: str | None  # None: no ConfigMap yet
    entries: list[Entry]


class SharedState:
    """`restore` hands records to the executor (Executor.restore with the loaded rules);
    `windows(decision)` is how long a decision counts (its longest cooldown or budget)."""

    def __init__(self, client: KubeClient, name: str, namespace: str,
                 restore: Callable[[Sequence[Mapping[str, Any]]], int],
                 windows: Callable[[Decision], float],
                 wall_clock: Callable[[], float] = time.time,
                 max_bytes: int = statestore.MAX_BYTES) -> None:
        self.client, self.name, self.namespace = client, name, namespace
        self._restore, self._windows = restore, windows
        self._wall_clock, self._max_bytes = wall_clock, max_bytes
        self._last: _Read | None = None
        self._queued = Change()
        self._lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        # Incidents whose intent is in the shared state, until their outcome replaces it.
        self._intents: set[str] = set()
        # Why the store is off (a foreign or corrupt ConfigMap), said once.
        self.broken: str | None = None

    @property
    def where(self) -> str:
        return f"ConfigMap {self.namespace}/{self.name}"

    # -- restore ---------------------------------------------------------------------------

    async def restore_shared_state(self) -> None:
        """Before the first action (at start, or on becoming leader): what every replica
        decided within its windows, and what actions remember, handed to the executor."""
        try:
            read = await self._read()
        except StateError as exc:
            self._break(str(exc))
            return
        except KubeError as exc:
            # Not acting on what this replica alone knows: the elector tries again after
            # its next renewal (on start without one, the audit-log restore stands).
            raise KubeUnavailable(f"could not read the shared state from {self.where}: "
                                  f"{exc}") from None
        restored = self._restore(statestore.records(read.entries))
        log.info("restored %d decision(s) and remembered steps from %s (%d entries)",
                 restored, self.where, len(read.entries))

    # -- writes ------------------------------------------------------------------------------

    async def on_decision(self, decision: Decision, record: Mapping[str, Any]) -> None:
        """A decision about to act (the executor awaits this before the actions run): its
        spend and its intent, in the shared state first."""
        if record.get("decision") not in ("act", "escalate"):
            return
        entries = [statestore.decision_entry(record, self._wall_clock()
                                             + self._windows(decision))]
        if (intent := statestore.intent_entry(record)) is not None:
            entries.append(intent)
            self._intents.add(decision.incident_id)
        await self.write(Change.putting(*entries))

    def on_outcome(self, decision: Decision, record: Mapping[str, Any]) -> None:
        """An outcome replaces its intent with what actually happened; it is written in
        the background, since nothing waits for it."""
        change = statestore.outcome_change(record)
        had_intent = decision.incident_id in self._intents
        self._intents.discard(decision.incident_id)
        if not change.ops[0][0] and not had_intent:
            return  # nothing to remember, nor an intent to take back
        task = asyncio.get_running_loop().create_task(
            self.write(change))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def write(self, change: Change) -> None:
        """Apply `change` to the ConfigMap; never raises (the audit log has it anyway)."""
        if self.broken:
            return
        self._queued.ops.extend(change.ops)
        async with self._lock:
            if not self._queued:
                return  # the write out before this one carried it
            batch, self._queued = self._queued, Change()
            try:
                await self._write(batch)
            except StateError as exc:
                self._break(str(exc))
            except KubeError as exc:
                log.error("could not write the shared state %s: %s", self.where, exc)
                self._last = None

    async def close(self) -> None:
        if self._background:
            await asyncio.wait(self._background, timeout=2.0)

    async def _write(self, change: Change) -> None:
        for _ in range(MAX_CONFLICTS):
            last = self._last if self._last is not None else await self._read()
            entries = statestore.trim(statestore.apply(last.entries, change), self._wall_clock(),
                                      self._max_bytes)
            try:
                if last.resource_version is None:
                    answer = await self.client.create(CONFIGMAPS, self.namespace, (
                        statestore.manifest(self.name, self.namespace, entries)))
                else:
                    body = statestore.patch(last.entries, entries, last.resource_version)
                    if not body["data"]:
                        return
                    answer = await self.client.patch(CONFIGMAPS, self.namespace, self.name,
                                                     body, MERGE_PATCH)
            except KubeStatusError as exc:
                if exc.code != 409:  # Conflict on a stale version, AlreadyExists on a create
                    raise
                self._last = None  # another replica wrote: read it and apply ours over it
                continue
            version = (answer.get("metadata") or {}).get("resourceVersion")
            self._last = _Read(str(version), entries) if version else None
            return
        log.error("gave up writing the shared state %s after %d conflicts in a row; this "
                  "change is only in the audit log", self.where, MAX_CONFLICTS)

    async def _read(self) -> _Read:
        found = await self.client.get(CONFIGMAPS, self.namespace, self.name)
        if found is None:
            self._last = _Read(None, [])
        else:
            version = str((found.get("metadata") or {}).get("resourceVersion") or "")
            self._last = _Read(version or None, statestore.decode(found))
        return self._last

    def _break(self, why: str) -> None:
        if self.broken is None:
            log.error("%s; the shared state is off until remedyd restarts, and cooldowns, "
                      "budgets and rollbacks are restored from this replica's audit log only",
                      why)
        self.broken = why
