"""Time-based memory of the guards: cooldowns, budgets, escalations, notification rate.

Pure: every method takes `now` (seconds on a monotonic clock) so that tests
drive it on fake time and nothing here sleeps or reads a clock. Window lengths
are passed on every call, not fixed when a window is first used, so a `budget.per`
or `cooldown` changed by a rule reload applies from the reload on.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import deque


class Window:
    """Timestamps of actions, counted over whatever window length the caller asks about."""

    __slots__ = ("_horizon", "_times")

    def __init__(self) -> None:
        self._times: deque[float] = deque()
        self._horizon = 0.0  # the longest window asked about: older entries can go

    def used(self, now: float, per: float) -> int:
        self._horizon = max(self._horizon, per)
        while self._times and self._times[0] <= now - self._horizon:
            self._times.popleft()
        return len(self._times) - bisect_right(self._times, now - per)

    def add(self, now: float) -> None:
        self._times.append(now)

    def newest(self) -> float | None:
        return self._times[-1] if self._times else None


class GuardBook:
    """Cooldowns, budgets and escalations, keyed by rule and target."""

    def __init__(self, global_max: int | None, global_per: float) -> None:
        self.global_max = global_max
        self.global_per = global_per
        self._global = Window()
        self._notifications = Window()
        self._last_action: dict[tuple[str, str], float] = {}
        self._target: dict[tuple[str, str], Window] = {}
        self._rule: dict[str, Window] = {}
        self._escalated: dict[tuple[str, str], float] = {}

    def cooldown_left(self, rule: str, target: str, cooldown: float, now: float) -> float:
        last = self._last_action.get((rule, target))
        if last is None or cooldown <= 0:
            return 0.0
        return max(0.0, last + cooldown - now)

    def exhausted(
        self, rule: str, target: str, now: float,
        per_target: tuple[int, float] | None, per_rule: tuple[int, float] | None,
    ) -> str | None:
        """The name of the first budget that forbids one more action, or None."""
        if per_target is not None:
            window = self._target.get((rule, target))
            if window is not None and window.used(now, per_target[1]) >= per_target[0]:
                return "budget_target"
        if per_rule is not None:
            window = self._rule.get(rule)
            if window is not None and window.used(now, per_rule[1]) >= per_rule[0]:
                return "budget_rule"
        if self.global_max is not None and (
            self._global.used(now, self.global_per) >= self.global_max
        ):
            return "budget_global"
        return None

    def mark_acted(self, rule: str, target: str, now: float) -> None:
        """Start the cooldown of (rule, target)."""
        self._last_action[(rule, target)] = now

    def spend(self, rule: str, target: str, now: float,
              per_target: tuple[int, float] | None, per_rule: tuple[int, float] | None) -> None:
        """Count one action that changed something against every budget it falls under."""
        if per_target is not None:
            self._target.setdefault((rule, target), Window()).add(now)
        if per_rule is not None:
            self._rule.setdefault(rule, Window()).add(now)
        self._global.add(now)

    def escalate_once(self, rule: str, target: str, per: float, now: float) -> bool:
        """True the first time a budget is found exhausted within one budget window."""
        last = self._escalated.get((rule, target))
        if last is not None and now - last < per:
            return False
        self._escalated[(rule, target)] = now
        return True

    def escalated_within(self, rule: str, target: str, per: float, now: float) -> bool:
        last = self._escalated.get((rule, target))
        return last is not None and now - last < per

    def notifications(self, now: float, per: float) -> int:
        return self._notifications.used(now, per)

    def notified(self, now: float) -> None:
        self._notifications.add(now)

    def sweep(self, now: float, longest: float) -> int:
        """Forget what no window of at most `longest` seconds can still see; returns how many."""
        horizon = now - longest
        dropped = 0
        for key in [k for k, t in self._last_action.items() if t <= horizon]:
            del self._last_action[key]
            dropped += 1
        for key in [k for k, t in self._escalated.items() if t <= horizon]:
            del self._escalated[key]
            dropped += 1
        for key in [k for k, w in self._target.items() if (w.newest() or horizon) <= horizon]:
            del self._target[key]
            dropped += 1
        return dropped

    def size(self) -> int:
        return len(self._last_action) + len(self._escalated) + len(self._target)
