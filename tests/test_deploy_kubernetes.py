"""deploy/kubernetes: every overlay renders with kubectl's kustomize, every manifest validates
against Kubernetes' own schemas (1.30 and the newest), the roles are exactly what
`remedyd rbac` prints for the bundled rules, the pod spec is hardened, and the configuration
and rules a pod mounts load in remedyd as that pod's environment sets it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from daemon.actions.params import ACTIONS
from daemon.engine.lint import lint
from daemon.engine.ruleset import compile_rules
from daemon.integrations.registry import available
from daemon.kube.resources import RESOURCES
from daemon.settings import Settings, load_settings
from daemon.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBECTL = Path(sys.executable).parent / "kubectl"
OVERLAYS = ("cluster", "daemonset", "sidecar")
# The oldest Kubernetes the manifests promise, and the newest kubernetes-validate knows.
VERSIONS = ("1.30", kubernetes_validate.utils.latest_version())
# Kinds Kubernetes ships no schema for (the Prometheus Operator's CRDs, which no package
# here carries either): the fields these objects use, as monitoring.coreos.com/v1 defines
# them, strict like the rest. `kubectl apply --dry-run=server -k deploy/kubernetes/monitoring`
# on a cluster with the operator checks the whole CRD schema.
# The operator's Duration pattern: units largest first, each at most once ("1h30m", "5m").
PROMETHEUS_DURATION = "^(0|{})$".format("".join(f"(([0-9]+){unit})?"
                                                for unit in ("y", "w", "d", "h", "m", "s", "ms")))


def _strict(required: list[str], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": properties,
            "additionalProperties": False}


_STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
_META = _strict(["name", "namespace"], name={"type": "string"},
                namespace={"type": "string"}, labels=_STRINGS, annotations=_STRINGS)
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": _strict(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": "monitoring.coreos.com/v1"}, kind={"const": "ServiceMonitor"},
        metadata=_META,
        spec=_strict(["selector", "endpoints"],
                     selector=_strict([], matchLabels=_STRINGS),
                     namespaceSelector=_strict([], any={"type": "boolean"}),
                     endpoints={"type": "array", "minItems": 1, "items": _strict(
                         ["port"], port={"type": "string"}, path={"type": "string"},
                         interval={"type": "string", "pattern": PROMETHEUS_DURATION})})),
    "PrometheusRule": _strict(
        ["apiVersion", "kind", "metadata", "spec"],
        apiVersion={"const": "monitoring.coreos.com/v1"}, kind={"const": "PrometheusRule"},
        metadata=_META,
        spec=_strict(["groups"], groups={"type": "array", "minItems": 1, "items": _strict(
            ["name", "rules"], name={"type": "string", "minLength": 1},
            rules={"type": "array", "minItems": 1, "items": _strict(
                ["alert", "expr"], alert={"type": "string", "minLength": 1},
                expr={"type": "string", "minLength": 1},
                **{"for": {"type": "string", "pattern": PROMETHEUS_DURATION}},
                labels=_STRINGS, annotations=_STRINGS)})})),
}
# What the downward API would put into a pod's environment.
DOWNWARD = {"metadata.name": "remedyd-7d9f-abcde", "spec.nodeName": "worker-1",
            "status.podIP": "10.42.0.17"}
# Docker rules need a Docker engine, probe rules [[probes]], KPI rules [prometheus] url:
# the pod's rules are the others.
POD_RULE_FILES = sorted(p.name for p in (ROOT / "rules").glob("*.yaml")
                        if p.name not in ("docker.yaml", "probes.yaml", "kpi.yaml"))


def kustomize(directory: Path) -> list[dict[str, Any]]:
    done = subprocess.run([str(KUBECTL), "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay and the monitoring kustomization, rendered once."""
    dirs = {name: DEPLOY / "overlays" / name for name in OVERLAYS}
    dirs["monitoring"] = DEPLOY / "monitoring"
    return {name: kustomize(path) for name, path in dirs.items()}


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in the rendered manifests"
    return found[0]


def workload(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The Deployment or DaemonSet whose pods run remedyd."""
    found = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")
             and any(c["name"] == "remedyd" for c in d["spec"]["template"]["spec"]["containers"])]
    assert len(found) == 1
    return found[0]


def remedyd_container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["containers"] if c["name"] == "remedyd")


def rbac(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """What `remedyd rbac` prints for the bundled rules under the pods' configuration."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("REMEDYD_")}
    done = subprocess.run([sys.executable, "-m", "daemon", "rbac", "--config",
                           str(DEPLOY / "base" / "remedyd.toml"), str(ROOT / "rules")],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**clean, **(env or {})})
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def container_env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet sets it: downward API values filled in,
    $(VAR) references to earlier variables expanded."""
    env: dict[str, str] = {}
    values = dict(DOWNWARD, **{"metadata.namespace": namespace})
    for var in container.get("env", []):
        if "valueFrom" in var:
            env[var["name"]] = values[var["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]),
                                      var["value"])
    return env


# -- rendering and schemas ---------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_its_workload(rendered: dict[str, list[dict[str, Any]]],
                                           overlay: str) -> None:
    docs = rendered[overlay]
    shape = workload(docs)
    assert {d["metadata"].get("namespace") for d in docs
            if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding")} == {
        only(docs, "Namespace")["metadata"]["name"]}
    if overlay == "cluster":
        assert shape["kind"] == "Deployment" and shape["spec"]["replicas"] == 2
        budget = only(docs, "PodDisruptionBudget")
        assert budget["spec"]["minAvailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"].items() <= (
            shape["spec"]["template"]["metadata"]["labels"].items())
    elif overlay == "daemonset":
        assert shape["kind"] == "DaemonSet"
    else:
        containers = [c["name"] for c in shape["spec"]["template"]["spec"]["containers"]]
        assert sorted(containers) == ["app", "remedyd"]
    # The Service reaches the pods on the port they listen on.
    service = only(docs, "Service", "remedyd")
    pod_labels = shape["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    port = service["spec"]["ports"][0]
    assert port["port"] == 9464
    container = remedyd_container(shape["spec"]["template"]["spec"])
    assert {"name": "http", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
    # The project's own image, from the Dockerfile: no registry host.
    assert container["image"] == "remedyd:latest"
    # A sidecar that is not ready (API server unreachable) must not take its application
    # out of the Service; on its own, remedyd is ready once every kind listed.
    probe = container.get("readinessProbe")
    assert probe is None if overlay == "sidecar" else probe["httpGet"]["path"] == "/readyz"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_manifest_validates_strictly(rendered: dict[str, list[dict[str, Any]]],
                                                    version: str) -> None:
    problems = []
    for name, docs in rendered.items():
        for doc in docs:
            if doc["kind"] in CRD_SCHEMAS:
                continue
            where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                problems.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                # An unknown kind is a mistake here, not a pass.
                problems.append(f"{where}: {exc.message}")
    assert problems == []


def test_strict_validation_catches_a_misspelt_field(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    # The check above would pass anything if strictness did not reach the pod spec.
    pod = dict(workload(rendered["cluster"]))
    spec = pod["spec"]["template"]["spec"]
    broken = dict(pod, spec=dict(pod["spec"], template=dict(
        pod["spec"]["template"], spec=dict(spec, securityContex=spec["securityContext"]))))
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_service_monitor_and_prometheus_rule_match_the_operators_api(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["monitoring"]
    assert sorted(d["kind"] for d in docs) == sorted(CRD_SCHEMAS)
    for doc in docs:
        jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
    monitor = only(docs, "ServiceMonitor")
    service = only(rendered["cluster"], "Service", "remedyd")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= (
        service["metadata"]["labels"].items())
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [
        p["name"] for p in service["spec"]["ports"]]
    # In every namespace: the sidecar overlay runs remedyd in its application's.
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def exported_metrics() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_alerts_cover_remedyds_health_with_metrics_it_exports(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    rule = only(rendered["monitoring"], "PrometheusRule")
    alerts = {r["alert"]: r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]}
    used = {name for expr in alerts.values() for name in re.findall(r"remedyd_\w+", expr)}
    assert used and used <= exported_metrics(), used - exported_metrics()
    # Source disconnected, gaps, no leader, budget exhaustion, audit write failures.
    assert "remedyd_source_connected" in alerts["RemedydSourceDisconnected"]
    assert "remedyd_source_gaps_total" in alerts["RemedydSourceGaps"]
    assert re.search(r"sum by \(namespace\) \(remedyd_leader\) == 0", alerts["RemedydNoLeader"])
    assert 'guard="budget"' in alerts["RemedydBudgetExhausted"]
    assert "remedyd_audit_write_failures_total" in alerts["RemedydAuditWriteFailures"]


# -- RBAC ----------------------------------------------------------------------------------

# What leader election and the shared state need (`remedyd rbac` prints them): granted in
# remedyd's own namespace by base/leader-election-role.yaml, not cluster-wide.
LEASE_AND_STATE = {("coordination.k8s.io", "leases", verb) for verb in ("create", "get", "update")
                   } | {("", "configmaps", verb) for verb in ("create", "get", "patch")}


def grants(*roles: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for role in roles for rule in role["rules"]
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"]}


@pytest.mark.parametrize("overlay", ["cluster", "daemonset"])
def test_cluster_role_is_what_remedyd_rbac_prints_for_the_bundled_rules(
        rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    docs = rendered[overlay]
    printed = rbac(container_env(remedyd_container(
        workload(docs)["spec"]["template"]["spec"]), "remedyd"))
    (wanted,) = [d for d in printed if d["kind"] == "ClusterRole"]
    role = only(docs, "ClusterRole", wanted["metadata"]["name"])
    assert {k: v for k, v in role.items() if k != "rules"} == (
        {k: v for k, v in wanted.items() if k != "rules"})
    # The very rules, in the order and shape `remedyd rbac` prints them.
    assert role["rules"] == wanted["rules"]
    # The Lease and state ConfigMap: the Role `remedyd rbac` prints, in remedyd's namespace.
    local = only(docs, "Role", "remedyd-leader-election")
    (printed_local,) = [d for d in printed if d["kind"] == "Role"]
    assert local["rules"] == printed_local["rules"]
    assert grants(local) == LEASE_AND_STATE
    binding = only(docs, "ClusterRoleBinding", "remedyd")
    account = only(docs, "ServiceAccount", "remedyd")
    assert binding["roleRef"]["name"] == "remedyd"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remedyd",
                                    "namespace": account["metadata"]["namespace"]}]


def cluster_scoped(group: str, resource: str) -> bool:
    return (group, resource.partition("/")[0]) in {
        (r.group, r.plural) for r in RESOURCES.values() if not r.namespaced}


def test_sidecar_has_a_role_with_the_namespaced_part_of_remedyd_rbac(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["sidecar"]
    namespace = only(docs, "Namespace")["metadata"]["name"]
    assert not [d for d in docs if d["kind"].startswith("Cluster")]
    env = container_env(remedyd_container(workload(docs)["spec"]["template"]["spec"]),
                        namespace)
    printed = rbac(env)
    wanted = grants(*printed)
    role = only(docs, "Role", "remedyd")
    local = only(docs, "Role", "remedyd-leader-election")
    assert grants(role) == {g for g in wanted - LEASE_AND_STATE if not cluster_scoped(*g[:2])}
    assert grants(local) == LEASE_AND_STATE
    # What a Role cannot grant is only what node events need, and it watches no nodes.
    assert {g[1] for g in wanted if cluster_scoped(*g[:2])} == {"nodes"}
    assert "nodes" not in yaml.safe_load(env["REMEDYD_KUBERNETES__KINDS"])
    binding = only(docs, "RoleBinding", "remedyd")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "remedyd"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remedyd",
                                    "namespace": namespace}]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_lease_and_state_are_granted_in_remedyds_namespace_by_name(
        rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path) -> None:
    docs = rendered[overlay]
    settings = pod_settings(docs, tmp_path)
    role = only(docs, "Role", "remedyd-leader-election")
    named = {(r["resources"][0], n): r["verbs"] for r in role["rules"]
             for n in r.get("resourceNames", [])}
    assert named == {("leases", settings.kubernetes.leader_election.lease_name): ["get", "update"],
                     ("configmaps", settings.kubernetes.state.configmap_name): ["get", "patch"]}
    # create cannot be limited to a name: one rule each, nothing else on them.
    unnamed = [r for r in role["rules"] if "resourceNames" not in r]
    assert sorted(r["resources"][0] for r in unnamed) == ["configmaps", "leases"]
    assert all(r["verbs"] == ["create"] for r in unnamed)
    binding = only(docs, "RoleBinding", "remedyd-leader-election")
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]
    assert binding["subjects"][0]["name"] == "remedyd"


# -- the pod ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_spec_is_hardened(rendered: dict[str, list[dict[str, Any]]], overlay: str) -> None:
    pod = workload(rendered[overlay])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "remedyd"
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert container["resources"]["requests"] and container["resources"]["limits"]
    remedyd = remedyd_container(pod)
    assert remedyd["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"},
                                    "limits": {"cpu": "1", "memory": "512Mi"}}
    # The API token: projected into remedyd's container alone, where in-cluster loading
    # looks for it.
    volumes = {v["name"]: v for v in pod["volumes"]}
    token_volumes = {name for name, v in volumes.items()
                     if any("serviceAccountToken" in s for s in v.get("projected", {})
                            .get("sources", []))}
    for container in pod["containers"]:
        mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
        if container is remedyd:
            (token,) = token_volumes
            assert mounts[token]["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"
        else:
            assert not token_volumes & mounts.keys(), container["name"]


def mounted(pod: dict[str, Any], path: Path) -> dict[str, Any]:
    """The volume remedyd's container has at `path` or a parent of it."""
    container = remedyd_container(pod)
    mount = max((m for m in container["volumeMounts"]
                 if path.is_relative_to(m["mountPath"])), key=lambda m: len(m["mountPath"]))
    return next(v for v in pod["volumes"] if v["name"] == mount["name"]) | {"mount": mount}


def pod_settings(docs: list[dict[str, Any]], tmp_path: Path) -> Settings:
    """remedyd's settings as the pod gets them: its ConfigMap's file, its environment."""
    shape = workload(docs)
    pod = shape["spec"]["template"]["spec"]
    container = remedyd_container(pod)
    args = container["args"]
    config = Path(args[args.index("--config") + 1])
    volume = mounted(pod, config)
    assert not volume["mount"].get("subPath")
    data = only(docs, "ConfigMap", volume["configMap"]["name"])["data"]
    path = tmp_path / config.name
    path.write_text(data[config.name])
    env = container_env(container, shape["metadata"]["namespace"])
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.upper().startswith("REMEDYD_")]:
            patch.delenv(name)
        for name, value in env.items():
            patch.setenv(name, value)
        settings = load_settings(path)
        # Validators that read the environment ran inside this block.
        settings.kubernetes.resolved_node_name()
    return settings


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_pods_configuration_and_rules_load_in_remedyd(
        rendered: dict[str, list[dict[str, Any]]], overlay: str, tmp_path: Path) -> None:
    docs = rendered[overlay]
    shape = workload(docs)
    pod = shape["spec"]["template"]["spec"]
    settings = pod_settings(docs, tmp_path)
    kube = settings.kubernetes
    assert kube.enabled is True and settings.docker.enabled is False
    assert kube.leader_election.enabled is True
    assert kube.mode == ("node" if overlay == "daemonset" else "cluster")
    namespace = shape["metadata"]["namespace"]
    assert kube.namespaces == ([namespace] if overlay == "sidecar" else [])
    assert settings.server.listen.endswith(":9464") and not settings.server.listen.startswith(
        "127.")
    # Where the leader takes the webhooks the Service gave another replica: its pod's IP.
    env = container_env(remedyd_container(pod), namespace)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POD_IP", env["POD_IP"])
        assert kube.leader_election.resolved_advertise_url(settings.server.port) == (
            "http://10.42.0.17:9464")
    # The audit log goes to a writable emptyDir, the rules come from their ConfigMap.
    assert "emptyDir" in mounted(pod, settings.audit.path)
    assert not mounted(pod, settings.audit.path)["mount"].get("readOnly")
    (rules_path,) = settings.rules.paths
    rules_volume = mounted(pod, Path(rules_path))
    files = only(docs, "ConfigMap", rules_volume["configMap"]["name"])["data"]
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for name, text in files.items():
        (rules_dir / name).write_text(text)
    ruleset, errors = compile_rules([rules_dir], ACTIONS)
    assert errors == [] and ruleset.rules
    # Nothing that cannot work in a pod, but the webhook address only the operator knows.
    warnings = [str(w) for w in lint(ruleset, available(settings))]
    assert all("webhook_url is not set" in w for w in warnings), warnings


def test_rules_configmap_holds_the_bundled_rules(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    # kustomize reads no file outside deploy/kubernetes: the copies must be current
    # (.venv/bin/python deploy/kubernetes/sync.py rewrites them).
    rules = next(d for d in rendered["cluster"] if d["kind"] == "ConfigMap"
                 and d["metadata"]["name"].startswith("remedyd-rules"))
    assert sorted(rules["data"]) == POD_RULE_FILES
    for name, text in rules["data"].items():
        assert text == (ROOT / "rules" / name).read_text(), f"{name} differs from rules/"
