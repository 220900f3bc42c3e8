"""`[docker] scope = "labelled"`: actions that change a container touch only containers
their owner opted in with the label remedyd.enable=true, as operators already mark
containers for autoheal. Notifications are not changes and cover every container."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.actions.base import Action
from daemon.actions.guards import BaseGuard, GuardContext, GuardResult
from daemon.core.decisions import Decision
from daemon.core.errors import ActionError

SCOPE_LABEL = "remedyd.enable"
CONTAINER = "docker/container"


def opted_in(labels: Mapping[str, Any]) -> bool:
    # Compose writes an unquoted `true` as "true"; a hand-typed "True" means the same.
    return str(labels.get(SCOPE_LABEL, "")).strip().lower() == "true"


class ScopeGuard(BaseGuard):
    name = "scope"

    async def check(self, ctx: GuardContext) -> GuardResult:
        changes = False
        for spec in ctx.plan:
            action = ctx.actions.get(spec.name)
            if action is None or not action.mutating or CONTAINER not in action.applies_to:
                continue
            labels, unread = await self._labels(ctx, action)
            name = ctx.decision.target.name
            if labels is None:
                return self.refuse(f"out of scope: the labels of container {name} could not "
                                   f"be read ({unread}), so it is not known to be labelled "
                                   f"{SCOPE_LABEL}=true ([docker] scope = labelled)")
            if not opted_in(labels):
                return self.refuse(f"out of scope: container {name} is not labelled "
                                   f"{SCOPE_LABEL}=true ([docker] scope = labelled)")
            changes = True
        if changes:  # the record says why a change was let by
            return GuardResult(self.name, "ok", f"container {ctx.decision.target.name} is "
                               f"labelled {SCOPE_LABEL}=true")
        return self.ok()

    async def _labels(self, ctx: GuardContext,
                      action: Action) -> tuple[Mapping[str, Any] | None, str]:
        """The target's labels: from the inspect the other guards share, else from the
        Docker event about it (the engine puts a container's labels in its events)."""
        try:
            state = await ctx.observe(action)
            unread = "the container no longer exists" if state is None else ""
        except ActionError as exc:
            state, unread = None, str(exc)
        if state is not None:
            return (state.get("Config") or {}).get("Labels") or {}, ""
        event_labels = _docker_event_labels(ctx.decision)
        return (event_labels, "") if event_labels is not None else (None, unread)


def _docker_event_labels(decision: Decision) -> Mapping[str, Any] | None:
    # Only the engine's own events about this very container: a webhook's or a KPI's
    # attributes are someone else's labels and must not opt a container in.
    event = decision.event
    if event.source != "docker" or event.subject.key != decision.target.key:
        return None
    return event.attributes
