"""What the sources put into events that a test or an audit record leaves out."""

from __future__ import annotations

# The one kind a source emits, so a test need not name it.
DEFAULT_KINDS = {"docker": "container", "probe": "probe"}

# What an action ends, as its source says (see Event.resolves).
_RESOLVES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("probe", "probe", "recovered"): ("failed",),
    ("webhook", "alert", "resolved"): ("firing",),
    ("kubernetes", "pod", "ready"): ("unready",),
    ("kubernetes", "node", "ready"): ("not_ready",),
}


def default_resolves(source: str, kind: str, action: str) -> tuple[str, ...]:
    if source == "kubernetes" and action == "deleted":
        return ("*",)  # the object is gone: whatever waited on it ends
    return _RESOLVES.get((source, kind, action), ())
