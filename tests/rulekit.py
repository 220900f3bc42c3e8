"""Build rule sets and Docker-shaped events for engine and executor tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from daemon.app import Daemon
from daemon.core.events import Event
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.settings import Settings
from daemon.sources.docker import normalise

CATALOG = Daemon.action_catalog(Settings())
_last_nano = 0


def _now_nano() -> int:
    # Events happen now, and never twice at the same nanosecond: the executor compares
    # them with containers' start times, the source tells them apart by time.
    global _last_nano
    _last_nano = max(time.time_ns(), _last_nano + 1)  # +1 ns: never runs ahead of the clock
    return _last_nano



def ruleset(tmp_path: Path, text: str) -> RuleSet:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    loaded, errors = load_ruleset([path], CATALOG)
    assert not errors, errors
    return loaded


def docker_event(action: str, container: str = "c1" * 32, name: str = "web",
                 **attributes: str) -> Event:
    """An event as the engine's /events stream delivers it (the shape of `docker events`)."""
    raw: dict[str, Any] = {
        "status": action, "id": container, "from": "remedyd-test/busybox:latest",
        "Type": "container", "Action": action,
        "Actor": {"ID": container, "Attributes": {
            "image": "remedyd-test/busybox:latest", "name": name, **attributes}},
        "scope": "local", "time": (nano := _now_nano()) // 1_000_000_000, "timeNano": nano,
    }
    event = normalise(raw, observed_at=0.0)
    assert event is not None
    return event
