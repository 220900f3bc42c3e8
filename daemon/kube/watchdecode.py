"""Watch lines decoded straight into the trimmed form the cache keeps.

`trim()` works on what a generic JSON decode built: every managedFields entry, env
variable and probe of a Pod becomes dicts and strings first, only to be dropped, and
what is kept is then copied and interned string by string, on every update. Here a line
is decoded by msgspec into Structs made from trim's SPECS:

- apiVersion, kind, metadata (only the fields trim keeps: managedFields is skipped by
  the C decoder without being built) and the fields kept whole (an Event's, a Role's
  rules) are decoded at once;
- every field of picked keys (a Pod's spec and status) is left as its raw JSON. When
  that text is byte for byte what the cached object was built from (its hash is kept
  next to it: `Cache.apply_trimmed`), the cached part is taken over as it is; most
  updates of a Pod change only its metadata. Otherwise the part is decoded into Structs
  of the fields trim keeps, and `trim.share` interns it, reusing the cached object's
  equal parts.

Whatever the path, the result is what trim() makes of the line's object: the Structs'
fields are in SPECS order (the order trim() writes them in), and a part whose JSON does
not have the shape its Structs expect is decoded generically and picked by trim() itself.
Only the plain case takes this path: ADDED, MODIFIED or DELETED, an object of the
watched kind with a name. Anything else (a bookmark, an ERROR Status, a malformed line)
gives None, and the caller decodes and trims the line as before, errors and all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from daemon.kube.trim import (
    LAST_APPLIED,
    METADATA,
    SPECS,
    If,
    Only,
    Spec,
    filters,
    pick,
    refine,
    share,
)

UNSET = msgspec.UNSET
_WATCH_TYPES = ("ADDED", "MODIFIED", "DELETED")
# Hashes of the raw JSON of each part of picked keys an object was built from, in SPECS
# order; None for a part the object does not have.
Digests = tuple["int | None", ...]


@dataclass(frozen=True, slots=True)
class Trimmed:
    """A watch event decoded by `decoder()`: its object's head trimmed (apiVersion, kind,
    metadata; not interned yet), the rest still raw until `build` knows what is cached."""

    type: str
    head: dict[str, Any]  # and the fields kept whole, decoded too
    raws: tuple[bytes | None, ...]  # the JSON of each field of picked keys, in SPECS order
    parts: _Parts

    @property
    def object(self) -> dict[str, Any]:
        """What the watch handler reads before the cache: the metadata."""
        return self.head

    def build(self, old: dict[str, Any] | None, digests: Digests | None
              ) -> tuple[dict[str, Any], Digests]:
        """The object as trim() makes it, interned, sharing what `old` (the cached object,
        built from raw parts with these `digests`) has the same; and its own digests."""
        parts = self.parts
        shared: dict[str, Any] = share(self.head, old)
        out = shared if not parts.whole else {key: shared[key] for key in _HEAD}
        mine = tuple(None if raw is None else hash(raw) for raw in self.raws)
        for key, i in parts.layout:
            if i < 0:  # kept whole: decoded with the head
                if key in shared:
                    out[key] = shared[key]
                continue
            raw = self.raws[i]
            if raw is None:
                continue
            before = old.get(key, _MISSING) if old is not None else _MISSING
            if digests is not None and digests[i] == mine[i] and before is not _MISSING:
                out[key] = before
            else:
                out[key] = parts.decode(i, raw, before)
        return out, mine


class _Parts:
    """How one kind's fields beyond metadata are decoded: a field kept whole with the
    head (Any), one of picked keys from its raw JSON (a spec, a status)."""

    def __init__(self, kind: str) -> None:
        spec = SPECS[kind]
        self.whole = tuple(key for key, sub in spec.items() if sub is None)
        self.keys = tuple(key for key, sub in spec.items() if sub is not None)
        # Each field in trim's order: its index in `keys`, or -1 for a whole one.
        self.layout = tuple((key, self.keys.index(key) if key in self.keys else -1)
                            for key in spec)
        self._specs = tuple(spec[key] for key in self.keys)
        # The parts some of whose list items trim() drops (a Pod's spec: env, ports).
        self._filtered = tuple(filters(sub) for sub in self._specs)
        self._decoders = tuple(msgspec.json.Decoder(_type(f"{kind}_{key}", spec[key])).decode
                               for key in self.keys)

    def decode(self, i: int, raw: bytes, before: Any) -> Any:
        try:
            value = msgspec.to_builtins(self._decoders[i](raw))
        except msgspec.ValidationError:
            # Not the shape the Structs take (a list of lists, a number for a mapping):
            # trim() decides what of it to keep, as for any object it trims.
            return pick(_generic(raw), self._specs[i])
        if self._filtered[i]:
            value = refine(value, self._specs[i])
        return share(value, before)


def decoder(kind: str) -> Callable[[bytes], Trimmed | None] | None:
    """The fast decoder of watch lines of `kind`; None for a kind trim() does not know."""
    found = _DECODERS.get(kind)
    if found is None and kind in SPECS:
        found = _DECODERS[kind] = _make(kind)
    return found


def _make(kind: str) -> Callable[[bytes], Trimmed | None]:
    parts = _Parts(kind)
    metadata = _struct(f"{kind}Metadata", {key: _field("metadata", sub)
                                           for key, sub in METADATA.items()})
    obj_type = _struct(f"{kind}Object", {
        "apiVersion": (Any, None), "kind": (Any, UNSET),
        "metadata": (metadata | msgspec.UnsetType, UNSET),
        **{key: (Any, UNSET) if key in parts.whole else (msgspec.Raw | msgspec.UnsetType, UNSET)
           for key in SPECS[kind]}})
    event_type = msgspec.defstruct(f"{kind}WatchEvent", [
        ("object", obj_type), ("type", Any, UNSET)])
    decode = msgspec.json.Decoder(event_type).decode
    to_builtins = msgspec.to_builtins

    def fast(line: bytes) -> Trimmed | None:
        try:
            event: Any = decode(line)
        except msgspec.DecodeError:  # also ValidationError: a shape the Structs do not take
            return None
        obj = event.object
        meta = obj.metadata
        if event.type not in _WATCH_TYPES or obj.kind != kind or meta is UNSET or not (
                isinstance(meta.name, str) and meta.name):
            return None
        head: dict[str, Any] = {"apiVersion": obj.apiVersion, "kind": kind,
                                "metadata": to_builtins(meta)}
        annotations = head["metadata"].get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            head["metadata"]["annotations"] = {k: v for k, v in annotations.items()
                                               if k != LAST_APPLIED}
        for key in parts.whole:
            if (value := getattr(obj, key)) is not UNSET:
                head[key] = value  # decoded as Any: dicts and lists already
        raws = tuple(None if (raw := getattr(obj, key)) is UNSET else bytes(raw)
                     for key in parts.keys)
        return Trimmed(event.type, head, raws, parts)

    return fast


def _type(name: str, spec: Spec) -> Any:
    """The type of a value trim() picks by `spec`: anything, for a value kept whole; a
    mapping of the picked keys (or a list of them) otherwise."""
    if spec is None:
        return Any
    keys = spec.spec if isinstance(spec, Only | If) else spec
    sub = _struct(name, {key: _field(f"{name}_{key}", s) for key, s in keys.items()})
    return sub | list[sub] | None  # type: ignore[valid-type]


def _field(name: str, spec: Spec) -> tuple[Any, Any]:
    """(type, default) of a field of a Struct: absent stays absent."""
    typ = _type(name, spec)
    return (typ if spec is None else typ | msgspec.UnsetType, UNSET)


def _struct(name: str, fields: dict[str, tuple[Any, Any]]) -> Any:
    return msgspec.defstruct(name, [(key, typ, default) for key, (typ, default)
                                    in fields.items()])


_MISSING = object()
_HEAD = ("apiVersion", "kind", "metadata")
_generic = msgspec.json.Decoder().decode
_DECODERS: dict[str, Callable[[bytes], Trimmed | None]] = {}
