"""Intents left open: an ``act`` or ``escalate`` decision with no ``outcome`` after it.

Each such decision promises exactly one outcome record with the same incident id;
one without is what a crash mid-action leaves, and the daemon closes it on start.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .log import AuditLog

INTENT_DECISIONS = frozenset({"act", "escalate"})
# As far back as the daemon restores guards: older intents are long settled.
DEFAULT_HORIZON = 20_000


def intent_incident(record: Mapping[str, Any]) -> str | None:
    """The incident id ``record`` promises an outcome for, if it is an intent."""
    incident = record.get("incident")
    if (
        record.get("kind") == "decision"
        and record.get("decision") in INTENT_DECISIONS
        and isinstance(incident, str)
    ):
        return incident
    return None


def outcome_incident(record: Mapping[str, Any]) -> str | None:
    """The incident id an ``outcome`` record closes."""
    incident = record.get("incident")
    if record.get("kind") == "outcome" and isinstance(incident, str):
        return incident
    return None


def open_intents(
    log_or_path: AuditLog | Path | str, *, horizon_records: int = DEFAULT_HORIZON
) -> list[dict[str, Any]]:
    """Intent records with no outcome after them, oldest first.

    Reads backwards through at most ``horizon_records`` records, so an outcome is
    always seen before the intent it closes. Raises AuditUnavailable if the log
    cannot be read; a missing log has no open intents.
    """
    if horizon_records <= 0:
        raise ValueError(f"horizon_records must be positive, not {horizon_records}")
    log = log_or_path if isinstance(log_or_path, AuditLog) else AuditLog(Path(log_or_path))
    closed: set[str] = set()
    found: list[dict[str, Any]] = []
    for record in itertools.islice(log.iter_backwards(), horizon_records):
        if (done := outcome_incident(record)) is not None:
            closed.add(done)
        elif (promised := intent_incident(record)) is not None and promised not in closed:
            found.append(record)
    found.reverse()
    return found
