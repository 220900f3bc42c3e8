"""Kubernetes timestamps (RFC 3339, as objects carry them) as epoch seconds."""

from __future__ import annotations

import datetime as dt
from typing import Any


def seconds(stamp: Any) -> float | None:
    """`2024-05-02T09:33:00Z` as epoch seconds; None for anything else (unset, malformed)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return dt.datetime.fromisoformat(stamp).timestamp()
    except ValueError:
        return None
