"""How a rule's state for one subject moves: inactive -> pending (`for`) -> firing ->
resolved, as Prometheus moves an alert, and what each move decides.

The evaluator says what an event showed (the condition held; the state may clear;
neither) and when timers ran out; this module turns that into StateChanges and
decisions. Pure, on the caller's clock.

- A KPI rule (`source: kpi`) samples a level: it decides once, on entering firing, and
  not again while firing. So does a security check (`source: security`): a finding is
  one incident per (check, object) until it is fixed or accepted, not one per event.
  Any other rule decides on every matching event while firing, as before (with `for`,
  each match decides once it has held for `for` again).
- A firing state clears when `clear_when` holds (hysteresis), or without it when `when`
  stops holding; `keep_firing_for` delays that, provided it keeps clearing meanwhile.
  A pending state clears as soon as `when` stops holding.
- An episode (pending or firing through resolved) has one incident id: its decisions,
  its changes and a ladder's later rungs share it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine import flap
from daemon.engine.changes import Change, StateChange
from daemon.engine.ruleset import CompiledRule
from daemon.engine.state import Alert, MatchState, Timer

Seen = Literal["holds", "clears", "neither"]

# Sources whose events report a level (a sample, a posture), not an occurrence.
LEVEL_SOURCES = frozenset({"kpi", "security"})


class Machine:
    def __init__(self, state: MatchState, new_id: Callable[[], str]) -> None:
        self.state = state
        self.new_id = new_id
        self.changes: list[StateChange] = []

    def take_changes(self) -> list[StateChange]:
        changes, self.changes = self.changes, []
        return changes

    # -- what an event showed ---------------------------------------------------------------

    def held(self, compiled: CompiledRule, alert: Alert | None, event: Event, now: float,
             subject_key: str, out: list[Decision]) -> None:
        rule = compiled.rule
        if alert is None:
            alert = self.state.add(rule.name, event.subject, subject_key)
        alert.event = event
        if alert.phase == "inactive":
            alert.incident = self.new_id()
            if rule.for_ > 0:
                alert.phase = "pending"
                self.state.schedule(alert, "for", now + rule.for_)
                self._changed(compiled, alert, "pending", now, event, out)
            else:
                self._fire(compiled, alert, now, event, out)
        elif alert.phase == "firing":
            alert.keep_due = None  # holding again: keep_firing_for starts over next time
            if rule.source in LEVEL_SOURCES:
                if alert.rearmed:
                    alert.rearmed = False
                    out.append(self._decide(compiled, alert, event, now))
                return
            if rule.for_ <= 0:
                out.append(self._decide(compiled, alert, event, now))
            elif alert.for_due is None:  # each match holds for `for` again, as it always did
                self.state.schedule(alert, "for", now + rule.for_)

    def clears(self, compiled: CompiledRule, alert: Alert, event: Event | None, now: float,
               out: list[Decision]) -> None:
        if alert.phase == "pending":
            self._resolve(compiled, alert, now, event, out)
        elif alert.phase == "firing":
            keep = compiled.rule.keep_firing_for
            if keep <= 0:
                self._resolve(compiled, alert, now, event, out)
            elif alert.keep_due is None:
                self.state.schedule(alert, "keep", now + keep)

    @staticmethod
    def neither(alert: Alert) -> None:
        """Not clearing (hysteresis band, occurrences not yet counted): a running
        keep_firing_for stops, since the state did not keep clearing."""
        alert.keep_due = None

    def resolved(self, compiled: CompiledRule, alert: Alert, event: Event, now: float,
                 out: list[Decision]) -> None:
        """An event said so (`resolves`): no keep_firing_for, it is over."""
        if alert.phase != "inactive":
            self._resolve(compiled, alert, now, event, out)

    def gone(self, alert: Alert, event: Event, now: float) -> None:
        """The subject went away (its state is dropped by the caller)."""
        if alert.phase != "inactive":
            self._report(alert, "resolved", now, event)

    # -- what time did ------------------------------------------------------------------------

    def timer(self, compiled: CompiledRule, alert: Alert, timer: Timer, now: float,
              out: list[Decision]) -> None:
        if timer == "for" and alert.phase == "pending":
            self._fire(compiled, alert, now, None, out)
        elif timer == "for" and alert.phase == "firing" and alert.event is not None:
            out.append(self._decide(compiled, alert, alert.event, now))
        elif timer == "keep" and alert.phase == "firing":
            self._resolve(compiled, alert, now, None, out)
        elif timer == "flap":
            self._flap_window(compiled, alert, now)

    # -- moves --------------------------------------------------------------------------------

    def _fire(self, compiled: CompiledRule, alert: Alert, now: float, event: Event | None,
              out: list[Decision]) -> None:
        alert.phase = "firing"
        alert.for_due = None
        self._changed(compiled, alert, "firing", now, event, out)
        assert alert.event is not None  # every episode starts with an event that held
        out.append(self._decide(compiled, alert, alert.event, now))

    def _resolve(self, compiled: CompiledRule, alert: Alert, now: float, event: Event | None,
                 out: list[Decision]) -> None:
        alert.phase = "inactive"
        alert.for_due = alert.keep_due = None
        self._changed(compiled, alert, "resolved", now, event, out)
        rule_flap = compiled.rule.flap
        if rule_flap is None or not alert.changes:
            self.state.drop(alert)
        elif not alert.flapping:
            # Kept only to count changes: dropped once they have all left the window.
            self.state.schedule(alert, "flap", alert.changes[-1] + rule_flap.within)

    def _changed(self, compiled: CompiledRule, alert: Alert, change: Change, now: float,
                 event: Event | None, out: list[Decision]) -> None:
        self._report(alert, change, now, event)
        rule_flap = compiled.rule.flap
        if rule_flap is None:
            return
        times = alert.changes
        times.append(now)
        flap.prune(times, now, rule_flap.within)
        if not alert.flapping and flap.flapping(times, rule_flap):
            alert.flapping = True
            self._report(alert, "flapping", now, event)
            notice = flap.notice(compiled.rule)
            if notice and alert.event is not None:
                out.append(Decision(incident_id=alert.incident, rule=compiled.rule,
                                    event=event or alert.event, target=alert.subject,
                                    actions=notice, decided_at=now))
        if alert.flapping:
            self.state.schedule(alert, "flap", flap.ends_at(times, rule_flap))

    def _flap_window(self, compiled: CompiledRule, alert: Alert, now: float) -> None:
        rule_flap = compiled.rule.flap
        times = alert.changes
        if rule_flap is not None:
            flap.prune(times, now, rule_flap.within)
        if alert.flapping:
            if rule_flap is not None and flap.flapping(times, rule_flap):
                self.state.schedule(alert, "flap", flap.ends_at(times, rule_flap))
                return
            alert.flapping = False
            self._report(alert, "flapping_ended", now, None)
        if alert.phase != "inactive":
            return
        if rule_flap is not None and times:
            self.state.schedule(alert, "flap", times[-1] + rule_flap.within)
        else:
            self.state.drop(alert)

    def _report(self, alert: Alert, change: Change, now: float, event: Event | None) -> None:
        self.changes.append(StateChange(alert.rule, alert.subject, change, alert.incident,
                                        now, event))

    @staticmethod
    def _decide(compiled: CompiledRule, alert: Alert, event: Event, now: float) -> Decision:
        return Decision(incident_id=alert.incident, rule=compiled.rule, event=event,
                        target=event.subject, actions=tuple(compiled.rule.actions),
                        decided_at=now, flapping=alert.flapping)
