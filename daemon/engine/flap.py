"""Flap detection: more than `changes` changes of a rule's state for one subject within
`within`, and what is said, once, when that starts.

A state that keeps going firing -> resolved -> firing is a signal hovering at its
threshold or a repair that does not hold; acting on every swing makes it worse. The
engine marks the decisions it makes meanwhile (the `flapping` guard refuses them) and
emits one notification instead.
"""

from __future__ import annotations

from daemon.core.rules import ActionSpec, Flap, Rule

# Steps that tell a human rather than change the target. The engine knows actions only
# by name (it never imports them); every notifying action lives under `notify.`.
NOTIFYING = "notify."


def prune(times: list[float], now: float, within: float) -> None:
    """Forget the changes that left the window (times are in order, oldest first)."""
    expired = 0
    while expired < len(times) and times[expired] <= now - within:
        expired += 1
    del times[:expired]


def flapping(times: list[float], flap: Flap) -> bool:
    return len(times) > flap.changes


def ends_at(times: list[float], flap: Flap) -> float:
    """When the count in the window falls back to `changes`, if no change comes first."""
    return times[-(flap.changes + 1)] + flap.within


def notice(rule: Rule) -> tuple[ActionSpec, ...]:
    """What runs once when flapping starts: `flap.notify`, else the rule's own notifying
    steps (from `actions` and `escalate`, each once)."""
    if rule.flap is not None and rule.flap.notify:
        return tuple(rule.flap.notify)
    found: list[ActionSpec] = []
    for spec in (*rule.actions, *rule.escalate):
        if spec.name.startswith(NOTIFYING) and spec not in found:
            found.append(spec)
    return tuple(found)
