"""The security view of a Docker container's inspect output (contract:
daemon/security/events.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.core.events import JSONValue


def docker_view(inspect: Mapping[str, Any]) -> dict[str, JSONValue]:
    """Normalised security-relevant content of `inspect`; every key present."""
    host = inspect.get("HostConfig") or {}
    return {"privileged": bool(host.get("Privileged"))}
