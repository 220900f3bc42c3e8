"""Every action's parameter model, importable without the client library it drives.

Rules are checked against these at load time, also on a host where the action's
source is disabled, and without pulling in aiodocker or another client.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

from daemon.core.durations import Duration


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StopParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Grace period before the engine kills the container.
    timeout: Duration = 10.0


class KillParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    signal: str = Field(default="SIGKILL", pattern=r"^(SIG)?[A-Z0-9]+$|^[0-9]+$")


class WebhookParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Falls back to [notify] webhook_url in the configuration.
    url: AnyHttpUrl | None = None
    timeout: Duration = 5.0
    # Attempts beyond the first; unset: [safety] max_attempts - 1.
    retries: int | None = Field(default=None, ge=0, le=10)
    message: str = ""


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """What rule loading and `remedyd check` know of an action without its implementation."""

    params: type[BaseModel]
    # Target kinds ("docker/container") it can act on; empty: any (notifications).
    applies_to: tuple[str, ...] = ()
    # Whether it changes its target (and so spends budgets).
    mutating: bool = True


_CONTAINER = ("docker/container",)

ACTIONS: dict[str, ActionInfo] = {
    "docker.restart": ActionInfo(StopParams, _CONTAINER),
    "docker.stop": ActionInfo(StopParams, _CONTAINER),
    "docker.kill": ActionInfo(KillParams, _CONTAINER),
    "docker.pause": ActionInfo(NoParams, _CONTAINER),
    "docker.unpause": ActionInfo(NoParams, _CONTAINER),
    "notify.webhook": ActionInfo(WebhookParams, mutating=False),
}

# Action name -> parameter model, for callers that need only the parameters.
CATALOG: dict[str, type[BaseModel]] = {name: info.params for name, info in ACTIONS.items()}
