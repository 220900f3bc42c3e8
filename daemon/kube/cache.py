"""The store of trimmed objects a Kubernetes watch keeps, and the changes it sees.

Every change comes out as a `Change` (old, new): the transitions are computed from that
pair, so an object delivered twice (a resync, a relist of an unchanged object, a
replayed watch event) changes nothing and fires nothing. A relist replaces a kind's
contents and returns what it implies against the previous contents: an update or a
delete that happened while the watch was down comes out once, marked synthetic.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from daemon.kube.trim import Canon, TrimError, describe, trim
from daemon.kube.watchdecode import Digests, Trimmed

Key = tuple[str, str, str]  # (kind, namespace, name); a Node's namespace is ""


@dataclass(frozen=True, slots=True)
class Change:
    kind: str
    old: dict[str, Any] | None  # None: the object is new to the cache
    new: dict[str, Any] | None  # None: the object was deleted
    # Made up by a relist, not delivered by the watch.
    synthetic: bool = False
    # From a kind's first listing: `old` is unknown, not absent, so only states the
    # object is in count, not changes that led there.
    initial: bool = False


def key_of(obj: dict[str, Any]) -> Key:
    metadata = obj["metadata"]
    return (obj["kind"], metadata.get("namespace") or "", metadata["name"])


class Cache:
    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}
        self._by_uid: dict[str, Key] = {}
        self._children: dict[str, set[Key]] = {}  # controller uid -> objects it controls
        self._synced: set[str] = set()
        # What a watch-decoded object was built from (watchdecode.Digests), with the
        # object itself: a later update's unchanged parts are taken over from it.
        self._digests: dict[Key, tuple[dict[str, Any], Digests]] = {}

    def __len__(self) -> int:
        return len(self._objects)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((kind, namespace, name))

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        key = self._by_uid.get(uid)
        return self._objects.get(key) if key else None

    def children(self, uid: str, kind: str) -> list[dict[str, Any]]:
        """The objects of `kind` whose controller is the object with this uid."""
        return [self._objects[key] for key in sorted(self._children.get(uid, ()))
                if key[0] == kind]

    def objects(self, kind: str) -> Iterator[dict[str, Any]]:
        return (obj for key, obj in self._objects.items() if key[0] == kind)

    def synced(self, kind: str) -> bool:
        """Whether `kind` has been listed once: until then the cache cannot say what exists."""
        return kind in self._synced

    def apply(self, event_type: str, raw: dict[str, Any]) -> Change | None:
        """A watch event (ADDED, MODIFIED, DELETED) applied; None when it changes nothing."""
        if event_type not in ("ADDED", "MODIFIED", "DELETED"):
            raise TrimError(f"{describe(raw)}: unknown watch event type {event_type!r}")
        return self._apply(event_type, trim(raw), None)

    def apply_trimmed(self, event: Trimmed) -> Change | None:
        """apply() of a watch event decoded by daemon.kube.watchdecode: the same change,
        with what the new object has the same as the cached one taken over from it."""
        return self._apply(event.type, event.head, event)

    def _apply(self, event_type: str, new: dict[str, Any], decoded: Trimmed | None
               ) -> Change | None:
        key = key_of(new)
        old = self._objects.get(key)
        if event_type == "DELETED":
            if old is None:
                return None
            self._remove(key, old)
            return Change(key[0], old, None)
        if old is not None and _version(old) == _version(new):
            return None
        digests = None
        if decoded is not None:
            built = self._digests.get(key)
            new, digests = decoded.build(old, built[1] if built is not None and (
                built[0] is old) else None)
            key = key_of(new)
        if old is not None and _uid(old) != _uid(new):
            # Deleted and created again under the same name: the new one has no past.
            self._put(key, old, new, digests)
            return Change(key[0], None, new)
        self._put(key, old, new, digests)
        return Change(key[0], old, new)

    def replace(self, kind: str, items: Iterable[dict[str, Any]],
                api_version: str | None = None, trimmed: bool = False) -> list[Change]:
        """A list of `kind` replaces what the cache holds of it; the changes it implies.

        `trimmed`: the items are `trim_listed`'s already (the informer trims each page as
        it comes in) and are cached as they are. Trimming them again would copy the whole
        kind while the first copies are alive: for 10,000 Pods, ~40 MiB more at the peak,
        and the allocator, left with the freed copies interleaved with the kept ones,
        returned little of it.
        """
        initial = kind not in self._synced
        changes: list[Change] = []
        listed: set[Key] = set()
        for raw in items:
            new = raw if trimmed else trim_listed(raw, kind, api_version)
            key = key_of(new)
            listed.add(key)
            old = self._objects.get(key)
            if old is not None and _version(old) == _version(new):
                continue
            self._put(key, old, new)
            if old is not None and _uid(old) != _uid(new):
                changes.append(Change(kind, old, None, synthetic=True))
                old = None
            changes.append(Change(kind, old, new, synthetic=not initial, initial=initial))
        for key in [k for k in self._objects if k[0] == kind and k not in listed]:
            old = self._objects[key]
            self._remove(key, old)
            changes.append(Change(kind, old, None, synthetic=True))
        self._synced.add(kind)
        return changes

    def _put(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any],
             digests: Digests | None = None) -> None:
        if old is not None:
            self._unindex(key, old)
        self._objects[key] = new
        if digests is not None:
            self._digests[key] = (new, digests)
        else:
            self._digests.pop(key, None)
        uid = new["metadata"].get("uid")
        if uid:
            self._by_uid[uid] = key
        owner = controller_uid(new)
        if owner:
            self._children.setdefault(owner, set()).add(key)

    def _remove(self, key: Key, old: dict[str, Any]) -> None:
        self._unindex(key, old)
        del self._objects[key]
        self._digests.pop(key, None)

    def _unindex(self, key: Key, old: dict[str, Any]) -> None:
        uid = old["metadata"].get("uid")
        if uid and self._by_uid.get(uid) == key:
            del self._by_uid[uid]
        owner = controller_uid(old)
        siblings = self._children.get(owner) if owner else None
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self._children[owner]  # type: ignore[arg-type]


def trim_listed(raw: Any, kind: str, api_version: str | None,
                canon: Canon | None = None) -> dict[str, Any]:
    """A list item of `kind`, trimmed as the cache keeps it (trimming again changes nothing);
    with `canon` (one per listing), sharing the parts equal to other items'."""
    # A list's items carry no kind or apiVersion of their own (kubectl adds them).
    if isinstance(raw, dict) and ("kind" not in raw or "apiVersion" not in raw):
        raw = {"kind": kind, "apiVersion": api_version, **raw}
    new = trim(raw)
    if new["kind"] != kind:
        raise TrimError(f"{describe(raw)}: listed as a {kind}")
    return new if canon is None else canon(new)


def controller_ref(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The ownerReference with controller: true (there is at most one)."""
    for ref in obj["metadata"].get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def controller_uid(obj: dict[str, Any]) -> str | None:
    ref = controller_ref(obj)
    uid = ref.get("uid") if ref else None
    return uid if isinstance(uid, str) and uid else None


def _uid(obj: dict[str, Any]) -> Any:
    return obj["metadata"].get("uid")


def _version(obj: dict[str, Any]) -> Any:
    return obj["metadata"].get("resourceVersion")
