"""Build rule sets and Docker-shaped events for engine and executor tests."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from daemon.app import Daemon
from daemon.core.events import Event
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.settings import Settings
from daemon.sources.docker import normalise

CATALOG = Daemon.action_catalog(Settings())
_clock = itertools.count(1_795_750_000_000_000_000, 1_000_000)


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
        "scope": "local", "time": 1795750000, "timeNano": next(_clock),
    }
    event = normalise(raw, observed_at=0.0)
    assert event is not None
    return event
