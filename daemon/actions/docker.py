"""Container actions: restart, stop, kill, pause, unpause."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Action, Refusal
from daemon.actions.params import KillParams, NoParams, StopParams
from daemon.clients.docker import CONNECTION_ERRORS, DockerClient, state_time_ns
from daemon.core.decisions import Decision
from daemon.core.errors import TemporaryError
from daemon.core.events import Event, Ref


class DockerAction(Action):
    applies_to = ("docker/container",)
    observe_key = "docker/container"
    verb: ClassVar[str]

    def __init__(self, client: DockerClient) -> None:
        self.client = client

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        if target.source != "docker" or target.kind != "container" or not container(target):
            return None
        try:
            return await self.client.inspect(container(target))
        except CONNECTION_ERRORS as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise TemporaryError(f"inspect {target.name}: {exc}", 1.0) from exc

    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        if state is None:
            return None  # gone: preflight says so
        return container_superseded(decision.event, state)

    async def preflight(self, decision: Decision, params: BaseModel,
                        state: Mapping[str, Any] | None) -> Refusal | None:
        target = decision.target
        if target.source != "docker" or target.kind != "container" or not container(target):
            return Refusal("target", f"{self.name} needs a docker container, got {target.key}")
        if state is None:
            return Refusal("target", f"container {target.name} no longer exists")
        return self.check_state(state)

    def describe_state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        if state is None:
            return {"exists": False}
        current = state.get("State") or {}
        return {"exists": True, "status": current.get("Status"),
                "health": (current.get("Health") or {}).get("Status"),
                "started_at": current.get("StartedAt"),
                "restart_count": state.get("RestartCount")}

    def check_state(self, state: Mapping[str, Any]) -> Refusal | None:
        current = state.get("State") or {}
        if current.get("Restarting"):
            return Refusal("restart_policy",
                           "the engine is already restarting it under its restart policy")
        if current.get("Status") in ("exited", "dead") and _policy_will_restart(state):
            return Refusal("restart_policy",
                           "its restart policy will start it again; not fighting the engine")
        return None

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        kwargs = self.call_params(params)
        ident = container(decision.target)
        await self.client.container_call(ident, self.verb, **kwargs)
        return {"container": ident[:12] if decision.target.id else ident, "verb": self.verb,
                **kwargs}

    def call_params(self, params: BaseModel) -> dict[str, Any]:
        """The engine API's query parameters for this action's parameters."""
        if isinstance(params, StopParams):
            return {"t": round(params.timeout)}
        if isinstance(params, KillParams):
            return {"signal": params.signal}
        return {}


class Restart(DockerAction):
    name = "docker.restart"
    Params = StopParams
    verb = "restart"

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        try:
            state = await self.client.inspect(container(decision.target))
        except CONNECTION_ERRORS:
            return False
        return bool((state.get("State") or {}).get("Running"))


class Stop(DockerAction):
    name = "docker.stop"
    Params = StopParams
    verb = "stop"


class Kill(DockerAction):
    name = "docker.kill"
    Params = KillParams
    verb = "kill"


class Pause(DockerAction):
    name = "docker.pause"
    Params = NoParams
    verb = "pause"

    def check_state(self, state: Mapping[str, Any]) -> Refusal | None:
        if (state.get("State") or {}).get("Paused"):
            return Refusal("target", "container is already paused")
        return super().check_state(state)


class Unpause(DockerAction):
    name = "docker.unpause"
    Params = NoParams
    verb = "unpause"

    def check_state(self, state: Mapping[str, Any]) -> Refusal | None:
        if not (state.get("State") or {}).get("Paused"):
            return Refusal("target", "container is not paused")
        return None


def container(target: Ref) -> str:
    """How the engine API names the container: its id, or (a target a KPI or webhook rule
    named from labels) its name, which the API takes as well."""
    return target.id or target.name


def docker_actions(client: DockerClient) -> list[Action]:
    return [cls(client) for cls in (Restart, Stop, Kill, Pause, Unpause)]


def container_superseded(event: Event, state: Mapping[str, Any]) -> str | None:
    """Why `state` shows that what `event` reported is over, or None if it still holds."""
    if event.source == "security":
        return _posture_superseded(event, state)
    current = state.get("State") or {}
    started = state_time_ns(current.get("StartedAt")) / 1e9
    # Docker's timestamps and the event's come from the same engine clock.
    if started and event.occurred_at and started > event.occurred_at:
        return (f"the container was started again at {current.get('StartedAt')}, after the "
                f"{event.action} event; it is not the state the event reported")
    reported = event.attributes.get("health")
    health = (current.get("Health") or {}).get("Status")
    if event.action == "health_status" and reported and health and health != reported:
        return f"the event said {reported}, the container is {health} now"
    return None


def _posture_superseded(event: Event, state: Mapping[str, Any]) -> str | None:
    """A posture event reports the container's configuration, which a start or restart
    keeps (a finding on `create` is decided as the container starts): it is stale only
    when the configuration itself changed since."""
    from daemon.security.view_docker import docker_view

    changed = sorted(k for k, v in docker_view(state).items() if event.attributes.get(k) != v)
    if changed:
        return (f"the container's security configuration changed since the finding "
                f"({', '.join(changed[:5])}); its next posture event decides again")
    return None


def _policy_will_restart(state: Mapping[str, Any]) -> bool:
    policy = ((state.get("HostConfig") or {}).get("RestartPolicy") or {})
    name = policy.get("Name") or "no"
    if name in ("always", "unless-stopped"):
        return True
    if name == "on-failure":
        exit_code = (state.get("State") or {}).get("ExitCode", 0)
        limit = int(policy.get("MaximumRetryCount") or 0)
        return bool(exit_code) and (limit == 0 or int(state.get("RestartCount") or 0) < limit)
    return False
