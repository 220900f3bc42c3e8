"""The security view of a Kubernetes object (contract: daemon/security/events.py).

What the checks in rules/security.yaml read and what the baseline keeps and diffs: only
security-relevant, non-volatile content (no status, resourceVersion, timestamps or
replica counts), every key present whatever the object says, so a CEL check needs no
`has()`. The same view comes out of a `kubectl get -o json` item, a manifest document
and the trimmed form the daemon caches (daemon/kube/trim.py): what trim drops (env,
ports, ephemeralContainers) reads as empty.

A container's settings are the EFFECTIVE ones, as the kubelet applies them: its own
securityContext over the Pod's. The Pod-level values are kept beside them, since the
Pod Security Standards refuse a bad Pod-level value even where every container
overrides it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from daemon.core.events import JSONValue
from daemon.security import pss
from daemon.security.images import parse_image

Obj = Mapping[str, Any]
_EMPTY: Mapping[str, Any] = {}

# Where each pod-bearing kind keeps its pod template (a Pod is its own).
_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"), "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"), "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"), "ReplicationController": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"), "PodTemplate": ("template",),
}
_CONTAINER_LISTS = (("containers", "container"), ("initContainers", "initContainer"),
                    ("ephemeralContainers", "ephemeralContainer"))
# CIS Kubernetes 5.4.1: env var names that say they hold a credential.
_SECRET_NAME = re.compile(r"password|secret|token|key", re.IGNORECASE)
_PROBES = ("livenessProbe", "readinessProbe", "startupProbe")
_RULE_FIELDS = ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs")


def kube_view(obj: Obj) -> dict[str, JSONValue]:
    """Normalised security-relevant content of `obj`; every key present."""
    kind = str(obj.get("kind") or "")
    metadata = _map(obj.get("metadata"))
    view: dict[str, JSONValue] = {
        "name": str(metadata.get("name") or ""),
        "namespace": str(metadata.get("namespace") or ""),
        "labels": _strings(metadata.get("labels")),
        "workload": False,
    }
    if kind == "Pod":
        view.update(_workload(metadata, _map(obj.get("spec"))))
    elif kind in _TEMPLATE_PATHS:
        template: Any = obj
        for key in _TEMPLATE_PATHS[kind]:
            template = _map(template).get(key)
        template = _map(template)
        pod_metadata = _map(template.get("metadata"))
        # The Pods' labels, which NetworkPolicies select on, not the controller's own.
        view["labels"] = _strings(pod_metadata.get("labels"))
        view.update(_workload(pod_metadata, _map(template.get("spec"))))
    elif kind == "Namespace":
        labels = view["labels"]
        enforce = labels.get(pss.ENFORCE_LABEL, "") if isinstance(labels, dict) else ""
        view["podSecurityEnforce"] = enforce
        # Unknown from the object alone: the live source and `remedyd scan` fill it in.
        view["networkPolicies"] = -1
    elif kind in ("Role", "ClusterRole"):
        view["rules"] = [_rbac_rule(_map(rule)) for rule in _list(obj.get("rules"))]
        view["aggregated"] = obj.get("aggregationRule") is not None
    elif kind in ("RoleBinding", "ClusterRoleBinding"):
        ref = _map(obj.get("roleRef"))
        view["roleRef"] = {"kind": str(ref.get("kind") or ""), "name": str(ref.get("name") or "")}
        view["subjects"] = [
            {"kind": str(s.get("kind") or ""), "name": str(s.get("name") or ""),
             "namespace": str(s.get("namespace") or "")}
            for s in map(_map, _list(obj.get("subjects")))]
    elif kind == "ServiceAccount":
        view["automountServiceAccountToken"] = _bool_or_none(
            obj.get("automountServiceAccountToken"))
    elif kind == "NetworkPolicy":
        spec = _map(obj.get("spec"))
        view["podSelector"] = _json(spec.get("podSelector") or {})
        view["policyTypes"] = [str(t) for t in _list(spec.get("policyTypes"))]
        view["ingress"] = _json(spec.get("ingress") or [])
        view["egress"] = _json(spec.get("egress") or [])
    return view


def _workload(metadata: Obj, spec: Obj) -> dict[str, JSONValue]:
    """The Pod part of a pod-bearing object's view, from its (template's) metadata and spec."""
    annotations = _map(metadata.get("annotations"))
    context = _map(spec.get("securityContext"))
    # Only the fields: the kubelet ignores the seccomp annotations since 1.27, and Pod
    # Security admission reads only the fields from 1.19 (AppArmor's still count).
    pod_seccomp = _profile(context.get("seccompProfile"))
    pod_apparmor = _profile(context.get("appArmorProfile"))
    pod_selinux = _selinux(context.get("seLinuxOptions"))
    pod_windows = _map(context.get("windowsOptions")).get("hostProcess")
    pod_nonroot = _bool_or_none(context.get("runAsNonRoot"))
    pod_user = _int_or_none(context.get("runAsUser"))

    host_paths: list[JSONValue] = []
    volume_types: set[str] = set()
    for volume in map(_map, _list(spec.get("volumes"))):
        for key in volume:
            if key != "name":
                volume_types.add(key)
        host_path = volume.get("hostPath")
        if isinstance(host_path, Mapping):
            host_paths.append(str(host_path.get("path") or ""))
    sysctls = [str(_map(s).get("name") or "") for s in _list(context.get("sysctls"))]

    containers: list[JSONValue] = []
    images: list[JSONValue] = []
    for field, type_ in _CONTAINER_LISTS:
        for container in map(_map, _list(spec.get(field))):
            name = str(container.get("name") or "")
            image = str(container.get("image") or "")
            sc = _map(container.get("securityContext"))
            caps = _map(sc.get("capabilities"))
            seccomp = _profile(sc.get("seccompProfile"))
            if seccomp is None:
                seccomp = pod_seccomp
            apparmor = _profile(sc.get("appArmorProfile"))
            if apparmor is None:
                value = annotations.get(pss.APPARMOR_ANNOTATION + name)
                apparmor = (pss.annotation_profile(str(value)) if value else pod_apparmor)
            nonroot = _bool_or_none(sc.get("runAsNonRoot"))
            user = _int_or_none(sc.get("runAsUser"))
            windows = _map(sc.get("windowsOptions")).get("hostProcess")
            containers.append({
                "type": type_, "name": name, "image": image,
                "privileged": sc.get("privileged") is True,
                "allowPrivilegeEscalation": _bool_or_none(sc.get("allowPrivilegeEscalation")),
                "runAsNonRoot": pod_nonroot if nonroot is None else nonroot,
                "runAsUser": pod_user if user is None else user,
                "capAdd": _capabilities(caps.get("add")),
                "capDrop": _capabilities(caps.get("drop")),
                "seccomp": seccomp,
                "appArmor": apparmor,
                "procMount": _str_or_none(sc.get("procMount")),
                "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
                "hostPorts": _host_ports(container.get("ports")),
                "secretEnv": _secret_env(container.get("env")),
                "probeHosts": _probe_hosts(container),
                "seLinux": _selinux(sc.get("seLinuxOptions") or context.get("seLinuxOptions")),
                "windowsHostProcess": _bool_or_none(
                    pod_windows if windows is None else windows),
            })
            images.append({"container": name, **parse_image(image).as_dict()})
    return {
        "workload": True,
        "pod": {
            "hostNetwork": spec.get("hostNetwork") is True,
            "hostPID": spec.get("hostPID") is True,
            "hostIPC": spec.get("hostIPC") is True,
            "hostPathVolumes": host_paths,
            "volumeTypes": list[JSONValue](sorted(volume_types)),
            "sysctls": list[JSONValue](sysctls),
            "unsafeSysctls": [s for s in sysctls if s not in pss.SAFE_SYSCTLS],
            # What the ServiceAccount admission plugin fills in when none is named; ""
            # where there is no pod spec to read (the cache keeps no ReplicaSet template).
            "serviceAccountName": str(spec.get("serviceAccountName")
                                      or spec.get("serviceAccount")
                                      or ("default" if spec else "")),
            "automountServiceAccountToken": _bool_or_none(
                spec.get("automountServiceAccountToken")),
            "runAsNonRoot": pod_nonroot,
            "runAsUser": pod_user,
            "seccomp": pod_seccomp,
            "appArmor": pod_apparmor,
            "seLinux": pod_selinux,
            "hostUsers": _bool_or_none(spec.get("hostUsers")),
            "windowsHostProcess": _bool_or_none(pod_windows),
            "os": str(_map(spec.get("os")).get("name") or ""),
        },
        "containers": containers,
        "images": images,
    }


def _rbac_rule(rule: Obj) -> dict[str, JSONValue]:
    return {field: [str(v) for v in _list(rule.get(field))] for field in _RULE_FIELDS}


def _profile(value: Any) -> str | None:
    """A seccompProfile / appArmorProfile's type, or None when not set."""
    if not isinstance(value, Mapping) or value.get("type") is None:
        return None
    return str(value["type"])


def _selinux(value: Any) -> dict[str, JSONValue]:
    options = _map(value)
    return {key: str(options.get(key) or "") for key in ("type", "user", "role", "level")}


def _capabilities(value: Any) -> list[JSONValue]:
    names: list[JSONValue] = []
    for cap in _list(value):
        name = str(cap).upper()
        names.append(name[4:] if name.startswith("CAP_") else name)
    return names


def _host_ports(value: Any) -> list[JSONValue]:
    ports: list[JSONValue] = []
    for port in map(_map, _list(value)):
        host = port.get("hostPort")
        if isinstance(host, int) and not isinstance(host, bool) and host:
            ports.append(host)
    return ports


def _probe_hosts(container: Obj) -> list[JSONValue]:
    """The hosts a probe or lifecycle hook sends to (PSS baseline, 1.34: none may be set,
    or the kubelet would reach other hosts on the Pod's behalf)."""
    handlers = [container.get(probe) for probe in _PROBES]
    lifecycle = _map(container.get("lifecycle"))
    handlers += [lifecycle.get("postStart"), lifecycle.get("preStop")]
    hosts: list[JSONValue] = []
    for handler in handlers:
        if isinstance(handler, Mapping):
            for action in ("httpGet", "tcpSocket"):
                host = _map(handler.get(action)).get("host")
                if host:
                    hosts.append(str(host))
    return hosts


def _secret_env(value: Any) -> list[JSONValue]:
    """Names of env vars that look like credentials and carry a literal value (never the
    value: the view is kept in the baseline file and shown in drift events)."""
    names: list[JSONValue] = []
    for env in map(_map, _list(value)):
        name = env.get("name")
        # A literal `value` of any length: the daemon's cache keeps such entries with the
        # value blanked (daemon/kube/trim.py), and they must read the same as the API's.
        if isinstance(name, str) and isinstance(env.get("value"), str) and (
                _SECRET_NAME.search(name)):
            names.append(name)
    return names


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else _EMPTY


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _strings(value: Any) -> dict[str, JSONValue]:
    return {str(k): str(v) for k, v in _map(value).items()}


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _json(value: Any) -> JSONValue:
    """A plain JSON copy of a spec fragment (a manifest's YAML may carry other scalars)."""
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
