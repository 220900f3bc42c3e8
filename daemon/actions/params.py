"""Every action's parameter model, importable without the client library it drives.

Rules are checked against these at load time, also on a host where the action's
source is disabled, and without pulling in aiodocker or another client.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field, field_validator, model_validator

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


def _template(value: str) -> str:
    # Imported late: notify_text pulls in the decision types, params must stay light.
    from daemon.actions.notify_text import check_template

    return check_template(value)


class AppriseParams(BaseModel):
    """Apprise URLs (Slack, Teams, PagerDuty, e-mail, ntfy...); their credentials are never
    logged nor audited."""

    model_config = ConfigDict(extra="forbid")
    urls: list[str] = Field(min_length=1)
    # {rule}, {target}, {severity}, {summary}... (daemon/actions/notify_text.py FIELDS)
    title: str = ""
    body: str = ""
    # Apprise tags: only the URLs given with one of these tags (url?tag=x) are notified.
    tag: list[str] = Field(default_factory=list)
    retries: int | None = Field(default=None, ge=0, le=10)

    @field_validator("urls")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if "://" not in url:
                raise ValueError("an Apprise URL looks like scheme://..., e.g. "
                                 "json://host:port/path or ntfy://host/topic")
        return value

    @field_validator("title", "body")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _template(value)


class AlertmanagerParams(BaseModel):
    """The incident as an Alertmanager alert (API v2), resolved when the rule's state is."""

    model_config = ConfigDict(extra="forbid")
    # Falls back to [alertmanager] url.
    url: AnyHttpUrl | None = None
    timeout: Duration = 5.0
    retries: int | None = Field(default=None, ge=0, le=10)
    # Added to the alert's labels (routing, grouping); not templates.
    labels: dict[str, str] = Field(default_factory=dict)
    summary: str = ""
    description: str = ""

    @field_validator("labels")
    @classmethod
    def _label_names(cls, value: dict[str, str]) -> dict[str, str]:
        import re

        for name in value:
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
                raise ValueError(f"{name!r} is not a valid Alertmanager label name")
        return value

    @field_validator("summary", "description")
    @classmethod
    def _templates(cls, value: str) -> str:
        return _template(value)


# -- Kubernetes --------------------------------------------------------------------------------

# A label or annotation key: an optional DNS-subdomain prefix and a name (as the API checks).
_QUALIFIED_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?" \
                 r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"


class PodRemovalParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # The pod's own terminationGracePeriodSeconds when unset; whole seconds, rounded up.
    grace_period: Duration | None = None
    # A pod no controller owns is gone for good once removed: refused unless allowed here.
    allow_unowned: bool = False

    @field_validator("grace_period")
    @classmethod
    def _not_forced(cls, value: float | None) -> float | None:
        if value is not None and value < 1:
            # 0 removes the pod from the API before its kubelet has stopped it (what
            # `kubectl delete --force` does): two copies may run at once.
            raise ValueError("grace_period must be at least 1s (0 would force-delete the "
                             "pod while it may still run)")
        return value


class EvictParams(PodRemovalParams):
    # While a PodDisruptionBudget blocks the eviction (429), ask again this often (as
    # `kubectl drain` does) until [safety] action_timeout; never fall back to a delete.
    retry_every: Duration = Field(default=5.0, gt=0)


class DeletePodParams(PodRemovalParams):
    pass


class RollbackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Unset: the previous revision, as `kubectl rollout undo` picks it.
    to_revision: int | None = Field(default=None, ge=1)


class ScaleParams(BaseModel):
    """Set `replicas`, or move by `delta` from the count the Deployment has when the action
    runs; the result is kept within [min, max]."""

    model_config = ConfigDict(extra="forbid")
    replicas: int | None = Field(default=None, ge=0)
    delta: int | None = None
    min: int = Field(default=0, ge=0)
    max: int = Field(default=100, ge=0)

    @model_validator(mode="after")
    def _one_of(self) -> ScaleParams:
        if (self.replicas is None) == (self.delta is None):
            raise ValueError("give exactly one of replicas (a count) or delta (+N / -N)")
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        if self.delta == 0:
            raise ValueError("delta 0 changes nothing: give +N or -N")
        # Clamping a count the rule spells out would quietly run another one.
        if self.replicas is not None and not self.min <= self.replicas <= self.max:
            raise ValueError(f"replicas ({self.replicas}) is outside [min, max] "
                             f"([{self.min}, {self.max}])")
        return self


class MetadataParams(BaseModel):
    """Labels or annotations to set (key: value) and keys to remove, on the subject."""

    model_config = ConfigDict(extra="forbid")
    set: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("set", "remove")
    @classmethod
    def _keys(cls, value: dict[str, str] | list[str]) -> dict[str, str] | list[str]:
        import re

        for key in value:
            if not re.match(_QUALIFIED_KEY, key) or len(key) > 317:
                raise ValueError(f"{key!r} is not a valid label/annotation key")
        return value

    @model_validator(mode="after")
    def _something(self) -> MetadataParams:
        if not self.set and not self.remove:
            raise ValueError("nothing to do: give `set` and/or `remove`")
        return self


class QuarantineParams(BaseModel):
    """Label the pod and isolate it with a deny-all NetworkPolicy selecting that label."""

    model_config = ConfigDict(extra="forbid")
    label: str = Field(default="remedyd.io/quarantine", pattern=_QUALIFIED_KEY)
    value: str = Field(default="true", pattern=_LABEL_VALUE, max_length=63)


@dataclass(frozen=True, slots=True)
class Permission:
    """One RBAC rule an action needs: a verb on a resource of an API group ("" = core)."""

    verb: str
    group: str
    resource: str

    def __str__(self) -> str:
        where = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {where}"


@dataclass(frozen=True, slots=True)
class ActionInfo:
    """What rule loading and `remedyd check` know of an action without its implementation."""

    params: type[BaseModel]
    # Event subject kinds ("docker/container") it can start from; empty: any
    # (notifications). It may act on another object: see `acts_on`.
    applies_to: tuple[str, ...] = ()
    # Whether it changes its target (and so spends budgets).
    mutating: bool = True
    # The kind it changes ("kubernetes/deployment"), resolved from the event's subject
    # by the owner chain; empty: the subject itself.
    acts_on: str = ""
    # What it needs from the API server, for `remedyd check` and `remedyd rbac`.
    permissions: tuple[Permission, ...] = ()


_CONTAINER = ("docker/container",)
_POD = ("kubernetes/pod",)
# A Deployment action can start from an event about any object in its chain.
_WORKLOAD = ("kubernetes/pod", "kubernetes/replicaset", "kubernetes/deployment")
_ANY_KUBE = ("kubernetes/pod", "kubernetes/replicaset", "kubernetes/deployment",
             "kubernetes/node")


def _perms(*triples: str) -> tuple[Permission, ...]:
    """"verb group resource" strings; group "-" is the core API group."""
    out = []
    for triple in triples:
        verb, group, resource = triple.split()
        out.append(Permission(verb, "" if group == "-" else group, resource))
    return tuple(out)


_METADATA_PERMS = _perms("get - pods", "patch - pods", "get apps replicasets",
                         "patch apps replicasets", "get apps deployments",
                         "patch apps deployments", "get - nodes", "patch - nodes")

_KUBE: dict[str, ActionInfo] = {
    "kubernetes.evict": ActionInfo(EvictParams, _POD, acts_on="kubernetes/pod",
                                   permissions=_perms("get - pods", "create - pods/eviction")),
    "kubernetes.delete_pod": ActionInfo(DeletePodParams, _POD, acts_on="kubernetes/pod",
                                        permissions=_perms("get - pods", "delete - pods")),
    "kubernetes.quarantine": ActionInfo(
        QuarantineParams, _POD, acts_on="kubernetes/pod",
        permissions=_perms("get - pods", "patch - pods",
                           "get networking.k8s.io networkpolicies",
                           "create networking.k8s.io networkpolicies")),
    "kubernetes.rollout_restart": ActionInfo(
        NoParams, _WORKLOAD, acts_on="kubernetes/deployment",
        permissions=_perms("get apps deployments", "patch apps deployments")),
    "kubernetes.rollback": ActionInfo(
        RollbackParams, _WORKLOAD, acts_on="kubernetes/deployment",
        permissions=_perms("get apps deployments", "patch apps deployments",
                           "list apps replicasets")),
    # The Deployment is read to check it (as `kubectl scale` does), its scale to move from.
    "kubernetes.scale": ActionInfo(
        ScaleParams, _WORKLOAD, acts_on="kubernetes/deployment",
        permissions=_perms("get apps deployments", "get apps deployments/scale",
                           "patch apps deployments/scale")),
    "kubernetes.pause_rollout": ActionInfo(
        NoParams, _WORKLOAD, acts_on="kubernetes/deployment",
        permissions=_perms("get apps deployments", "patch apps deployments")),
    "kubernetes.cordon": ActionInfo(NoParams, ("kubernetes/pod", "kubernetes/node"),
                                    acts_on="kubernetes/node",
                                    permissions=_perms("get - nodes", "patch - nodes")),
    "kubernetes.uncordon": ActionInfo(NoParams, ("kubernetes/pod", "kubernetes/node"),
                                      acts_on="kubernetes/node",
                                      permissions=_perms("get - nodes", "patch - nodes")),
    # Labels and annotations go on the event's subject, whatever its kind (read first: the
    # preflight checks it still exists and lacks the change).
    "kubernetes.annotate": ActionInfo(MetadataParams, _ANY_KUBE, permissions=_METADATA_PERMS),
    "kubernetes.label": ActionInfo(MetadataParams, _ANY_KUBE, permissions=_METADATA_PERMS),
}

ACTIONS: dict[str, ActionInfo] = {
    "docker.restart": ActionInfo(StopParams, _CONTAINER),
    "docker.stop": ActionInfo(StopParams, _CONTAINER),
    "docker.kill": ActionInfo(KillParams, _CONTAINER),
    "docker.pause": ActionInfo(NoParams, _CONTAINER),
    "docker.unpause": ActionInfo(NoParams, _CONTAINER),
    "notify.webhook": ActionInfo(WebhookParams, mutating=False),
    "notify.apprise": ActionInfo(AppriseParams, mutating=False),
    "notify.alertmanager": ActionInfo(AlertmanagerParams, mutating=False),
    **_KUBE,
}

# Action name -> parameter model, for callers that need only the parameters.
CATALOG: dict[str, type[BaseModel]] = {name: info.params for name, info in ACTIONS.items()}
