"""The first guard: no action without a record of it, and a log that heals by itself.

While the audit log cannot be written (disk full, read-only, unopenable) every
decision is refused and tallied by rule and guard. The next decision, and a
timer, probe the log by writing the `recovery` record that summarises what was
refused meanwhile; the first probe that lands ends the outage.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.audit.log import AuditLog, AuditUnavailable, format_time
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.audit")


class AuditGate(BaseGuard):
    name = "audit"

    def __init__(self, audit: AuditLog, metrics: Metrics,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.audit = audit
        self.metrics = metrics
        self._wall = wall_clock
        self.down_since: float | None = None
        self.refused: Counter[tuple[str, str]] = Counter()
        self.last_recovery: dict[str, Any] | None = None

    @property
    def writable(self) -> bool:
        return self.down_since is None and self.audit.healthy

    async def check(self, ctx: GuardContext) -> GuardResult:
        if self.writable or self.try_recover():
            return self.ok()
        return self.refuse(f"audit log unwritable: {self.audit.last_error}")

    def failed(self) -> None:
        """A write or open failed: remediation stops until a probe succeeds."""
        self.metrics.audit_failures.inc()
        self.metrics.audit_healthy.set(0)
        if self.down_since is None:
            self.down_since = self._wall()

    def refused_decision(self, rule: str, guard: str = "audit") -> None:
        self.refused[(rule, guard)] += 1
        self.metrics.suppressed.labels(rule, guard).inc()

    def try_recover(self) -> bool:
        """Write the recovery record; True when the log takes it (or was never down)."""
        if self.writable:
            return True
        now = self._wall()
        since = self.down_since if self.down_since is not None else now
        by_rule: dict[str, dict[str, int]] = {}
        for (rule, guard), count in sorted(self.refused.items()):
            by_rule.setdefault(rule, {})[guard] = count
        summary: dict[str, Any] = {
            "reason": "audit log writable again",
            "error": self.audit.last_error,
            "unwritable_since": format_time(since),
            "unwritable_until": format_time(now),
            "unwritable_s": round(now - since, 3),
            "refused": by_rule,
            "refused_total": sum(self.refused.values()),
        }
        try:
            try:
                record = self.audit.append("recovery", summary)
            except RuntimeError:  # never opened (or lost its file): open it first
                self.audit.open()
                record = self.audit.append("recovery", summary)
        except (AuditUnavailable, RuntimeError):
            self.metrics.audit_healthy.set(0)
            return False
        self.down_since = None
        self.refused.clear()
        self.last_recovery = {"seq": record["seq"], "time": record["time"],
                              "unwritable_s": summary["unwritable_s"],
                              "refused_total": summary["refused_total"]}
        self.metrics.audit_healthy.set(1)
        log.warning("audit log %s writable again after %.1fs; %d decision(s) were refused "
                    "meanwhile (recovery record seq %d)", self.audit.path,
                    summary["unwritable_s"], summary["refused_total"], record["seq"])
        return True

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"ready": self.writable, "path": str(self.audit.path)}
        if not self.writable:
            status["error"] = self.audit.last_error
            if self.down_since is not None:
                status["unwritable_since"] = format_time(self.down_since)
            status["refused_meanwhile"] = sum(self.refused.values())
        if self.last_recovery is not None:
            status["last_recovery"] = self.last_recovery
        return status
