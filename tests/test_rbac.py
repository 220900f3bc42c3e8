"""`remedyd rbac` and the RBAC lines of `remedyd check`: exactly what the loaded rules need
from the API server, as a ClusterRole kubectl and the API server accept; and the check the
`kube` fixture runs after every test, that remedyd asked for nothing that role omits."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from daemon import __version__
from daemon.actions.params import ACTIONS, ActionInfo, Permission
from daemon.clients.kubernetes import RESOURCES, KubeClient
from daemon.kube import rbac
from tests.harness import write_config
from tests.kube.plugin import KubectlRunner, undeclared_requests
from tests.kube.requestinfo import resolve
from tests.kube.server import KubeApiServer

ROOT = Path(__file__).resolve().parents[1]
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
# A rollback and a cordon, both starting from pod events: each acts on another object.
ROLLBACK = """
  - name: rollback-crashloop
    source: kubernetes
    when: event.kind == "pod" && event.action == "crashloop"
    actions:
      - kubernetes.rollback: {}
"""
CORDON = """
  - name: cordon-oom
    source: kubernetes
    when: event.kind == "pod" && event.action == "oom_killed"
    actions:
      - notify.webhook: {url: "http://127.0.0.1:9/hook"}
    budget: {max: 1, per: 1h, then: [kubernetes.cordon: {}]}
"""
KUBE_RULES = "rules:" + ROLLBACK + CORDON
KINDS = ["pods", "deployments", "replicasets", "networkpolicies"]
# Nodes are not watched here, only cordoned.
EXPECTED_RULES = [
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": ["apps"], "resources": ["deployments"],
     "verbs": ["get", "list", "patch", "watch"]},
    {"apiGroups": ["apps"], "resources": ["replicasets"], "verbs": ["list", "watch"]},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
     "verbs": ["list", "watch"]},
]
# In remedyd's namespace: leader_election.enabled = "auto" is on where the role is applied
# (in a cluster), and [kubernetes.state] store = "configmap" is the default.
EXPECTED_LOCAL_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
     "resourceNames": ["remedyd"], "verbs": ["get", "update"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["remedyd-state"],
     "verbs": ["get", "patch"]},
]
# Parameters for actions that take no empty ones.
SAMPLE_PARAMS: dict[str, dict[str, Any]] = {
    "kubernetes.scale": {"replicas": 1}, "kubernetes.annotate": {"set": {"a": "b"}},
    "kubernetes.label": {"set": {"a": "b"}}}


def remedyd(tmp_path: Path, command: str, rules: str | None, *args: str,
            kinds: list[str] | None = None, security: bool | str = False
            ) -> subprocess.CompletedProcess[str]:
    paths = []
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(rules)
        paths.append(str(tmp_path / "rules.yaml"))
    groups: dict[str, dict[str, Any]] = {"docker": {"enabled": False},
                                         "kubernetes": {"enabled": False, "kinds": kinds},
                                         "security": {"enabled": security}}
    config = write_config(tmp_path / "remedyd.toml", groups)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    return subprocess.run([sys.executable, "-m", "daemon", command, "--config", str(config),
                           *args, *paths], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env=env)


def every_kube_action() -> str:
    """One rule per Kubernetes action and kind of event it can start from."""
    lines = ["rules:"]
    for name, info in ACTIONS.items():
        for target in info.applies_to if name.startswith("kubernetes.") else ():
            kind = target.partition("/")[2]
            lines += [f"  - name: {name.partition('.')[2].replace('_', '-')}-{kind}",
                      "    source: kubernetes", f"    match: {{kind: {kind}}}",
                      f"    actions: [{name}: {SAMPLE_PARAMS.get(name, {})}]"]
    return "\n".join(lines) + "\n"


# -- what remedyd rbac prints ------------------------------------------------------------

def test_rbac_grants_the_watched_kinds_and_what_the_rules_actions_need(tmp_path: Path) -> None:
    done = remedyd(tmp_path, "rbac", KUBE_RULES, "--service-account", "monitoring/remedyd",
                   kinds=KINDS)
    assert done.returncode == 0, done.stderr
    role, binding, local, local_binding = yaml.safe_load_all(done.stdout)
    assert local == {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                     "metadata": {"name": "remedyd-leader-election", "namespace": "monitoring",
                                  "labels": {"app.kubernetes.io/name": "remedyd"}},
                     "rules": EXPECTED_LOCAL_RULES}
    assert local_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                        "kind": "Role", "name": "remedyd-leader-election"}
    assert local_binding["subjects"] == [{"kind": "ServiceAccount", "name": "remedyd",
                                          "namespace": "monitoring"}]
    assert role == {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": "remedyd",
                                 "labels": {"app.kubernetes.io/name": "remedyd"}},
                    "rules": EXPECTED_RULES}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": "remedyd"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "remedyd",
                                    "namespace": "monitoring"}]
    # The same rules in another order print the same bytes.
    again = remedyd(tmp_path, "rbac", "rules:" + CORDON + ROLLBACK, "--service-account",
                    "monitoring/remedyd", kinds=KINDS)
    assert again.stdout == done.stdout


def test_rbac_grants_list_and_watch_on_the_security_kinds_while_security_is_on(
        tmp_path: Path) -> None:
    security = {("", "namespaces"), ("networking.k8s.io", "networkpolicies"),
                ("", "serviceaccounts")} | {
        ("rbac.authorization.k8s.io", kind) for kind in (
            "roles", "clusterroles", "rolebindings", "clusterrolebindings")}
    named = {("networking.k8s.io", "networkpolicies")}  # in KINDS: granted anyway
    for enabled, granted in (("auto", security), (True, security), (False, named)):
        done = remedyd(tmp_path, "rbac", KUBE_RULES, kinds=KINDS, security=enabled)
        assert done.returncode == 0, done.stderr
        role = next(yaml.safe_load_all(done.stdout))
        watching = {(rule["apiGroups"][0], rule["resources"][0]) for rule in role["rules"]
                    if rule["verbs"] == ["list", "watch"]}
        assert watching & security == granted, enabled
        assert ("namespaces" in done.stdout.split("\n", 2)[0]) == (granted == security)


@dataclasses.dataclass(frozen=True)
class Marker:
    """An action like kubernetes.annotate: it acts on the event's subject, whatever it is."""

    acts_on: str = ""
    permissions: tuple[Permission, ...] = (
        Permission("patch", "", "pods"), Permission("patch", "apps", "deployments"),
        Permission("patch", "", "nodes"))


@pytest.mark.parametrize(("action", "targets", "granted"), [
    (Marker(), ["kubernetes/pod"], ["patch pods"]),
    (Marker(), ["kubernetes/pod", "kubernetes/deployment"],
     ["patch pods", "patch deployments.apps"]),
    (Marker(), ["kubernetes/*"], ["patch nodes", "patch pods", "patch deployments.apps"]),
    # One that acts on a resolved target needs what it declares, whatever the event.
    (Marker(acts_on="kubernetes/node"), ["kubernetes/pod"],
     ["patch nodes", "patch pods", "patch deployments.apps"]),
])
def test_an_action_on_the_subject_is_granted_only_the_kinds_the_rule_is_about(
        action: Marker, targets: list[str], granted: list[str]) -> None:
    assert [str(rule) for rule in rbac.required([], [(action, targets)])] == granted


def test_rbac_prints_nothing_for_broken_rules_and_names_the_problem(tmp_path: Path) -> None:
    broken = KUBE_RULES.replace("kubernetes.rollback: {}", "kubernetes.rollback: {to: 1}")
    done = remedyd(tmp_path, "rbac", broken)
    assert done.returncode == 1 and done.stdout == ""
    assert "rule 'rollback-crashloop'" in done.stderr and "to" in done.stderr
    bad_account = remedyd(tmp_path, "rbac", KUBE_RULES, "--service-account", "remedyd")
    assert bad_account.returncode == 2 and "NAMESPACE/NAME" in bad_account.stderr


async def test_rbac_output_is_accepted_by_kubectl_and_the_api_server(
        kube: KubeApiServer, kubectl: KubectlRunner, tmp_path: Path) -> None:
    done = remedyd(tmp_path, "rbac", every_kube_action(), "--service-account", "ops/remedyd",
                   kinds=list(RESOURCES))
    assert done.returncode == 0, done.stderr
    role, binding, local, _ = yaml.safe_load_all(done.stdout)
    assert local["metadata"]["namespace"] == "ops" and local["rules"] == EXPECTED_LOCAL_RULES
    # Every action and every kind, and the namespace's Lease and ConfigMap: the very role
    # the suite's request check holds remedyd to.
    printed = {(group, resource, verb) for doc in (role, local) for rule in doc["rules"]
               for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    assert printed == {(rule.group, rule.resource, verb) for rule in rbac.full(ACTIONS)
                       for verb in rule.verbs}
    # Client-side dry run: needs discovery to map the kinds, and the server's OpenAPI to
    # validate, which the test bed does not serve.
    checked = await kubectl("create", "--dry-run=client", "--validate=false", "-f", "-",
                            "-o", "yaml", stdin=done.stdout)
    assert checked.returncode == 0, checked.stderr
    items = list(yaml.safe_load_all(checked.stdout))
    assert [item["kind"] for item in items] == ["ClusterRole", "ClusterRoleBinding", "Role",
                                                "RoleBinding"]
    assert items[0]["rules"] == role["rules"]
    async with aiohttp.ClientSession(kube.url) as http:
        for doc, plural in ((role, "clusterroles"), (binding, "clusterrolebindings")):
            async with http.post(f"{RBAC_API}/{plural}", json=doc) as resp:
                assert resp.status == 201, await resp.text()
        # The server does check roles: the same rule without its verbs is refused.
        role["metadata"]["name"] = "broken"
        role["rules"][0]["verbs"] = []
        async with http.post(f"{RBAC_API}/clusterroles", json=role) as resp:
            assert resp.status == 422
            assert (await resp.json())["message"] == (
                'ClusterRole.rbac.authorization.k8s.io "broken" is invalid: rules[0].verbs: '
                "Required value: verbs must contain at least one value")


# -- what remedyd check says -------------------------------------------------------------

def test_check_names_the_verbs_and_resources_the_rules_need(tmp_path: Path) -> None:
    done = remedyd(tmp_path, "check", KUBE_RULES, kinds=KINDS)
    assert done.returncode == 0, done.stdout
    needs = [line for line in done.stdout.splitlines() if line.startswith("kubernetes:")]
    assert needs == ["kubernetes: the rules need: "
                     "get,patch nodes; list,watch pods; "
                     "get,list,patch,watch deployments.apps; list,watch replicasets.apps; "
                     "list,watch networkpolicies.networking.k8s.io",
                     "kubernetes: in remedyd's namespace: create leases.coordination.k8s.io; "
                     "get,update leases.coordination.k8s.io remedyd; create configmaps; "
                     "get,patch configmaps remedyd-state"]
    docker_only = remedyd(tmp_path, "check", """
rules:
  - name: restart
    source: docker
    when: event.action == "die"
    actions: [docker.restart: {}]
""")
    assert docker_only.returncode == 0, docker_only.stdout
    assert not [line for line in docker_only.stdout.splitlines()
                if line.startswith("kubernetes")]


# -- what RBAC sees of a request ---------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "query", "seen"), [
    ("GET", "/api/v1/pods", {}, "list pods"),
    ("GET", "/api/v1/pods", {"watch": "true"}, "watch pods"),
    ("GET", "/api/v1/pods", {"watch": "True"}, "watch pods"),
    ("GET", "/api/v1/pods", {"watch": "0"}, "list pods"),
    ("GET", "/api/v1/pods", {"watch": "FALSE"}, "list pods"),
    ("GET", "/api/v1/watch/namespaces/shop/pods", {}, "watch pods in shop"),
    ("GET", "/api/v1/namespaces/shop/pods/web-1", {}, "get pods in shop"),
    ("GET", "/api/v1/namespaces/shop/pods/web-1/log", {}, "get pods/log in shop"),
    ("POST", "/api/v1/namespaces/shop/pods/web-1/eviction", {},
     "create pods/eviction in shop"),
    ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web", {},
     "patch deployments.apps in shop"),
    ("PATCH", "/apis/apps/v1/namespaces/shop/deployments/web/scale", {},
     "patch deployments.apps/scale in shop"),
    ("PUT", "/apis/apps/v1/namespaces/shop/deployments/web/status", {},
     "update deployments.apps/status in shop"),
    ("DELETE", "/api/v1/namespaces/shop/pods/web-1", {}, "delete pods in shop"),
    ("DELETE", "/api/v1/namespaces/shop/pods", {}, "deletecollection pods in shop"),
    ("GET", "/api/v1/namespaces", {}, "list namespaces"),
    ("GET", "/api/v1/namespaces/shop", {}, "get namespaces in shop"),
    ("PUT", "/api/v1/namespaces/shop/finalize", {}, "update namespaces/finalize in shop"),
    ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", {"watch": "1"},
     "watch clusterroles.rbac.authorization.k8s.io"),
    ("GET", "/api/v1/nodes/n1/proxy/metrics", {}, "get nodes/proxy"),
    ("GET", "/api/v1/proxy/nodes/n1/metrics", {}, "proxy nodes"),
    ("GET", "/apis/apps/v1", {}, "get /apis/apps/v1 (non-resource URL)"),
    ("GET", "/api", {}, "get /api (non-resource URL)"),
    ("GET", "/version", {}, "get /version (non-resource URL)"),
])
def test_requests_map_to_what_rbac_checks(method: str, path: str, query: dict[str, str],
                                          seen: str) -> None:
    assert str(resolve(method, path, query)) == seen


def test_a_field_selector_on_the_name_names_the_object() -> None:
    info = resolve("GET", "/api/v1/namespaces/shop/pods", {
        "fieldSelector": "metadata.name=web-1", "watch": "true"})
    assert (info.verb, info.name) == ("watch", "web-1")
    assert resolve("GET", "/api/v1/pods", {"fieldSelector": "metadata.name!=x"}).name == ""


# -- the suite-wide check ----------------------------------------------------------------

async def test_the_kube_fixture_names_every_request_remedyd_has_no_grant_for(
        kube: KubeApiServer, kubeconfig: Path, kubectl: KubectlRunner) -> None:
    kube.bed.add_node("n1")
    kube.bed.apply({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "web-1", "namespace": "default"}, "spec": {"containers": [
            {"name": "app", "image": "web:1"}], "nodeName": "n1"}})
    client = KubeClient(kubeconfig, None, 5.0)
    try:
        await client.list(RESOURCES["pods"], None, None)
        await client.create(RESOURCES["pods"], "default", {
            "apiVersion": "policy/v1", "kind": "Eviction",
            "metadata": {"name": "web-1", "namespace": "default"}},
            name="web-1", subresource="eviction", dry_run=True)
        await client.delete(RESOURCES["nodes"], None, "n1", dry_run=True)
    finally:
        await client.close()
    assert (await kubectl("get", "nodes", "-o", "name")).returncode == 0
    entries = kube.bed.log.entries
    assert {e.user_agent for e in entries if "/pods" in e.path} == {f"remedyd/{__version__}"}
    # No action deletes nodes; kubectl's own requests are not remedyd's.
    assert undeclared_requests(entries) == [
        "delete nodes (DELETE /api/v1/nodes/n1)"]
    # An action that stops declaring what it does is caught: here the eviction.
    info = ACTIONS["kubernetes.evict"]
    shrunk: dict[str, ActionInfo] = {**ACTIONS, "kubernetes.evict": dataclasses.replace(
        info, permissions=tuple(p for p in info.permissions if p.verb != "create"))}
    assert undeclared_requests(entries, shrunk) == [
        "create pods/eviction in default (POST /api/v1/namespaces/default/pods/web-1/eviction)",
        "delete nodes (DELETE /api/v1/nodes/n1)"]
    kube.bed.log.clear()  # what this test made on purpose is not a finding of the fixture
