"""Metadata actions: set and remove labels or annotations on the event's subject (a pod,
ReplicaSet, Deployment or node) with a JSON merge patch, as `kubectl label` / `annotate` do
(null removes a key)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Refusal
from daemon.actions.kube.base import KubeAction, api_error, where
from daemon.actions.params import MetadataParams
from daemon.clients.kubernetes import MERGE_PATCH, KubeError
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError
from daemon.core.events import Ref


def _where(target: Ref) -> str:
    return f"{target.kind} {where(target)}"


class _Metadata(KubeAction):
    field: ClassVar[str]  # "labels" | "annotations"

    def _current(self, state: Mapping[str, Any] | None) -> Mapping[str, Any]:
        return ((state or {}).get("metadata") or {}).get(self.field) or {}

    def _pending(self, params: MetadataParams,
                 current: Mapping[str, Any]) -> dict[str, str | None]:
        """The part of the change the object does not have yet (key -> value, None: remove)."""
        changes: dict[str, str | None] = {k: v for k, v in params.set.items()
                                          if current.get(k) != v}
        changes.update({k: None for k in params.remove if k in current})
        return changes

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        assert isinstance(params, MetadataParams)
        if not self._pending(params, self._current(state)):
            return Refusal("preflight", f"{_where(decision.target)} already has these "
                           f"{self.field}: nothing to change")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, MetadataParams)
        target = decision.target
        # The whole change, not only the pending part: a merge patch is idempotent.
        changes: dict[str, str | None] = {**params.set, **dict.fromkeys(params.remove)}
        try:
            await self.client.patch(self.resource_of(target), target.namespace or None,
                                    target.name, {"metadata": {self.field: changes}},
                                    MERGE_PATCH)
        except KubeError as exc:
            raise api_error(exc, f"{self.field} of {_where(target)}") from None
        return {"object": _where(target), "set": dict(params.set),
                "removed": list(params.remove)}

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        assert isinstance(params, MetadataParams)
        try:
            state = await self.observe(decision.target)
        except ActionError:
            return False
        return state is not None and not self._pending(params, self._current(state))


class Annotate(_Metadata):
    name = "kubernetes.annotate"
    field = "annotations"


class Label(_Metadata):
    name = "kubernetes.label"
    field = "labels"


CLASSES: tuple[type[KubeAction], ...] = (Annotate, Label)
