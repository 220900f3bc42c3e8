"""Pod actions: evict (through the Eviction subresource, honouring PodDisruptionBudgets as
`kubectl drain` does), delete, and quarantine (a label plus a deny-all NetworkPolicy).

Evict and delete carry the uid of the pod the rule saw as a precondition, so a pod
recreated under the same name in the meantime is never the one removed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Refusal
from daemon.actions.kube.base import KubeAction, api_error, where
from daemon.actions.kube.podsafety import removal_refusal
from daemon.actions.kube.quarantine import QuarantinePolicy
from daemon.actions.params import (
    DeletePodParams,
    EvictParams,
    PodRemovalParams,
    QuarantineParams,
)
from daemon.clients.kubernetes import MERGE_PATCH, RESOURCES, KubeError, KubeStatusError
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError, PermanentError, TemporaryError
from daemon.core.events import Ref

PODS = RESOURCES["pods"]
# A real server's 429 cause: "The disruption budget NAME needs N healthy pods and has M
# currently".
_BUDGET_NAME = re.compile(r"disruption budget (\S+) needs")
# Enough attempts that only [safety] action_timeout ends an eviction a budget blocks.
_UNTIL_TIMEOUT = 1_000_000


def _grace(params: PodRemovalParams) -> dict[str, Any]:
    if params.grace_period is None:
        return {}
    return {"gracePeriodSeconds": math.ceil(params.grace_period)}


def _delete_options(target: Ref, params: PodRemovalParams) -> dict[str, Any]:
    if not target.id:
        raise PermanentError(f"pod {where(target)}: no uid known for it; refusing to remove "
                             "whatever pod has that name now")
    return {"preconditions": {"uid": target.id}, **_grace(params)}


def _removal_error(exc: KubeError, doing: str, target: Ref) -> ActionError:
    """404 and 409 on a pod removal are final: it is gone, or another pod has its name."""
    if isinstance(exc, KubeStatusError) and exc.code == 404:
        return PermanentError(f"{doing}: pod {where(target)} no longer exists")
    if isinstance(exc, KubeStatusError) and exc.code == 409:
        return PermanentError(f"{doing}: pod {where(target)} is not the pod the rule saw "
                              f"(uid {target.id} precondition failed): {exc.message}")
    return api_error(exc, doing)


class _PodRemoval(KubeAction):
    """Evict and delete: refused as `kubectl drain` refuses, stale once an `unready` pod is
    Ready again, verified by the pod being gone or terminating."""

    evicting: ClassVar[bool]

    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        event = decision.event
        if state is None or event.action != "unready" or (
                event.subject.key != decision.target.key):
            return None
        for condition in (state.get("status") or {}).get("conditions") or ():
            if isinstance(condition, dict) and condition.get("type") == "Ready" and (
                    condition.get("status") == "True"):
                return f"pod {where(decision.target)} is Ready again since the unready event"
        return None

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        assert isinstance(params, PodRemovalParams)
        return removal_refusal(state, params.allow_unowned, evicting=self.evicting)

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        target = decision.target
        try:
            now = await self.client.get(PODS, target.namespace, target.name)
        except KubeError:
            return False
        if now is None:
            return True
        metadata = now.get("metadata") or {}
        return metadata.get("uid") != target.id or bool(metadata.get("deletionTimestamp"))


class Evict(_PodRemoval):
    """POST pods/NAME/eviction. A PodDisruptionBudget that blocks it (429) is asked again
    every `retry_every` until the action's timeout; it never becomes a delete."""

    name = "kubernetes.evict"
    evicting = True

    def attempts(self, params: BaseModel) -> int | None:
        return _UNTIL_TIMEOUT

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, EvictParams)
        target = decision.target
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": target.name, "namespace": target.namespace},
                "deleteOptions": _delete_options(target, params)}
        doing = f"evict pod {where(target)}"
        try:
            await self.client.create(PODS, target.namespace, body, name=target.name,
                                     subresource="eviction")
        except KubeStatusError as exc:
            raise self._refused(exc, doing, target, params) from None
        except KubeError as exc:
            raise api_error(exc, doing) from None
        return {"pod": where(target), "uid": target.id, "evicted": True, **_grace(params)}

    def _refused(self, exc: KubeStatusError, doing: str, target: Ref,
                 params: EvictParams) -> ActionError:
        budget = [message for reason, message in exc.causes if reason == "DisruptionBudget"]
        if exc.code == 429 and budget:
            found = _BUDGET_NAME.search(budget[0])
            which = found.group(1) if found else "(unnamed)"
            return TemporaryError(
                f"{doing}: still blocked by PodDisruptionBudget {which}: {budget[0]}; asking "
                f"again every {params.retry_every:g}s, never deleting instead",
                params.retry_every, backoff=False)
        if exc.code == 500 and "more than one PodDisruptionBudget" in exc.message:
            # The eviction API refuses such pods until the budgets are fixed.
            return PermanentError(f"{doing}: {exc.message}")
        return _removal_error(exc, doing, target)


class DeletePod(_PodRemoval):
    """DELETE the pod the rule saw (uid precondition); a controller is expected to replace
    it, so a pod none controls is refused unless the rule says `allow_unowned: true`."""

    name = "kubernetes.delete_pod"
    evicting = False

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, DeletePodParams)
        target = decision.target
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **_delete_options(target, params)}
        try:
            await self.client.delete(PODS, target.namespace, target.name, body)
        except KubeError as exc:
            raise _removal_error(exc, f"delete pod {where(target)}", target) from None
        return {"pod": where(target), "uid": target.id, "deleted": True, **_grace(params)}


class Quarantine(KubeAction):
    """Isolate a pod: a deny-all NetworkPolicy selecting `label=value` in its namespace
    (created once, shared by every pod quarantined with that label), then the label on the
    pod. The policy comes first, so the label is the switch that cuts the pod off."""

    name = "kubernetes.quarantine"

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        assert isinstance(params, QuarantineParams)
        labels = (state.get("metadata") or {}).get("labels") or {}
        if labels.get(params.label) == params.value:
            return Refusal("preflight", f"pod {where(decision.target)} is already quarantined "
                           f"({params.label}={params.value})")
        if (state.get("spec") or {}).get("hostNetwork"):
            return Refusal("preflight", f"pod {where(decision.target)} uses the host network: "
                           "a NetworkPolicy cannot isolate it")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, QuarantineParams)
        target = decision.target
        policy = QuarantinePolicy(self.client, target.namespace, params.label, params.value)
        created = await policy.ensure(decision.incident_id)
        patch = {"metadata": {"labels": {params.label: params.value}}}
        try:
            await self.client.patch(PODS, target.namespace, target.name, patch, MERGE_PATCH)
        except KubeError as exc:
            error = api_error(exc, f"label pod {where(target)} {params.label}={params.value}")
            if created:
                error.args = (f"{error}; NetworkPolicy {policy.where} was created by this call "
                              "and is left in place (it selects no pod without the label)",)
            raise error from None
        return {
            "pod": where(target), "uid": target.id,
            "label": {params.label: params.value},
            "network_policy": {"namespace": target.namespace, "name": policy.name,
                               "created": created},
            # What a release reverses: the label always; the policy only if this call made
            # it (and once no other pod carries the label).
            "undo": {"remove_pod_label": params.label,
                     "delete_network_policy": policy.name if created else None},
        }

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        assert isinstance(params, QuarantineParams)
        target = decision.target
        policy = QuarantinePolicy(self.client, target.namespace, params.label, params.value)
        try:
            pod = await self.client.get(PODS, target.namespace, target.name)
            isolated = await policy.is_ours()
        except (KubeError, ActionError):
            return False
        labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
        return isolated and labels.get(params.label) == params.value


CLASSES: tuple[type[KubeAction], ...] = (Evict, DeletePod, Quarantine)
