"""The Kubernetes and image checks of rules/security.yaml, on fixtures shaped like
`kubectl get -o json` items: each fixture gives exactly its set of check ids, through the
same evaluator the daemon and `remedyd scan` run (daemon.security.findings.evaluate)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from daemon.actions.params import ACTIONS
from daemon.core.events import JSONValue
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.kube.trim import KINDS, trim
from daemon.security.events import posture_event, view_of
from daemon.security.findings import evaluate
from daemon.security.images import parse_image, registry_allowed
from daemon.security.params import apply_params
from daemon.security.view import kube_view
from daemon.settings import SecurityParam

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "security" / "kube"
RULE_FILES = sorted((ROOT / "rules").glob("security*.yaml"))

# Every fixture and exactly the checks it fails (empty: it passes every check).
EXPECTED: dict[str, set[str]] = {
    # Pods: one hardened (restricted, non-root, pinned image, own ServiceAccount) and
    # one change from it each.
    "pod-hardened": set(),
    "pod-host-network": {"PSS-B-HOST-NAMESPACES"},
    "pod-host-pid-ipc": {"PSS-B-HOST-NAMESPACES"},
    # A privileged container cannot also refuse privilege escalation (the API rejects
    # privileged with allowPrivilegeEscalation: false), so restricted fails too.
    "pod-privileged": {"PSS-B-PRIVILEGED", "PSS-R-PRIVILEGE-ESCALATION"},
    "pod-cap-sys-admin": {"PSS-B-CAPABILITIES"},
    # CAP_CHOWN is CHOWN: in the default set (baseline passes), not NET_BIND_SERVICE.
    "pod-cap-chown": {"PSS-R-CAPABILITIES"},
    "pod-cap-net-bind": set(),
    "pod-cap-no-drop": {"PSS-R-CAPABILITIES"},
    "pod-init-net-admin": {"PSS-B-CAPABILITIES"},
    # kubectl debug's container: no securityContext of its own; it inherits the Pod's
    # runAsNonRoot and seccomp, but drops nothing and may escalate.
    "pod-ephemeral-debug": {"PSS-R-CAPABILITIES", "PSS-R-PRIVILEGE-ESCALATION"},
    "pod-host-path": {"PSS-B-HOSTPATH"},
    "pod-host-port": {"PSS-B-HOST-PORTS"},
    # The readiness probe sent to another host (here the cloud metadata address).
    "pod-probe-host": {"PSS-B-PROBE-HOST"},
    "pod-probe-no-host": set(),
    "pod-apparmor-unconfined": {"PSS-B-APPARMOR"},
    "pod-apparmor-field-unconfined": {"PSS-B-APPARMOR"},
    "pod-apparmor-localhost": set(),
    "pod-selinux-user": {"PSS-B-SELINUX"},
    "pod-selinux-spc-t": {"PSS-B-SELINUX"},
    "pod-selinux-container-t": set(),
    "pod-proc-mount-unmasked": {"PSS-B-PROC-MOUNT"},
    "pod-proc-mount-userns": {"PSS-R-PROC-MOUNT"},
    "pod-seccomp-unconfined": {"PSS-B-SECCOMP"},
    # Pod-level Unconfined is refused even though the only container overrides it.
    "pod-seccomp-pod-unconfined": {"PSS-B-SECCOMP"},
    "pod-seccomp-unset": {"PSS-R-SECCOMP"},
    "pod-seccomp-localhost": set(),
    "pod-sysctl-unsafe": {"PSS-B-SYSCTLS"},
    "pod-sysctl-safe": set(),
    # HostProcess Pods must use the host network (API validation), and Windows Pods are
    # exempt from the Linux-only restricted controls.
    "pod-windows-host-process": {"PSS-B-HOST-PROCESS", "PSS-B-HOST-NAMESPACES"},
    "pod-windows": set(),
    "pod-volume-nfs": {"PSS-R-VOLUME-TYPES"},
    "pod-volume-pvc-csi": set(),
    "pod-ape-unset": {"PSS-R-PRIVILEGE-ESCALATION"},
    "pod-run-as-non-root-unset": {"PSS-R-RUN-AS-NON-ROOT"},
    "pod-run-as-non-root-false": {"PSS-R-RUN-AS-NON-ROOT"},
    "pod-run-as-user-0": {"PSS-R-RUN-AS-NON-ROOT", "PSS-R-RUN-AS-USER"},
    # In a user namespace (hostUsers: false) UID 0 is not the node's root.
    "pod-user-namespace-root": set(),
    "pod-secret-env": {"CIS-K8S-5-4-1"},
    "pod-default-namespace": {"CIS-K8S-5-7-4"},
    "pod-default-service-account": {"CIS-K8S-5-1-6"},
    "pod-image-latest": {"IMG-LATEST"},
    "pod-image-untagged": {"IMG-LATEST"},
    "pod-image-tagged": set(),
    "pod-image-other-registry": set(),  # the registry allow-list is off by default
    "pod-image-default-registry": set(),
    # The PSS documentation's minimal Pod: meets baseline, not restricted.
    "pod-minimal": {"CIS-K8S-5-1-6", "PSS-R-CAPABILITIES", "PSS-R-PRIVILEGE-ESCALATION",
                    "PSS-R-RUN-AS-NON-ROOT", "PSS-R-SECCOMP"},
    # Workloads: the pod template is checked.
    "deployment-hardened": set(),
    "deployment-privileged": {"PSS-B-PRIVILEGED", "PSS-R-PRIVILEGE-ESCALATION"},
    "statefulset-hardened": set(),
    "replicaset-host-port": {"PSS-B-HOST-PORTS"},
    "job-hardened": set(),
    "cronjob-host-pid": {"PSS-B-HOST-NAMESPACES"},
    # kube-proxy in kube-system is exempt; the same template elsewhere is not.
    "daemonset-kube-proxy": set(),
    "daemonset-node-agent": {"PSS-B-HOST-NAMESPACES", "PSS-B-HOSTPATH", "PSS-B-PRIVILEGED",
                             "PSS-R-CAPABILITIES", "PSS-R-PRIVILEGE-ESCALATION",
                             "PSS-R-RUN-AS-NON-ROOT", "PSS-R-SECCOMP"},
    # RBAC.
    "clusterrolebinding-cluster-admin-sa": {"CIS-K8S-5-1-1"},
    "clusterrolebinding-cluster-admin-default": set(),  # the bootstrap system:masters one
    "clusterrolebinding-system": set(),
    "clusterrolebinding-view": set(),
    "rolebinding-cluster-admin": {"CIS-K8S-5-1-1"},
    "clusterrole-secret-reader": {"CIS-K8S-5-1-2"},
    "clusterrole-named-secret": set(),
    "clusterrole-pod-reader": set(),
    "clusterrole-cluster-admin": set(),
    "clusterrole-edit-aggregated": set(),
    "role-wildcard-verbs": {"CIS-K8S-5-1-3"},
    "role-wildcard-resources": {"CIS-K8S-5-1-2", "CIS-K8S-5-1-3"},
    "role-kube-system-wildcard": set(),
    # ServiceAccounts: unset automount means the token is mounted.
    "serviceaccount-default": {"CIS-K8S-5-1-5"},
    "serviceaccount-default-automount-true": {"CIS-K8S-5-1-5"},
    "serviceaccount-default-no-automount": set(),
    "serviceaccount-app": set(),
    "serviceaccount-default-kube-system": set(),
    # Namespaces (their NetworkPolicy count is unknown from the object: -1, no finding).
    "namespace-enforced": set(),
    "namespace-unlabelled": {"CIS-K8S-5-2-1"},
    "namespace-warn-only": {"CIS-K8S-5-2-1"},
    "namespace-kube-system": set(),
    "networkpolicy-default-deny": set(),
    "networkpolicy-allow-web": set(),
}

# What the daemon's cache does not keep of a Pod that a check reads (daemon/kube/trim.py
# keeps volume kinds, probe and hook hosts, host ports, secret-looking env names): none.
TRIM_BLIND: set[str] = set()


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    loaded, errors = load_ruleset(RULE_FILES, ACTIONS)
    assert not errors, errors
    return loaded


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def checks(ruleset: RuleSet, obj: Mapping[str, Any], *,
           view: Mapping[str, JSONValue] | None = None,
           drift: list[dict[str, JSONValue]] | None = None) -> set[str]:
    event = posture_event("kubernetes", obj, origin="list", view=view, drift=drift or [])
    return {finding.check for finding in evaluate(ruleset, [event])}


def with_params(ruleset: RuleSet, **params: SecurityParam) -> RuleSet:
    tuned, errors = apply_params(ruleset, params)
    assert not errors, errors
    return tuned


def kube_check_ids() -> set[str]:
    loaded, errors = load_ruleset([ROOT / "rules" / "security.yaml"], ACTIONS)
    assert not errors, errors
    # The pack's Docker section is tests/test_security_checks_docker.py's.
    return {c.rule.security.id for c in loaded.rules
            if c.rule.security is not None and c.rule.match.kind != "container"}


def test_every_fixture_is_expected_and_every_check_fails_somewhere() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(EXPECTED)
    failing = set().union(*EXPECTED.values())
    # These need a param or a view the object alone does not give: tested below.
    elsewhere = {"IMG-REGISTRY", "IMG-DIGEST", "CIS-K8S-5-3-2", "DRIFT-BASELINE"}
    assert kube_check_ids() - elsewhere == failing


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_gives_exactly_its_checks(ruleset: RuleSet, name: str) -> None:
    assert checks(ruleset, load(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(n for n in EXPECTED if load(n)["kind"] in KINDS))
def test_the_trimmed_object_the_daemon_caches_gives_the_same_findings(
        ruleset: RuleSet, name: str) -> None:
    obj = load(name)
    expected = EXPECTED[name] - TRIM_BLIND if obj["kind"] == "Pod" else EXPECTED[name]
    if obj["kind"] == "ReplicaSet":
        expected = set()  # the cache keeps no ReplicaSet template: nothing to find, wrongly or not
    assert checks(ruleset, trim(obj)) == expected


def test_a_manifest_document_gives_the_findings_of_the_live_object(ruleset: RuleSet) -> None:
    live = load("deployment-privileged")
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"template": live["spec"]["template"]}}
    assert checks(ruleset, manifest) == EXPECTED["deployment-privileged"]


def test_namespace_network_policies_counted_by_the_source(ruleset: RuleSet) -> None:
    namespace = load("namespace-enforced")
    view = kube_view(namespace)
    assert view["networkPolicies"] == -1  # unknown from the object: no finding
    assert checks(ruleset, namespace, view={**view, "networkPolicies": 0}) == {"CIS-K8S-5-3-2"}
    assert checks(ruleset, namespace, view={**view, "networkPolicies": 2}) == set()
    system = load("namespace-kube-system")
    assert checks(ruleset, system, view={**kube_view(system), "networkPolicies": 0}) == set()


def test_drift_from_the_baseline_is_a_finding_of_its_own(ruleset: RuleSet) -> None:
    drift: list[dict[str, JSONValue]] = [
        {"field": "containers[web].privileged", "before": False, "after": True}]
    deployment = load("deployment-hardened")
    assert checks(ruleset, deployment, drift=drift) == {"DRIFT-BASELINE"}
    binding = load("clusterrolebinding-cluster-admin-sa")
    assert checks(ruleset, binding, drift=[
        {"field": "roleRef.name", "before": "view", "after": "cluster-admin"}]) == {
        "DRIFT-BASELINE", "CIS-K8S-5-1-1"}


def test_registry_allow_list(ruleset: RuleSet) -> None:
    tuned = with_params(ruleset, allowed_registries=["registry.example:5000/shop"])
    assert checks(tuned, load("pod-hardened")) == set()
    assert checks(tuned, load("pod-image-other-registry")) == {"IMG-REGISTRY"}
    assert checks(tuned, load("pod-image-default-registry")) == {"IMG-REGISTRY"}
    default = with_params(ruleset, allowed_registries=[""])
    assert checks(default, load("pod-image-default-registry")) == set()
    assert checks(default, load("pod-hardened")) == {"IMG-REGISTRY"}


@pytest.mark.parametrize("reference", [
    "registry.example:5000/shop/web:1.4", "registry.example:5000/shopping/web:1",
    "registry.example:5000/shop", "registry.example/shop/web", "localhost/web:1",
    "library/redis:7", "redis", "redis@sha256:" + "a" * 64, "other.example:5000/web:2"])
@pytest.mark.parametrize("allowed", [
    ["registry.example:5000"], ["registry.example:5000/shop"], [""],
    ["other.example:5000", ""], ["localhost"], ["registry.example"]])
def test_the_registry_check_agrees_with_the_image_parser(
        ruleset: RuleSet, reference: str, allowed: list[str]) -> None:
    pod = load("pod-hardened")
    pod["spec"]["containers"][0]["image"] = reference
    found = "IMG-REGISTRY" in checks(with_params(ruleset, allowed_registries=allowed), pod)
    assert found == (not registry_allowed(parse_image(reference), allowed))


def test_digest_required_where_the_policy_asks(ruleset: RuleSet) -> None:
    tuned = with_params(ruleset, require_digest=True)
    assert checks(tuned, load("pod-hardened")) == set()
    assert checks(tuned, load("pod-image-tagged")) == {"IMG-DIGEST"}
    assert checks(tuned, load("pod-image-latest")) == {"IMG-LATEST", "IMG-DIGEST"}


def test_operator_allow_lists_lift_a_finding(ruleset: RuleSet) -> None:
    tuned = with_params(ruleset, allowed_host_ports=["8080"],
                        allowed_cluster_admin_bindings=["cluster-admin", "deployer-admin"],
                        exempt_namespaces=["kube-system", "monitoring"])
    assert checks(tuned, load("pod-host-port")) == set()
    assert checks(tuned, load("clusterrolebinding-cluster-admin-sa")) == set()
    assert checks(tuned, load("daemonset-node-agent")) == set()


# --- the view ------------------------------------------------------------------------


def shape(value: Any) -> Any:
    """The keys of a view, recursively (lists by their first item; labels are free-form)."""
    if isinstance(value, dict):
        return {k: None if k == "labels" else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value and isinstance(value[0], dict) else []
    return None


def test_every_key_is_present_whatever_the_manifest_omits() -> None:
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
            "spec": {"containers": [{"name": "app", "image": "app"}]}}
    assert shape(kube_view(bare)) == shape(kube_view(load("pod-hardened")))
    for kind in ("Namespace", "Role", "ClusterRoleBinding", "ServiceAccount", "NetworkPolicy"):
        full = next(n for n in EXPECTED if kube_view(load(n)).get("workload") is False
                    and load(n)["kind"] == kind)
        assert set(kube_view({"kind": kind, "metadata": {"name": "x"}})) == set(
            kube_view(load(full))), kind


def test_container_settings_are_the_effective_ones() -> None:
    pod = load("pod-hardened")
    pod["spec"]["initContainers"] = [{"name": "init", "image": "init:1", "securityContext": {
        "runAsUser": 0, "runAsNonRoot": False, "capabilities": {"add": ["cap_net_raw"]}}}]
    view: Any = kube_view(pod)
    web, init = view["containers"]
    assert (web["type"], web["runAsNonRoot"], web["runAsUser"], web["seccomp"]) == (
        "container", True, 10001, "RuntimeDefault")  # inherited from the Pod
    assert (init["type"], init["runAsNonRoot"], init["runAsUser"], init["capAdd"]) == (
        "initContainer", False, 0, ["NET_RAW"])  # its own, over the Pod's
    assert view["pod"]["runAsUser"] == 10001


def test_the_view_names_secret_env_vars_but_never_holds_their_values() -> None:
    view: Any = kube_view(load("pod-secret-env"))
    assert view["containers"][0]["secretEnv"] == ["api_token"]
    assert "tok-3f9a0c" not in json.dumps(view)


def test_the_view_holds_nothing_volatile() -> None:
    deployment = load("deployment-hardened")
    before = view_of("kubernetes", deployment)
    deployment["metadata"].update(resourceVersion="999999", generation=9,
                                  creationTimestamp="2027-01-01T00:00:00Z")
    deployment["spec"]["replicas"] = 30
    deployment["status"] = {"replicas": 30, "readyReplicas": 12}
    assert view_of("kubernetes", deployment) == before
    pod = load("pod-hardened")
    before = kube_view(pod)
    pod["status"]["phase"] = "Failed"
    pod["spec"]["nodeName"] = "worker-9"
    assert kube_view(pod) == before


def test_a_cronjob_is_read_through_its_job_template() -> None:
    view: Any = kube_view(load("cronjob-host-pid"))
    assert view["workload"] is True
    assert view["pod"]["hostPID"] is True
    assert [i["reference"] for i in view["images"]] == [
        load("pod-hardened")["spec"]["containers"][0]["image"]]


def test_a_pod_view_costs_well_under_100_microseconds() -> None:
    pod = load("pod-hardened")
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(1000):
            kube_view(pod)
        runs.append((time.perf_counter() - start) / 1000)
    assert statistics.median(runs) < 100e-6, runs


def test_a_workload_carries_its_pods_labels_which_network_policies_select() -> None:
    deployment = load("deployment-hardened")
    deployment["metadata"]["labels"] = {"app": "web", "release": "2026.11"}
    deployment["spec"]["template"]["metadata"]["labels"] = {"app": "web", "tier": "front"}
    assert kube_view(deployment)["labels"] == {"app": "web", "tier": "front"}
