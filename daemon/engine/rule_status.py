"""What `/readyz` says about rules: the active set, its warnings, and a reload that failed.

A failed reload keeps the previous set, so readiness stays true (a good set is
active) but the body names the failure until a reload succeeds: the rules on disk
are then not the rules running, and an operator looking at `/readyz` should see it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass
class RuleStatus:
    loaded: bool = False
    count: int = 0
    errors: tuple[str, ...] = ()
    failed_at: float | None = None
    warnings: tuple[str, ...] = ()

    def succeeded(self, count: int, warnings: Iterable[object]) -> None:
        self.loaded, self.count = True, count
        self.errors, self.failed_at = (), None
        self.warnings = tuple(map(str, warnings))

    def failed(self, errors: Iterable[object], now: float) -> None:
        self.errors, self.failed_at = tuple(map(str, errors)), now

    def readiness(self) -> dict[str, Any]:
        if not self.loaded:
            return {"ready": False, "errors": list(self.errors) or ["not loaded yet"]}
        report: dict[str, Any] = {"ready": True, "count": self.count}
        if self.failed_at is not None:
            report["last_failed_reload"] = {"time": _iso(self.failed_at),
                                            "errors": list(self.errors)}
        if self.warnings:
            report["warnings"] = list(self.warnings)
        return report


def _iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")
