"""Every action's parameter model, importable without the client library it drives.

Rules are checked against these at load time, also on a host where the action's
source is disabled, and without pulling in aiodocker or another client.
"""

from __future__ import annotations

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
    retries: int = Field(default=3, ge=0, le=10)
    message: str = ""


CATALOG: dict[str, type[BaseModel]] = {
    "docker.restart": StopParams,
    "docker.stop": StopParams,
    "docker.kill": KillParams,
    "docker.pause": NoParams,
    "docker.unpause": NoParams,
    "notify.webhook": WebhookParams,
}
