"""An asyncio event loop on a fake clock: timers (coalescing windows, action timeouts,
verification windows) fire when the test moves time past them, never in real time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import Context
from typing import TypeVarTuple, Unpack

_Ts = TypeVarTuple("_Ts")

# Rounds of the loop a settle() waits at most for what is runnable to have run: a task
# that never stops rescheduling itself is a bug to report, not a hang.
SETTLE_ROUNDS = 100_000


class SettleError(RuntimeError):
    """Something kept the loop busy without end."""


class FakeClockLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.now = start
        # Timers that have neither run nor been cancelled.
        self._pending: set[asyncio.TimerHandle] = set()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[Unpack[_Ts]], object],
                *args: *_Ts, context: Context | None = None) -> asyncio.TimerHandle:
        cell: list[asyncio.TimerHandle] = []

        def run(*given: *_Ts) -> None:
            self._pending.discard(cell[0])
            callback(*given)

        handle = super().call_at(when, run, *args, context=context)
        cell.append(handle)
        self._pending.add(handle)
        return handle

    def next_timer(self) -> float | None:
        """When the next timer that has not run or been cancelled is due."""
        self._pending = {h for h in self._pending if not h.cancelled()}
        return min((h.when() for h in self._pending), default=None)

    def _runnable(self) -> int:
        # BaseEventLoop's queue of callbacks ready to run (CPython's, since 3.4).
        ready = getattr(self, "_ready", ())
        return len(ready)

    async def settle(self) -> None:
        """Return once everything that can run at this time has run (timers due now
        included), so what a test reads next is the state after it."""
        for _ in range(SETTLE_ROUNDS):
            await asyncio.sleep(0)
            if not self._runnable() and not any(
                    h.when() <= self.now and not h.cancelled() for h in self._pending):
                return
        raise SettleError(f"the event loop did not settle in {SETTLE_ROUNDS} rounds")
