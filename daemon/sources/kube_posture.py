"""The Kubernetes half of the security posture: the source's cache changes handed to
the posture tracker. Placeholder of the contract commit; built in this issue."""

from __future__ import annotations

import asyncio
from typing import Any


class KubePosture:
    name = "kubernetes-posture"

    def __init__(self, source: Any, tracker: Any) -> None:
        self.source = source
        self.tracker = tracker

    async def run(self) -> None:
        await asyncio.Event().wait()

    def status(self) -> dict[str, Any]:
        return {"synced": True}
