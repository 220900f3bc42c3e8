"""Configuration: a TOML file, overridden by REMEDYD_* environment variables.

Validated once at start; an unknown key or bad value is a ConfigError that
names the key and where it came from (the file or the variable).
"""

from __future__ import annotations

import json
import os
import re
import socket
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_origin
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from daemon import CONFIG_FILE_VARIABLE
from daemon.core.durations import Duration
from daemon.core.errors import ConfigError
from daemon.core.validation import describe, error_path
from daemon.telemetry.redact import scrub

ENV_PREFIX = "REMEDYD_"


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Group):
    listen: str = "127.0.0.1:9464"
    # Bearer token the API's write endpoints (accepting a security change) require; unset,
    # they answer 403: nothing on the API changes state without it. Never logged.
    api_token: str | None = Field(default=None, min_length=16)

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
    # Which containers actions that change something may touch: "labelled" only those
    # labelled remedyd.enable=true (on a host running other people's containers nothing
    # is restarted that its owner did not opt in, as with autoheal), "all" every one.
    # Notifications cover every watched container either way.
    scope: Literal["labelled", "all"] = "labelled"

    def resolved_url(self) -> str:
        return self.url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    def is_enabled(self) -> bool:
        if self.enabled == "auto":
            return bool(self.url or os.environ.get("DOCKER_HOST")) or Path(
                "/var/run/docker.sock").exists()
        return bool(self.enabled)


KubeKind = Literal["pods", "deployments", "replicasets", "events", "nodes",
                   # What security-drift checks read: watched while [security] is on
                   # (daemon.integrations.kubernetes.watched_kinds), else when named.
                   "namespaces", "networkpolicies", "roles", "clusterroles", "rolebindings",
                   "clusterrolebindings", "serviceaccounts"]
# The default `kinds`: what the bundled rules and the workload actions need.
KUBE_KINDS: tuple[KubeKind, ...] = ("pods", "deployments", "replicasets", "events", "nodes")
IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class LeaderElectionSettings(_Group):
    """One actor among replicas, over a coordination.k8s.io/v1 Lease (client-go's timings)."""

    # "auto": on when running in a cluster (replicas there), off elsewhere (a laptop).
    enabled: bool | Literal["auto"] = "auto"
    lease_name: str = Field(default="remedyd", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                            max_length=253)
    # Unset: the pod's own namespace (service account), else "default".
    lease_namespace: str | None = None
    # A lease not renewed for this long may be taken by another replica.
    lease_duration: Duration = 15.0
    # The leader stops acting when it could not renew for this long (before its lease
    # can expire elsewhere).
    renew_deadline: Duration = 10.0
    # How often to try to acquire or renew.
    retry_period: Duration = 2.0
    # Unset: POD_NAME (the downward API), else the hostname.
    identity: str | None = None
    # Where the other replicas reach this one's HTTP server, written into the Lease while
    # it leads: a follower hands the webhooks delivered to it (a Service picks any
    # replica) to the leader there. Unset: http://POD_IP:<[server] listen port> when
    # POD_IP is set (the downward API's status.podIP); with neither, a follower answers
    # a webhook 503 with Retry-After, and the sender's retry may reach the leader.
    advertise_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+/?$")

    @model_validator(mode="after")
    def _timings(self) -> LeaderElectionSettings:
        if not self.lease_duration > self.renew_deadline:
            raise ValueError(f"lease_duration ({self.lease_duration:g}s) must be longer than "
                             f"renew_deadline ({self.renew_deadline:g}s)")
        if not self.renew_deadline > 1.2 * self.retry_period:
            raise ValueError(f"renew_deadline ({self.renew_deadline:g}s) must be longer than "
                             f"1.2 x retry_period ({1.2 * self.retry_period:g}s)")
        if self.retry_period <= 0:
            raise ValueError("retry_period must be positive")
        return self

    def resolved_identity(self) -> str:
        return self.identity or os.environ.get("POD_NAME") or socket.gethostname()

    def resolved_advertise_url(self, port: int) -> str | None:
        if self.advertise_url:
            return self.advertise_url.rstrip("/")
        pod_ip = os.environ.get("POD_IP", "").strip()
        if not pod_ip:
            return None
        host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
        return f"http://{host}:{port}"

    def resolved_namespace(self) -> str:
        if self.lease_namespace:
            return self.lease_namespace
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"


class BlastRadiusSettings(_Group):
    """Limits on how much of a workload or a namespace remedyd may touch (per-rule
    `blast_radius:` overrides them); a pod action past them is refused."""

    # At most this share of a workload's pods acted on within `window` (0.25: a quarter;
    # at least one pod is always allowed).
    max_workload_share: float = Field(default=0.25, gt=0, le=1)
    # And at most this many pods of one namespace within `window`.
    max_namespace_pods: int = Field(default=10, ge=1)
    window: Duration = 600.0
    # More than this share of a workload's pods unhealthy at once: the cause is shared
    # (a dependency down), not the pods; per-pod actions are short-circuited and one
    # notification goes out for the whole set.
    max_unhealthy_share: float = Field(default=0.4, gt=0, le=1)


class KubeStateSettings(_Group):
    """Where replicas share what survives a failover (cooldowns, budgets, rollbacks)."""

    # "configmap": a ConfigMap written with optimistic concurrency; "audit": this
    # process's audit log only (one replica, or systemd).
    store: Literal["configmap", "audit"] = "configmap"
    configmap_name: str = Field(default="remedyd-state",
                                pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    # Unset: the lease's namespace.
    configmap_namespace: str | None = None


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
    # "cluster": one replica (the Lease holder) acts on everything. "node": every replica
    # (a DaemonSet pod) watches and acts on the pods of its own node; workload- and
    # cluster-scoped actions (rollback, scale, cordon) go through one elected leader.
    mode: Literal["cluster", "node"] = "cluster"
    # Node mode: this replica's node. Unset: NODE_NAME (the downward API).
    node_name: str | None = None
    leader_election: LeaderElectionSettings = Field(default_factory=LeaderElectionSettings)
    blast_radius: BlastRadiusSettings = Field(default_factory=BlastRadiusSettings)
    state: KubeStateSettings = Field(default_factory=KubeStateSettings)

    @model_validator(mode="after")
    def _node_mode_has_a_node(self) -> KubernetesSettings:
        if self.mode == "node" and not self.resolved_node_name():
            raise ValueError('mode = "node" needs node_name or the NODE_NAME environment '
                             "variable (the downward API's spec.nodeName)")
        return self

    def resolved_node_name(self) -> str | None:
        return self.node_name or os.environ.get("NODE_NAME") or None

    def leader_election_on(self) -> bool:
        setting = self.leader_election.enabled
        return self.in_cluster() if setting == "auto" else bool(setting)

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
    # The outbox every notification is written to before it is sent; unset: a directory
    # "outbox" beside the audit log. An undelivered one is retried every outbox_backoff,
    # doubling up to outbox_backoff_max, also across restarts, for outbox_max_age.
    outbox: Path | None = None
    outbox_backoff: Duration = Field(default=30.0, gt=0)
    outbox_backoff_max: Duration = Field(default=3600.0, gt=0)
    outbox_max_age: Duration = Field(default=86400.0, gt=0)


class PrometheusSettings(_Group):
    """Where `source: kpi` rules, `unless:` gates and `verify.query` run their PromQL."""

    # Unset: KPI rules load but never fire (`remedyd check` warns).
    url: str | None = None
    # Sent with every query (e.g. {Authorization = "Bearer ..."}); never logged.
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(default=10.0, gt=0)
    # How often a KPI rule without its own `interval` is queried.
    interval: Duration = Field(default=30.0, gt=0)


class AlertmanagerSettings(_Group):
    """The Alertmanager whose active silences stop remedyd acting on what they cover."""

    # Unset: silences are not consulted.
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = Field(default=5.0, gt=0)


class GenericWebhookSettings(_Group):
    """`POST /webhooks/generic/{name}`: HMAC-SHA256 over "<timestamp>.<body>"."""

    secret: str = Field(min_length=16)
    # Older (or later) timestamps than this are refused, as is a repeated signature.
    replay_window: Duration = Field(default=300.0, gt=0)


class WebhookSettings(_Group):
    """Inbound webhooks on remedyd's HTTP server (off unless configured)."""

    # `POST /webhooks/alertmanager` is served when this is true.
    alertmanager: bool = False
    # Credentials Alertmanager's http_config sends: a bearer token, or basic auth; with
    # neither set, requests need none.
    alertmanager_token: str | None = Field(default=None, min_length=1)
    alertmanager_username: str | None = Field(default=None, min_length=1)
    alertmanager_password: str | None = None
    # Bodies larger than this get 413 before they are read.
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    generic: dict[str, GenericWebhookSettings] = Field(default_factory=dict)

    @field_validator("generic")
    @classmethod
    def _webhook_names(cls, value: dict[str, GenericWebhookSettings]
                       ) -> dict[str, GenericWebhookSettings]:
        # The name is a path segment of the URL and a metric label.
        for name in value:
            if not re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", name):
                raise ValueError(f"webhook name {name!r}: use lower-case letters, digits, "
                                 "'.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _basic_auth_pair(self) -> WebhookSettings:
        if (self.alertmanager_username is None) != (self.alertmanager_password is None):
            raise ValueError("alertmanager_username and alertmanager_password go together")
        return self


class ProbeSettings(_Group):
    """One `[[probes]]` entry: an HTTP(S) URL or a TCP host:port checked every `interval`."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")
    url: str | None = None
    tcp: str | None = None
    interval: Duration = Field(default=10.0, gt=0)
    timeout: Duration = Field(default=5.0, gt=0)
    # HTTP: the statuses that count as up (default 200-399), and a substring the body
    # must contain.
    expect_status: list[int] = Field(default_factory=list)
    expect_body: str | None = None
    tls_verify: bool = True
    # Consecutive failures before `failed`, consecutive successes before `recovered`.
    failures: int = Field(default=3, ge=1)
    successes: int = Field(default=1, ge=1)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL with a host, got {value!r}")
        return value

    @field_validator("tcp")
    @classmethod
    def _tcp_host_port(cls, value: str | None) -> str | None:
        if value is not None:
            tcp_address(value)
        return value

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, value: list[int]) -> list[int]:
        if wrong := [status for status in value if not 100 <= status <= 599]:
            raise ValueError(f"HTTP statuses are 100-599, got {wrong}")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ProbeSettings:
        if (self.url is None) == (self.tcp is None):
            raise ValueError("give exactly one of `url` (HTTP) and `tcp` (host:port)")
        if self.tcp is not None and (self.expect_status or self.expect_body is not None):
            raise ValueError("expect_status and expect_body are for `url` probes, not `tcp`")
        # A check still running when the next is due would be skipped: no overlap.
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout:g}s) must not exceed interval "
                             f"({self.interval:g}s)")
        return self

    @property
    def target(self) -> str:
        return self.url if self.url is not None else str(self.tcp)


def tcp_address(value: str) -> tuple[str, int]:
    """("db", 5432) from "db:5432", ("::1", 6379) from "[::1]:6379"; ValueError otherwise."""
    host, sep, port = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    # An IPv6 address needs its brackets, or where it ends and the port begins is a guess.
    if (not sep or not host or (":" in host and not bracketed) or not port.isdigit()
            or not 0 < int(port) < 65536):
        raise ValueError(f'expected HOST:PORT (e.g. "db:5432", "[::1]:6379"), got {value!r}')
    return host, int(port)


def _unique_probe_names(probes: list[ProbeSettings]) -> list[ProbeSettings]:
    first: dict[str, int] = {}
    for index, probe in enumerate(probes):
        if probe.name in first:
            raise ValueError(f"duplicate name {probe.name!r}: probes[{first[probe.name]}] "
                             f"and probes[{index}]")
        first[probe.name] = index
    return probes


ProbeList = Annotated[list[ProbeSettings], AfterValidator(_unique_probe_names)]


SecurityParam = float | int | str | bool | list[str]


class SecuritySettings(_Group):
    """Security posture: checks (`source: security` rules) over what Docker and Kubernetes
    run, and drift from an approved baseline."""

    # "auto": on where Docker or Kubernetes is on (rules may be loaded later; with none,
    # the tracker only keeps the baseline).
    enabled: bool | Literal["auto"] = "auto"
    # The baseline of security-relevant fields per object: read at start (written by
    # `remedyd scan --write-baseline` or by an earlier run), kept up to date (first
    # sightings, accepted changes), so it survives a restart. Unset, the daemon keeps it
    # beside the [audit] path (daemon/integrations/security.py), var/ by default.
    baseline: Path = Path("var/security-baseline.json")
    # Capture an object never seen before as its own baseline (false: only objects in the
    # baseline file are compared; others carry `baseline: "none"` and no drift).
    learn: bool = True
    # Overrides of the security rules' `params` by name (allow-lists, policy switches),
    # so the bundled pack is tuned here rather than edited.
    params: dict[str, SecurityParam] = Field(default_factory=dict)


class EngineSettings(_Group):
    queue_size: int = Field(default=10_000, ge=10)


class LogSettings(_Group):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # text: one line for people (with incident= and trace= when known); json: one object
    # a line for a log pipeline (daemon/telemetry/logs.py).
    format: Literal["text", "json"] = "text"


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
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    probes: ProbeList = Field(default_factory=list)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
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


# Their values are credentials: an error names the key and never echoes what was given.
_SECRET_KEYS = frozenset({"api_token", "alertmanager_token", "alertmanager_password",
                          "secret", "headers"})


def _showable(error: Any) -> bool:
    """Whether an error may quote its input: not a credential, nor a table that may hold
    one (a model check on [webhooks] gets the whole table)."""
    return (not isinstance(error.get("input"), dict | list)
            and not _SECRET_KEYS.intersection(error_path(error)))


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
            f"{scrub(describe(error, show_input=_showable(error), name_unknown_keys=True))}"
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
    return {name.upper(): name for name in os.environ
            if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_FILE_VARIABLE}


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
