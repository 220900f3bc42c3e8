"""Whether a probe's target is up, from the outcomes of its checks: N consecutive failures
make it down (once: a `failed` event), M consecutive successes after that make it up again
(a `recovered` event). Pure: times are passed in, so it is tested on a fake clock.

One failed check is not an outage (a dropped packet, a GC pause); only a run of them is.
A failure while recovering puts the target back down without a second `failed`: it never
came back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# unknown: not checked yet; failing: failed checks, fewer than N; down: `failed` was
# emitted; recovering: down, with successes fewer than M since.
ProbeStatus = Literal["unknown", "up", "failing", "down", "recovering"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome. `error` says why it failed ("" when it passed)."""

    ok: bool
    error: str = ""
    # Why, as a metric label: ok, timeout, refused, dns, tls, status, body, error.
    reason: str = "ok"
    # HTTP status (0: no response, or a TCP check).
    status: int = 0
    latency_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class Transition:
    """What a check changed that is worth an event: the target went down or came back."""

    action: Literal["failed", "recovered"]
    # failed: the consecutive failures (N); recovered: every failed check of the outage.
    failures: int
    # The last failure's reason: what went wrong, or what it recovered from.
    error: str
    # recovered: how long it was down (from the `failed` event).
    down_for: float = 0.0


class ProbeState:
    def __init__(self, failures: int, successes: int) -> None:
        if failures < 1 or successes < 1:
            raise ValueError("failures and successes must be at least 1")
        self.failures_needed = failures
        self.successes_needed = successes
        self.status: ProbeStatus = "unknown"
        self.consecutive_failures = 0
        self.consecutive_successes = 0
        self.last: CheckResult | None = None
        self.last_at: float | None = None
        self.last_error = ""
        self.since: float | None = None  # when `status` last changed
        self._down_at = 0.0
        self._outage_failures = 0

    def record(self, result: CheckResult, at: float) -> Transition | None:
        """Count one check's outcome (at time `at`); the transition it causes, if any."""
        self.last, self.last_at = result, at
        if result.ok:
            return self._success(at)
        return self._failure(result, at)

    def _success(self, at: float) -> Transition | None:
        self.consecutive_failures = 0
        self.consecutive_successes += 1
        if self.status not in ("down", "recovering"):
            self._set("up", at)
            return None
        if self.consecutive_successes < self.successes_needed:
            self._set("recovering", at)
            return None
        self._set("up", at)
        return Transition("recovered", self._outage_failures, self.last_error,
                          down_for=at - self._down_at)

    def _failure(self, result: CheckResult, at: float) -> Transition | None:
        self.consecutive_successes = 0
        self.consecutive_failures += 1
        self.last_error = result.error
        if self.status in ("down", "recovering"):
            self._outage_failures += 1
            self._set("down", at)
            return None
        if self.consecutive_failures < self.failures_needed:
            self._set("failing", at)
            return None
        self._set("down", at)
        self._down_at = at
        self._outage_failures = self.consecutive_failures
        return Transition("failed", self.consecutive_failures, result.error)

    def _set(self, status: ProbeStatus, at: float) -> None:
        if status != self.status:
            self.status, self.since = status, at

    def view(self) -> dict[str, object]:
        """What status() shows of it."""
        last = self.last
        return {"state": self.status, "since": self.since,
                "consecutive_failures": self.consecutive_failures,
                "consecutive_successes": self.consecutive_successes,
                "last_check": self.last_at,
                "last_ok": None if last is None else last.ok,
                "last_error": self.last_error or None,
                "latency_ms": None if last is None else round(last.latency_ms, 3)}
