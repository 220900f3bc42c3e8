"""Helpers every long-running loop uses."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, initial: float = 0.5, maximum: float = 30.0, factor: float = 2.0,
                 rng: Callable[[], float] = random.random) -> None:
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._attempt = 0
        self._rng = rng

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * self.factor ** self._attempt)
        self._attempt += 1
        # Half fixed, half random: never zero (no hot loop), still spreads reconnects.
        return ceiling / 2 + self._rng() * ceiling / 2

    def reset(self) -> None:
        self._attempt = 0
