"""The security view of a Kubernetes object (contract: daemon/security/events.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.core.events import JSONValue


def kube_view(obj: Mapping[str, Any]) -> dict[str, JSONValue]:
    """Normalised security-relevant content of `obj`; every key present."""
    metadata = obj.get("metadata") or {}
    return {"namespace": str(metadata.get("namespace") or "")}
