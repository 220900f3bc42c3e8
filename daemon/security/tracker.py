"""The live posture of every object the sources see, against its baseline.

Each sighting (a Docker event's inspect, a Kubernetes cache change, a relist) costs one
view, one flatten and one compare; a posture event is emitted only when what the checks
would read differs from what was last emitted for the object (its fields, its drift, its
waivers), so a Pod status update or an unchanged relist emits nothing and the engine
decides nothing again. Pure apart from the emit and audit callbacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from daemon.core.events import Event, JSONValue, Ref
from daemon.security.baseline import Baseline
from daemon.security.events import (
    Origin,
    baseline_key,
    gone_event,
    posture_event,
    subject_of,
    view_of,
)
from daemon.security.fields import diff, fingerprint, flatten
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.security")

Audit = Callable[[str, Mapping[str, Any]], object]


class BaselineUnavailable(RuntimeError):
    """The baseline file could not be loaded; nothing can be accepted into it."""


@dataclass(slots=True)
class _Tracked:
    platform: str
    obj: Mapping[str, Any]
    subject: Ref
    view: Mapping[str, JSONValue]
    fields: Mapping[str, JSONValue]
    origin: Origin
    drift: list[dict[str, JSONValue]] = field(default_factory=list)
    state: str = "none"
    waived: list[str] = field(default_factory=list)


class PostureTracker:
    def __init__(self, emit: Callable[[Event], object], baseline: Baseline, audit: Audit,
                 metrics: Metrics | None = None, *, clock: Callable[[], float] = time.time,
                 learn: bool = True) -> None:
        self._emit = emit
        self.baseline = baseline
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        self.learn = learn
        self._objects: dict[str, _Tracked] = {}
        self._count_baseline()

    def __len__(self) -> int:
        return len(self._objects)

    def tracked(self, key: str) -> _Tracked | None:
        return self._objects.get(key)

    def seen(self, platform: str, obj: Mapping[str, Any], *, origin: Origin,
             view: Mapping[str, JSONValue] | None = None) -> Event | None:
        """One sighting of `obj`; the posture event emitted, or None when nothing the
        checks read changed since the last one."""
        view = view_of(platform, obj) if view is None else view
        subject = subject_of(platform, obj)
        key = baseline_key(subject)
        fields = flatten(view)
        before = self._objects.get(key)
        if before is not None and before.subject == subject and before.fields == fields:
            # The fields did not change and the baseline only changes through this
            # tracker (which re-emits itself): the drift and waivers are as emitted.
            before.obj = obj
            return None
        current = _Tracked(platform=platform, obj=obj, subject=subject, view=view,
                           fields=fields, origin=origin)
        self._compare(key, current)
        self._objects[key] = current
        previous_drift = before.drift if before is not None else []
        if current.drift != previous_drift:
            self._drift_changed(key, current)
        return self._emit_posture(current)

    def keys(self) -> list[str]:
        return list(self._objects)

    def reemit(self, key: str) -> Event | None:
        """The object's posture event again, as it is (a rule reload: new or changed
        checks read objects that have not changed since); None if it is gone."""
        tracked = self._objects.get(key)
        if tracked is None:
            return None
        self._compare(key, tracked)  # "captured" was the first sight; it is "same" now
        return self._emit_posture(tracked)

    def gone(self, subject: Ref) -> Event:
        """The object is gone: its findings end; its baseline stays (it may come back)."""
        key = baseline_key(subject)
        tracked = self._objects.get(key)
        if tracked is not None and (not subject.id or tracked.subject.id == subject.id):
            del self._objects[key]
        event = gone_event(subject, self._clock())
        self._emit(event)
        return event

    def accept(self, key: str, checks: Sequence[str] = (), by: str = "",
               reason: str = "") -> dict[str, Any]:
        """Accept the object as it is now: no checks, its fields become its baseline;
        with checks, those checks are waived while its fields stay as they are now.
        Raises KeyError for an object not seen, BaselineUnavailable when the baseline
        file could not be loaded."""
        tracked = self._objects[key]
        if not self.baseline.usable:
            raise BaselineUnavailable(self.baseline.error or "the baseline is unavailable")
        entry = self.baseline.get(key)
        if checks:
            accepted = list(tracked.drift)
            stamp = fingerprint(tracked.fields)
            for check in checks:
                self.baseline.waive(key, check, stamp, by=by, reason=reason)
        else:
            accepted = diff(entry.fields if entry is not None else {}, tracked.fields)
            self.baseline.put(key, tracked.fields, "accepted")
        record: dict[str, Any] = {
            "action": "accepted", "by": by, "reason": reason, "key": key,
            "subject": tracked.subject.as_dict(), "checks": list(checks), "diff": accepted}
        self._audit("baseline", record)
        if self._metrics is not None:
            self._metrics.security_accepted.labels(tracked.subject.kind).inc()
        self._count_baseline()
        # At once, so the finding resolves now rather than at the object's next change.
        previous_drift = tracked.drift
        self._compare(key, tracked)
        if tracked.drift != previous_drift:
            self._drift_changed(key, tracked)
        self._emit_posture(tracked)
        return {**record, "baseline": tracked.state, "waived": list(tracked.waived)}

    # -- internals ----------------------------------------------------------------------

    def _compare(self, key: str, tracked: _Tracked) -> None:
        if not self.baseline.usable:
            tracked.state, tracked.drift, tracked.waived = "none", [], []
            return
        entry = self.baseline.get(key)
        if entry is None:
            if self.learn:
                self.baseline.put(key, tracked.fields, "learned")
                self._count_baseline()
                tracked.state = "captured"
            else:
                tracked.state = "none"
            tracked.drift = []
        else:
            tracked.drift = diff(entry.fields, tracked.fields)
            tracked.state = "drifted" if tracked.drift else "same"
        waivers = self.baseline.waivers_of(key)
        if waivers:
            stamp = fingerprint(tracked.fields)
            tracked.waived = sorted(c for c, w in waivers.items() if w.fingerprint == stamp)
        else:
            tracked.waived = []

    def _drift_changed(self, key: str, tracked: _Tracked) -> None:
        if tracked.drift and self._metrics is not None:
            self._metrics.security_drift_events.labels(tracked.subject.kind).inc()
        if tracked.drift:
            log.warning("security drift of %s: %s", key, ", ".join(
                f"{c['field']}: {c['before']!r} -> {c['after']!r}" for c in tracked.drift))
        else:
            log.info("security posture of %s is back to its baseline", key)
        self._audit("drift", {"subject": tracked.subject.as_dict(), "key": key,
                              "diff": list(tracked.drift), "origin": tracked.origin})

    def _emit_posture(self, tracked: _Tracked) -> Event:
        event = posture_event(tracked.platform, tracked.obj, origin=tracked.origin,
                              view=tracked.view, drift=tracked.drift, baseline=tracked.state,
                              waived=tracked.waived, now=self._clock())
        self._emit(event)
        return event

    def _count_baseline(self) -> None:
        if self._metrics is not None:
            self._metrics.security_baseline_objects.set(len(self.baseline.objects))
