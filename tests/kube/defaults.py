"""The defaulting kube-apiserver applies on write, for the fields kubectl and remedyd compare:
without it a template kubectl sends back (`rollout undo` adds `resources: {}`) would never equal
the stored one, and the controller would mint a new ReplicaSet instead of reusing the old."""

from __future__ import annotations

from typing import Any

Obj = dict[str, Any]


# kube-apiserver decodes a write into Go structs, defaults it and encodes it back, so what it
# serves has the fields of a struct in declaration order and map keys sorted; kubectl re-encodes
# what it read the same way, so a client that sends a template back as read matches it byte for
# byte only against a server that does this too (k8s.io/api/core/v1 types.go).
_META = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
         "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
         "annotations", "ownerReferences", "finalizers", "managedFields")
_POD_SPEC = ("volumes", "initContainers", "containers", "ephemeralContainers", "restartPolicy",
             "terminationGracePeriodSeconds", "activeDeadlineSeconds", "dnsPolicy",
             "nodeSelector", "serviceAccountName", "serviceAccount",
             "automountServiceAccountToken", "nodeName", "hostNetwork", "hostPID", "hostIPC",
             "shareProcessNamespace", "securityContext", "imagePullSecrets", "hostname",
             "subdomain", "affinity", "schedulerName", "tolerations", "hostAliases",
             "priorityClassName", "priority", "dnsConfig", "readinessGates", "runtimeClassName",
             "enableServiceLinks", "preemptionPolicy", "overhead", "topologySpreadConstraints",
             "setHostnameAsFQDN", "os", "hostUsers", "schedulingGates", "resourceClaims",
             "resources")
_CONTAINER = ("name", "image", "command", "args", "workingDir", "ports", "envFrom", "env",
              "resources", "resizePolicy", "restartPolicy", "volumeMounts", "volumeDevices",
              "livenessProbe", "readinessProbe", "startupProbe", "lifecycle",
              "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy",
              "securityContext", "stdin", "stdinOnce", "tty")


def _go_order(obj: Obj, fields: tuple[str, ...]) -> None:
    """Reorder `obj` in place: known fields in struct order, then any others as they were."""
    items = [(k, obj[k]) for k in fields if k in obj] + [(k, v) for k, v in obj.items()
                                                         if k not in fields]
    obj.clear()
    obj.update(items)


def _template_order(template: Obj) -> None:
    _go_order(template, ("metadata", "spec"))
    meta = template.get("metadata")
    if isinstance(meta, dict):
        for key in ("labels", "annotations"):
            if isinstance(meta.get(key), dict):
                meta[key] = dict(sorted(meta[key].items()))
        _go_order(meta, _META)


def _container(c: Obj) -> None:
    c.setdefault("resources", {})
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = ":" not in tag or tag.endswith(":latest")
    c.setdefault("imagePullPolicy", "Always" if latest and "@" not in tag else "IfNotPresent")


def pod_spec(spec: Obj) -> None:
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                _container(c)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for field in ("containers", "initContainers"):
        for c in spec.get(field) or []:
            if isinstance(c, dict):
                _go_order(c, _CONTAINER)
    _go_order(spec, _POD_SPEC)


def apply_defaults(kind: str, obj: Obj) -> None:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "Pod":
        pod_spec(spec)
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("tolerations", [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
             "effect": "NoExecute", "tolerationSeconds": 300}])
    elif kind in ("Deployment", "ReplicaSet"):
        spec.setdefault("replicas", 1)
        template = spec.get("template")
        if isinstance(template, dict) and isinstance(template.get("spec"), dict):
            pod_spec(template["spec"])
            _template_order(template)
        if kind == "Deployment":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
            if strategy.get("type", "RollingUpdate") == "RollingUpdate":
                strategy.setdefault("type", "RollingUpdate")
                strategy.setdefault("rollingUpdate", {}).setdefault("maxSurge", "25%")
                strategy["rollingUpdate"].setdefault("maxUnavailable", "25%")
