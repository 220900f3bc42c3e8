"""What remedyd needs from the API server, as RBAC rules: `remedyd check` lists them and
`remedyd rbac` prints them as a ClusterRole (and, for a service account, its binding).

Pure: it knows the watched kinds' resources and the permissions each action declares
(daemon.actions.params passes them in, as the Permission protocol below), nothing of
rule files or clients. `required` gathers the cluster-wide rules (watched kinds, actions),
`local` those of remedyd's own namespace (its Lease, its state ConfigMap).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import yaml

from daemon.kube.resources import RESOURCES, Resource

NAME = "remedyd"
# The Role in remedyd's own namespace (its Lease and its state ConfigMap).
LOCAL_NAME = "remedyd-leader-election"
LABELS = {"app.kubernetes.io/name": NAME}
RBAC_API = "rbac.authorization.k8s.io"
# What the source asks of every kind it watches.
WATCH_VERBS = ("list", "watch")
ANY_KIND = "*"


class Permission(Protocol):
    """One verb on one resource of an API group ("" = core); params.Permission is one."""

    @property
    def verb(self) -> str: ...

    @property
    def group(self) -> str: ...

    @property
    def resource(self) -> str: ...


class ActionNeeds(Protocol):
    """What an action declares (params.ActionInfo): whether it acts on the event's subject
    ("" acts_on) and what it asks of the API server."""

    @property
    def acts_on(self) -> str: ...

    @property
    def permissions(self) -> tuple[Permission, ...]: ...


@dataclass(frozen=True, slots=True)
class Grant:
    verb: str
    group: str
    resource: str  # "pods", or "pods/eviction" for a subresource


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """One ClusterRole rule: the verbs granted on one resource of one API group."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    # Only these objects (empty: all of them).
    names: tuple[str, ...] = ()

    def allows(self, verb: str, group: str, resource: str) -> bool:
        return group == self.group and resource == self.resource and verb in self.verbs

    def manifest(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"apiGroups": [self.group], "resources": [self.resource]}
        if self.names:
            rule["resourceNames"] = list(self.names)
        rule["verbs"] = list(self.verbs)
        return rule

    def __str__(self) -> str:
        # As `kubectl describe clusterrole` names it: deployments.apps/scale, pods/eviction.
        base, slash, sub = self.resource.partition("/")
        where = f"{base}.{self.group}" if self.group else base
        named = f" {','.join(self.names)}" if self.names else ""
        return f"{','.join(self.verbs)} {where}{slash}{sub}{named}"


def required(kinds: Iterable[str],
             steps: Iterable[tuple[ActionNeeds, Sequence[str]]]) -> list[PolicyRule]:
    """What remedyd asks of the API server cluster-wide: list and watch on every watched
    kind (`[kubernetes] kinds` names) and what each rule step's action needs (with the
    target kinds, "kubernetes/pod", its rule's events can be about)."""
    grants = [grant for kind in kinds for grant in watching(_resource(kind))]
    for action, targets in steps:
        grants.extend(action_grants(action, targets))
    return merge(grants)


def local(lease: str | None, state: str | None) -> list[PolicyRule]:
    """What remedyd asks of its own namespace, as client-go controllers keep theirs there:
    leader election's Lease (read and renewed by name, created once) and the shared
    state's ConfigMap (read and patched by name, created once). Create cannot be limited
    to a name; the rest is, so a compromised remedyd cannot rewrite other ConfigMaps."""
    rules = []
    if lease:
        rules += [PolicyRule("coordination.k8s.io", "leases", ("create",)),
                  PolicyRule("coordination.k8s.io", "leases", ("get", "update"), (lease,))]
    if state:
        rules += [PolicyRule("", "configmaps", ("create",)),
                  PolicyRule("", "configmaps", ("get", "patch"), (state,))]
    return rules


def full(actions: Mapping[str, ActionNeeds]) -> list[PolicyRule]:
    """Every rule for every kind and every action at once, names aside: the most remedyd
    may ever ask."""
    return merge([*(Grant(verb, rule.group, rule.resource) for rule in local("*", "*")
                    for verb in rule.verbs),
                  *(Grant(verb, rule.group, rule.resource) for rule in required(
                      RESOURCES, ((info, (f"kubernetes/{ANY_KIND}",))
                                  for info in actions.values())) for verb in rule.verbs)])


def watching(resource: Resource) -> list[Grant]:
    return [Grant(verb, resource.group, resource.plural) for verb in WATCH_VERBS]


def action_grants(action: ActionNeeds, targets: Sequence[str]) -> list[Grant]:
    """The action's permissions; one that acts on the event's subject (annotate, label)
    only on the resources of the kinds the rule's events can be about."""
    grants = [Grant(p.verb, p.group, p.resource) for p in action.permissions]
    kinds = {target.partition("/")[2] for target in targets}
    if action.acts_on or ANY_KIND in kinds:
        return grants
    subjects = {(r.group, r.plural) for r in RESOURCES.values() if r.kind.lower() in kinds}
    return [g for g in grants if (g.group, g.resource.partition("/")[0]) in subjects]


def merge(grants: Iterable[Grant]) -> list[PolicyRule]:
    """One rule per (API group, resource), verbs sorted, rules sorted: the same input
    prints the same role."""
    verbs: dict[tuple[str, str], set[str]] = {}
    for grant in grants:
        verbs.setdefault((grant.group, grant.resource), set()).add(grant.verb)
    return [PolicyRule(group, resource, tuple(sorted(verbs[group, resource])))
            for group, resource in sorted(verbs)]


def describe(rules: Iterable[PolicyRule]) -> str:
    """`get,patch deployments.apps; create pods/eviction; ...`"""
    return "; ".join(str(rule) for rule in rules)


def allowed(rules: Iterable[PolicyRule], verb: str, group: str, resource: str) -> bool:
    return any(rule.allows(verb, group, resource) for rule in rules)


def cluster_role(rules: Iterable[PolicyRule], name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "rules": [rule.manifest() for rule in rules]}


def role(rules: Iterable[PolicyRule], namespace: str, name: str = LOCAL_NAME
         ) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "Role",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
            "rules": [rule.manifest() for rule in rules]}


def role_binding(namespace: str, service_account: str, name: str = LOCAL_NAME
                 ) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(LABELS)},
            "roleRef": {"apiGroup": RBAC_API, "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account,
                          "namespace": namespace}]}


def cluster_role_binding(namespace: str, service_account: str,
                         name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "roleRef": {"apiGroup": RBAC_API, "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": service_account,
                          "namespace": namespace}]}


# A namespace is a DNS label; a service account name a DNS subdomain.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def service_account(value: str) -> tuple[str, str]:
    """NAMESPACE/NAME, checked as the API server checks them; ValueError saying why."""
    namespace, slash, name = value.partition("/")
    if not slash or not namespace or not name:
        raise ValueError(f"expected NAMESPACE/NAME, e.g. monitoring/remedyd (got {value!r})")
    if not _DNS_LABEL.match(namespace):
        raise ValueError(f"namespace {namespace!r} is not a valid name (lower-case letters, "
                         "digits and '-', at most 63)")
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise ValueError(f"service account name {name!r} is not a valid name (lower-case "
                         "letters, digits, '-' and '.')")
    return namespace, name


def render(documents: Iterable[Mapping[str, Any]], header: Sequence[str] = ()) -> str:
    """YAML documents `kubectl apply -f -` takes, after `# ` comment lines."""
    comments = "".join(f"# {line}\n" for line in header)
    body = "---\n".join(yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=None)
                        for doc in documents)
    return comments + body


def _resource(kind: str) -> Resource:
    try:
        return RESOURCES[kind]
    except KeyError:
        raise ValueError(f"[kubernetes] kinds: unknown kind {kind!r} "
                         f"(known: {', '.join(sorted(RESOURCES))})") from None
