"""Objects of every kind under one resourceVersion counter, a retained window of history,
and the fan-out of changes to open watches."""

from __future__ import annotations

import asyncio
import builtins
import copy
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.kube.defaults import apply_defaults
from tests.kube.resources import Kind
from tests.kube.status import already_exists, conflict, expired, invalid, not_found
from tests.kube.validation import validate

Obj = dict[str, Any]
Key = tuple[str, str, str]  # (api_version/plural, namespace or "", name)

_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(secrets.choice(_NAME_CHARS) for _ in range(n))


@dataclass(frozen=True)
class Change:
    """One committed change: `prev` lets a filtered watch turn leaving its selector into DELETED."""

    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    kind: Kind
    obj: Obj
    prev: Obj | None


@dataclass
class Watcher:
    kind: Kind
    queue: asyncio.Queue[Change] = field(default_factory=asyncio.Queue)


def _tag(kind: Kind) -> str:
    return f"{kind.api_version}/{kind.plural}"


class Store:
    def __init__(self, history_window: int = 1000) -> None:
        self.rv = 0
        self.history_window = history_window
        self._objects: dict[Key, Obj] = {}
        self._history: deque[Change] = deque()
        # Highest resourceVersion no longer in the retained history: a watch must start at or
        # after it.
        self.compacted = 0
        self._watchers: list[Watcher] = []
        self.listeners: list[Callable[[Change], None]] = []

    # ------------------------------------------------------------------ reads
    def get(self, kind: Kind, namespace: str | None, name: str) -> Obj:
        obj = self._objects.get((_tag(kind), namespace or "", name))
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def find(self, kind: Kind, namespace: str | None, name: str) -> Obj | None:
        obj = self._objects.get((_tag(kind), namespace or "", name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind: Kind, namespace: str | None = None, copies: bool = True) -> list[Obj]:
        """Sorted like the real server; copies=False hands out the stored objects themselves,
        for a caller that only serialises them before anything else runs."""
        tag = _tag(kind)
        items = [copy.deepcopy(o) if copies else o for (t, ns, _), o in self._objects.items()
                 if t == tag and (namespace is None or ns == namespace)]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return items

    def changes_since(self, rv: int) -> builtins.list[Change]:
        if rv < self.compacted:
            raise expired(rv, self.compacted + 1)
        return [c for c in self._history if c.rv > rv]

    # ----------------------------------------------------------------- writes
    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def create(self, kind: Kind, namespace: str | None, obj: Obj, dry_run: bool = False,
               keep_identity: bool = False) -> Obj:
        """keep_identity keeps a fixture's uid and creationTimestamp, so its ownerReferences
        still point at the objects loaded with it."""
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name")
        if not name:
            raise invalid(kind, "", "metadata.name", "Required value: name or generateName is "
                          "required")
        if kind.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        else:
            meta.pop("namespace", None)
        key = (_tag(kind), meta.get("namespace", ""), name)
        if key in self._objects:
            raise already_exists(kind, name)
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        apply_defaults(kind.kind, obj)
        validate(kind, obj)
        if not (keep_identity and meta.get("uid")):
            meta["uid"] = str(uuid.uuid4())
        if not (keep_identity and meta.get("creationTimestamp")):
            meta["creationTimestamp"] = now_rfc3339()
        meta.pop("deletionTimestamp", None)
        if kind.has_spec:
            meta["generation"] = int(meta.get("generation", 1)) if keep_identity else 1
        if dry_run:
            meta["resourceVersion"] = str(self.rv)
            return obj
        meta["resourceVersion"] = str(self._next_rv())
        self._objects[key] = obj
        self._commit(Change(self.rv, "ADDED", kind, copy.deepcopy(obj), None))
        return copy.deepcopy(obj)

    def update(self, kind: Kind, namespace: str | None, name: str, obj: Obj,
               subresource: str | None = None, dry_run: bool = False) -> Obj:
        """PUT semantics: a stale metadata.resourceVersion is a 409; the main resource keeps the
        stored status and the status subresource keeps everything else, as real kinds do."""
        key = (_tag(kind), namespace or "" if kind.namespaced else "", name)
        old = self._objects.get(key)
        if old is None:
            raise not_found(kind, name)
        new = copy.deepcopy(obj)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise invalid(kind, name, "metadata.name", "Invalid value: the name of the object "
                          f"({meta.get('name')}) does not match the name on the URL ({name})")
        wanted = meta.get("resourceVersion")
        if wanted not in (None, "") and wanted != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        if kind.status_subresource:
            if subresource == "status":
                status = new.get("status")
                new = copy.deepcopy(old)
                if status is None:
                    new.pop("status", None)
                else:
                    new["status"] = status
                meta = new["metadata"]
            elif "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        for fixed in ("uid", "creationTimestamp", "namespace", "generation"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
            else:
                meta.pop(fixed, None)
        meta["name"] = name
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        apply_defaults(kind.kind, new)
        validate(kind, new)
        if kind.has_spec and new.get("spec") != old.get("spec"):
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = old["metadata"]["resourceVersion"]
        if new == old:
            # A no-op write keeps its resourceVersion and sends no event, as on a real server.
            return copy.deepcopy(old)
        if dry_run:
            return new
        meta["resourceVersion"] = str(self._next_rv())
        self._objects[key] = new
        self._commit(Change(self.rv, "MODIFIED", kind, copy.deepcopy(new), copy.deepcopy(old)))
        return copy.deepcopy(new)

    def delete(self, kind: Kind, namespace: str | None, name: str,
               dry_run: bool = False) -> Obj:
        key = (_tag(kind), namespace or "" if kind.namespaced else "", name)
        old = self._objects.get(key)
        if old is None:
            raise not_found(kind, name)
        if dry_run:
            return copy.deepcopy(old)
        del self._objects[key]
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._next_rv())
        self._commit(Change(self.rv, "DELETED", kind, copy.deepcopy(gone), copy.deepcopy(old)))
        return gone

    def mutate(self, kind: Kind, namespace: str | None, name: str,
               change: Callable[[Obj], None], subresource: str | None = None) -> Obj:
        """Read-modify-write for controllers and test helpers."""
        obj = self.get(kind, namespace, name)
        change(obj)
        obj["metadata"].pop("resourceVersion", None)
        return self.update(kind, namespace, name, obj, subresource=subresource)

    # --------------------------------------------------------------- history
    def compact(self) -> None:
        """Forget all history: every watch from an earlier version now gets 410."""
        self._history.clear()
        self.compacted = self.rv

    def _commit(self, change: Change) -> None:
        self._history.append(change)
        while len(self._history) > self.history_window:
            self.compacted = self._history.popleft().rv
        for w in self._watchers:
            if w.kind == change.kind:
                w.queue.put_nowait(change)
        for listener in list(self.listeners):
            listener(change)

    def subscribe(self, kind: Kind) -> Watcher:
        w = Watcher(kind)
        self._watchers.append(w)
        return w

    def unsubscribe(self, w: Watcher) -> None:
        if w in self._watchers:
            self._watchers.remove(w)

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

