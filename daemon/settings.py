"""Configuration: a TOML file, overridden by REMEDYD_* environment variables.

Validated once at start; an unknown key or bad value is a ConfigError that
names the key and where it came from (the file or the variable).
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from daemon.core.durations import Duration
from daemon.core.errors import ConfigError
from daemon.core.validation import describe, error_path

ENV_PREFIX = "REMEDYD_"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    listen: str = "127.0.0.1:9464"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"expected HOST:PORT, got {value!r}")
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class DockerSettings(_Group):
    # "auto": on when DOCKER_HOST is set or the default socket exists.
    enabled: bool | Literal["auto"] = "auto"
    # Unset: DOCKER_HOST, else unix:///var/run/docker.sock.
    url: str | None = None
    # How often to list containers to catch events the engine never delivered.
    reconcile_interval: Duration = 30.0
    request_timeout: Duration = 10.0

    def resolved_url(self) -> str:
        return self.url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def is_enabled(self) -> bool:
        if self.enabled == "auto":
            return bool(self.url or os.environ.get("DOCKER_HOST")) or Path(
                "/var/run/docker.sock").exists()
        return bool(self.enabled)


KubeKind = Literal["pods", "deployments", "replicasets", "events", "nodes",
                   # What security-drift checks read; off unless named.
                   "namespaces", "networkpolicies", "roles", "clusterroles", "rolebindings",
                   "clusterrolebindings", "serviceaccounts"]
# The default `kinds`: what the bundled rules and the workload actions need.
KUBE_KINDS: tuple[KubeKind, ...] = ("pods", "deployments", "replicasets", "events", "nodes")
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubernetesSettings(_Group):
    # "auto": in-cluster service account, else KUBECONFIG / ~/.kube/config, else off.
    enabled: bool | Literal["auto"] = "auto"
    # Unset: in-cluster when running in a pod, else KUBECONFIG, else ~/.kube/config.
    kubeconfig: Path | None = None
    # Unset: the kubeconfig's current-context.
    context: str | None = None
    # Empty: every namespace (cluster-wide list/watch).
    namespaces: list[str] = Field(default_factory=list)
    label_selector: str | None = None
    kinds: list[KubeKind] = Field(
        default_factory=lambda: list(KUBE_KINDS), min_length=1)
    request_timeout: Duration = 10.0
    # No event or bookmark for this long: the watch is dead even if its socket is not.
    stall_timeout: Duration = 70.0
    # `mode` ("cluster" | "node") and `[kubernetes.leader_election]` come next; not yet.

    def resolved_kubeconfig(self) -> Path | None:
        """The kubeconfig to load; None means in-cluster (or nothing found)."""
        if self.kubeconfig is not None:
            return self.kubeconfig
        if self.in_cluster():
            return None
        env = os.environ.get("KUBECONFIG")
        if env:
            return Path(env.split(os.pathsep)[0])
        home = Path.home() / ".kube" / "config"
        return home if home.exists() else None

    def in_cluster(self) -> bool:
        return self.kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and (
            IN_CLUSTER_TOKEN.exists())

    def is_enabled(self) -> bool:
        if self.enabled == "auto":
            path = self.resolved_kubeconfig()
            return self.in_cluster() or (path is not None and path.exists())
        return bool(self.enabled)


class AuditSettings(_Group):
    path: Path = Path("var/audit.jsonl")
    fsync: bool = True
    # Seq and hash of the newest record, kept apart so a cut tail shows; None: <path>.checkpoint
    checkpoint: Path | None = None


class RulesSettings(_Group):
    paths: list[str] = Field(default_factory=lambda: ["rules"])


class SafetySettings(_Group):
    dry_run: bool = False
    action_timeout: Duration = 60.0
    max_attempts: int = Field(default=3, ge=1, le=10)
    # At most this many actions across all rules per window (None: no global cap).
    max_actions: int | None = Field(default=30, ge=1)
    max_actions_per: Duration = 3600.0
    # In-flight actions get this long on SIGTERM, then are cancelled.
    shutdown_timeout: Duration = 10.0
    # Repeat decisions of one rule on one target within this window are one incident
    # (an OOM under cgroup v1 arrives as a burst of events); 0 turns it off.
    coalesce_window: Duration = 5.0


class NotifySettings(_Group):
    webhook_url: str | None = None
    # Notify-only decisions across all rules per window; they spend no action budget.
    max_notifications: int | None = Field(default=60, ge=1)
    max_notifications_per: Duration = 3600.0


class EngineSettings(_Group):
    queue_size: int = Field(default=10_000, ge=10)


class LogSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__",
                                      extra="forbid", nested_model_default_partial_update=True)
    server: ServerSettings = Field(default_factory=ServerSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = Field(default_factory=KubernetesSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    rules: RulesSettings = Field(default_factory=RulesSettings)
    safety: SafetySettings = Field(default_factory=SafetySettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    # The file the settings were read from, for messages about a key found wrong later.
    _where: str = PrivateAttr(default="defaults")

    def origin(self, key: str) -> str:
        """Where the dotted `key` came from: its environment variable, the file or defaults."""
        return _origin(key.split("."), self._where)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (passed in as init values).
        return env_settings, init_settings


def load_settings(path: Path | None) -> Settings:
    """Settings from `path` (if any) and the environment, or a ConfigError naming the key."""
    data: dict[str, Any] = {}
    where = str(path) if path else "defaults"
    if path is not None:
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    problems = _variable_problems()
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError("\n".join(
            f"{_origin(error_path(error), where)}: "
            f"{describe(error, show_input=True, name_unknown_keys=True)}"
            for error in exc.errors())) from None
    except SettingsError as exc:
        # Whatever the check above did not foresee still names the environment.
        raise ConfigError(f"environment ({ENV_PREFIX}*): {exc}") from None
    settings._where = where
    return settings


def _variables() -> dict[str, str]:
    """REMEDYD_* variables by upper-case name -> the name as spelled in the environment.

    pydantic-settings matches names case-insensitively, so messages must too.
    """
    return {name.upper(): name for name in os.environ if name.upper().startswith(ENV_PREFIX)}


def _origin(parts: Sequence[str], where: str) -> str:
    """The variable that set this key (or a group holding it, or a key below it), else the file."""
    variables = _variables()
    wanted = ENV_PREFIX + "__".join(parts).upper()
    for depth in range(len(parts), 0, -1):
        name = variables.get(ENV_PREFIX + "__".join(parts[:depth]).upper())
        if name is not None:
            return f"environment variable {name}"
    below = sorted(name for upper, name in variables.items() if upper.startswith(wanted + "__"))
    return f"environment variable {below[0]}" if below else where


def _variable_problems() -> list[str]:
    """Mistakes pydantic-settings would ignore (an unknown group) or raise as a bare error.

    A list or a group must be JSON, as pydantic-settings requires. A comma-separated
    list is not accepted: a path may contain a comma, and one syntax is easier to
    document than two.
    """
    problems = []
    for name in sorted(_variables().values()):
        value = os.environ[name]
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if parts[0] not in Settings.model_fields:
            problems.append(f"environment variable {name}: unknown key {parts[0]!r}")
            continue
        example = _json_example(parts)
        if example is None:
            continue
        try:
            json.loads(value)
        except ValueError:
            problems.append(f"environment variable {name}: {'.'.join(parts)}: expected JSON, "
                            f"e.g. {name}='{example}' (got {value!r})")
    return problems


def _json_example(parts: Sequence[str]) -> str | None:
    """How a structured key is written as JSON; None for a scalar or an unknown key."""
    annotation: Any = Settings
    for part in parts:
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        field = annotation.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        first = next(iter(annotation.model_fields), "key")
        return f'{{"{first}": ...}}'
    if get_origin(annotation) is list:
        return '["a", "b"]'
    return None
