"""Time-based memory of the guards: cooldowns, budgets and escalations.

Pure: every method takes `now` (seconds on a monotonic clock) so that tests
drive it on fake time and nothing here sleeps or reads a clock.
"""

from __future__ import annotations

from collections import deque


class Window:
    """Timestamps of actions within a sliding window."""

    __slots__ = ("_times", "per")

    def __init__(self, per: float) -> None:
        self.per = per
        self._times: deque[float] = deque()

    def used(self, now: float) -> int:
        while self._times and self._times[0] <= now - self.per:
            self._times.popleft()
        return len(self._times)

    def add(self, now: float) -> None:
        self._times.append(now)


class GuardBook:
    """Cooldowns, budgets and escalations, keyed by rule and target."""

    def __init__(self, global_max: int | None, global_per: float) -> None:
        self.global_max = global_max
        self._global = Window(global_per)
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
            window = self._target.setdefault((rule, target), Window(per_target[1]))
            if window.used(now) >= per_target[0]:
                return "budget_target"
        if per_rule is not None:
            window = self._rule.setdefault(rule, Window(per_rule[1]))
            if window.used(now) >= per_rule[0]:
                return "budget_rule"
        if self.global_max is not None and self._global.used(now) >= self.global_max:
            return "budget_global"
        return None

    def spend(self, rule: str, target: str, now: float,
              per_target: tuple[int, float] | None, per_rule: tuple[int, float] | None) -> None:
        self._last_action[(rule, target)] = now
        if per_target is not None:
            self._target.setdefault((rule, target), Window(per_target[1])).add(now)
        if per_rule is not None:
            self._rule.setdefault(rule, Window(per_rule[1])).add(now)
        self._global.add(now)

    def escalate_once(self, rule: str, target: str, per: float, now: float) -> bool:
        """True the first time a budget is found exhausted within one budget window."""
        last = self._escalated.get((rule, target))
        if last is not None and now - last < per:
            return False
        self._escalated[(rule, target)] = now
        return True
