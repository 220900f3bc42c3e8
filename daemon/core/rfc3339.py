"""RFC 3339 timestamps as Go's time.Time marshals them (Alertmanager, Prometheus):
nanosecond fractions, `Z` or an offset."""

from __future__ import annotations

import re
from datetime import datetime

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$")
_SHOWN = 40


def parse(text: str) -> float:
    """Unix seconds; ValueError saying what is wrong otherwise."""
    match = _RFC3339.match(text)
    if match is None:
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "..."
        raise ValueError(f"expected an RFC 3339 time, got {shown!r}")
    whole, fraction, zone = match.groups()
    try:
        # datetime reads microseconds at most: the fraction is added on its own.
        seconds = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone)).timestamp()
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"not a valid time: {exc}") from None
    return seconds + (int(fraction.ljust(9, "0")) / 1e9 if fraction else 0.0)
