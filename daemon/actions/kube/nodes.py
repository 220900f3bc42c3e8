"""Node actions: cordon and uncordon, sending what `kubectl cordon` / `uncordon` send. From a
pod's event they act on the pod's node (KubeAction resolves it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Refusal
from daemon.actions.kube.base import KubeAction, api_error
from daemon.clients.kubernetes import RESOURCES, STRATEGIC_MERGE_PATCH, KubeError
from daemon.core.decisions import Decision

NODES = RESOURCES["nodes"]


def cordoned(node: Mapping[str, Any] | None) -> bool:
    return bool(((node or {}).get("spec") or {}).get("unschedulable"))


class _Schedulability(KubeAction):
    # What spec.unschedulable becomes; kubectl sends null, not false, to uncordon (the
    # field is omitempty, so its two-way merge patch deletes it).
    unschedulable: ClassVar[bool]

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        if cordoned(state) == self.unschedulable:
            already = "already cordoned" if self.unschedulable else "not cordoned"
            return Refusal("preflight", f"node {decision.target.name} is {already}")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        node = decision.target.name
        patch = {"spec": {"unschedulable": True if self.unschedulable else None}}
        try:
            await self.client.patch(NODES, None, node, patch, STRATEGIC_MERGE_PATCH)
        except KubeError as exc:
            raise api_error(exc, f"{self.name.partition('.')[2]} node {node}") from None
        return {"node": node, "unschedulable": self.unschedulable}

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        try:
            node = await self.client.get(NODES, None, decision.target.name)
        except KubeError:
            return False
        return node is not None and cordoned(node) == self.unschedulable


class Cordon(_Schedulability):
    name = "kubernetes.cordon"
    unschedulable = True


class Uncordon(_Schedulability):
    name = "kubernetes.uncordon"
    unschedulable = False


CLASSES: tuple[type[KubeAction], ...] = (Cordon, Uncordon)
