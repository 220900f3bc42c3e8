"""Deployment actions, each sending what kubectl sends for it: `rollout restart` and
`rollout pause` (strategic merge patches of the Deployment) and `scale` (a merge patch
of its scale subresource). Each acts on the Deployment that the event's Pod,
ReplicaSet or Deployment belongs to (KubeAction resolves it from the cache)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from daemon.actions.base import Refusal
from daemon.actions.kube.base import KubeAction, api_error, where
from daemon.actions.params import ScaleParams
from daemon.clients.kubernetes import (
    MERGE_PATCH,
    RESOURCES,
    STRATEGIC_MERGE_PATCH,
    KubeClient,
    KubeError,
)
from daemon.core.decisions import Decision
from daemon.core.errors import PermanentError
from daemon.core.events import Event, Ref
from daemon.kube.cache import Cache
from daemon.kube.stamps import seconds as _seconds

RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"
DEPLOYMENTS = RESOURCES["deployments"]
# Restart stamps of decisions still being retried; far more than run at once.
_STAMPS_KEPT = 256


class DeploymentAction(KubeAction):
    """Reads and writes of the target Deployment, API errors sorted for the executor."""

    async def read(self, target: Ref, subresource: str | None = None) -> dict[str, Any]:
        try:
            obj = await self.client.get(DEPLOYMENTS, target.namespace, target.name,
                                        subresource)
        except KubeError as exc:
            raise api_error(exc, f"read {_what(target, subresource)}") from None
        if obj is None:
            raise PermanentError(f"deployment {where(target)} no longer exists")
        return obj

    async def patch(self, target: Ref, body: dict[str, Any], content_type: str,
                    subresource: str | None = None) -> dict[str, Any]:
        try:
            return await self.client.patch(DEPLOYMENTS, target.namespace, target.name, body,
                                           content_type, subresource)
        except KubeError as exc:
            raise api_error(exc, f"patch {_what(target, subresource)}") from None

    async def verified(self, target: Ref, check: Callable[[dict[str, Any]], bool],
                       subresource: str | None = None) -> bool | None:
        """`check` on a fresh read of the target; False when it is gone, None (unknown)
        when it cannot be read right now."""
        try:
            obj = await self.client.get(DEPLOYMENTS, target.namespace, target.name,
                                        subresource)
        except KubeError:
            return None
        return False if obj is None else check(obj)

    def describe_state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        described = super().describe_state(state)
        if state is not None:
            spec = state.get("spec") or {}
            described.update(replicas=replicas_of(spec), paused=bool(spec.get("paused")),
                             revision=revision_of(state))
        return described


class RolloutRestart(DeploymentAction):
    """`kubectl rollout restart`: a new restartedAt stamp in the pod template, so the
    controller rolls every pod over to a new ReplicaSet."""

    name = "kubernetes.rollout_restart"

    def __init__(self, client: KubeClient, cache: Cache) -> None:
        super().__init__(client, cache)
        self._stamps: dict[str, str] = {}

    # Stale when the pods the event was about are already being replaced: another
    # revision rolled out since (a rollout, a rollback, an earlier restart), or the
    # template was stamped after the event (a restart of a paused Deployment makes no
    # revision). Restarting again would replace the fresh pods too.
    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        if state is None:
            return None  # gone: preflight says so
        moved = revision_moved(decision.event, state)
        if moved:
            return moved
        stamp = _restarted_at(state)
        at = _seconds(stamp)
        if at is not None and decision.event.occurred_at and at > decision.event.occurred_at:
            return (f"deployment {where(decision.target)} was restarted at {stamp}, after "
                    f"the {decision.event.action} event")
        return None

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        if (state.get("spec") or {}).get("paused"):
            # kubectl: "can't restart paused deployment (run rollout resume first)".
            return Refusal("target", f"deployment {where(decision.target)} is paused: a "
                           "paused deployment is not restarted (as kubectl refuses; run "
                           "`kubectl rollout resume` first)")
        if _restarted_at(state) == _now_rfc3339():
            # Our stamp would be the same one: the PATCH would change nothing (kubectl
            # refuses this too, "already been triggered within the past second").
            return Refusal("target", f"deployment {where(decision.target)} was restarted "
                           "within this second already")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        # One stamp per decision: a retry after a lost answer sends the same template,
        # which the server takes as a no-op instead of a second restart.
        stamp = self._stamps.get(decision.incident_id)
        if stamp is None:
            stamp = self._stamps[decision.incident_id] = _now_rfc3339()
            while len(self._stamps) > _STAMPS_KEPT:
                del self._stamps[next(iter(self._stamps))]
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}
        out = await self.patch(decision.target, body, STRATEGIC_MERGE_PATCH)
        return {"deployment": where(decision.target), "restartedAt": stamp,
                "generation": (out.get("metadata") or {}).get("generation")}

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        self._stamps.pop(decision.incident_id, None)
        return await self.verified(
            decision.target, lambda obj: _restarted_at(obj) == details["restartedAt"])


class Scale(DeploymentAction):
    """`kubectl scale`: a merge patch of spec.replicas through the scale subresource."""

    name = "kubernetes.scale"

    # No superseded(): a scale answers the condition the rule saw (load, unready pods),
    # not the replica count the event carried. The count is read again when the action
    # runs: an absolute `replicas` means the same whatever the Deployment has by then,
    # and a `delta` moves from the count it has then, within [min, max]; the rule's
    # cooldown keeps a burst of events from stacking deltas.

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        assert isinstance(params, ScaleParams)
        current = replicas_of(state.get("spec") or {})
        wanted = scaled(params, current)
        if wanted != current:
            return None
        asked = (f"{params.replicas}" if params.replicas is not None
                 else f"{current} {params.delta:+d}")
        return Refusal("target", f"nothing to do: deployment {where(decision.target)} "
                       f"already has {current} replicas ({asked}, kept within "
                       f"[{params.min}, {params.max}], is {wanted})")

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, ScaleParams)
        target = decision.target
        scale = await self.read(target, "scale")
        current = replicas_of(scale.get("spec") or {})
        wanted = scaled(params, current)
        details: dict[str, Any] = {"deployment": where(target), "from_replicas": current,
                                   "to_replicas": wanted}
        if wanted == current:  # moved there between preflight and now
            return {**details, "sent": False}
        body: dict[str, Any] = {"spec": {"replicas": wanted}}
        if params.delta is not None:
            # A delta is relative to the count just read: the resourceVersion makes the
            # server refuse (409 Conflict, retried from a fresh read) if it moved since.
            # An absolute count needs no precondition, and is what kubectl sends.
            body = {"metadata": {"resourceVersion": scale["metadata"]["resourceVersion"]},
                    **body}
        await self.patch(target, body, MERGE_PATCH, "scale")
        return {**details, "sent": True}

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        return await self.verified(
            decision.target,
            lambda scale: replicas_of(scale.get("spec") or {}) == details["to_replicas"],
            "scale")


class PauseRollout(DeploymentAction):
    """`kubectl rollout pause`: spec.paused, so the controller stops rolling out."""

    name = "kubernetes.pause_rollout"

    # Stale when the Deployment is on another revision than the event was about (rolled
    # back, or rolled forward again): pausing would freeze a rollout nobody judged.
    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        return revision_moved(decision.event, state) if state is not None else None

    def check_state(self, decision: Decision, params: BaseModel,
                    state: Mapping[str, Any]) -> Refusal | None:
        if (state.get("spec") or {}).get("paused"):
            return Refusal("target", f"deployment {where(decision.target)} is already paused")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        out = await self.patch(decision.target, {"spec": {"paused": True}},
                               STRATEGIC_MERGE_PATCH)
        return {"deployment": where(decision.target), "revision": revision_of(out)}

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        return await self.verified(
            decision.target, lambda obj: bool((obj.get("spec") or {}).get("paused")))


CLASSES: tuple[type[KubeAction], ...] = (RolloutRestart, Scale, PauseRollout)


def scaled(params: ScaleParams, current: int) -> int:
    """The replica count `params` ask for, from `current`, kept within [min, max]."""
    wanted = params.replicas if params.replicas is not None else current + (params.delta or 0)
    return max(params.min, min(params.max, wanted))


def replicas_of(spec: Mapping[str, Any]) -> int:
    """spec.replicas of a Deployment or a Scale; the API defaults an unset one to 1."""
    value = spec.get("replicas", 1)
    return value if isinstance(value, int) else 1


def revision_of(obj: Mapping[str, Any]) -> int | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations[REVISION])
    except (KeyError, TypeError, ValueError):
        return None


def revision_moved(event: Event, state: Mapping[str, Any]) -> str | None:
    """Why the Deployment no longer runs the revision the event was about, or None."""
    reported = event.attributes.get("revision")
    current = revision_of(state)
    if not isinstance(reported, int) or current is None or current == reported:
        return None
    return (f"the {event.action} event was about revision {reported}; the deployment is at "
            f"revision {current} now (rolled out, back or restarted since)")


def _restarted_at(obj: Mapping[str, Any]) -> object:
    template = (obj.get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(RESTARTED_AT)


def _now_rfc3339() -> str:
    # What kubectl writes: RFC 3339 to the second.
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _what(target: Ref, subresource: str | None) -> str:
    return f"deployment {where(target)}" + (f" {subresource}" if subresource else "")
