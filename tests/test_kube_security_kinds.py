"""The security kinds (Namespaces, NetworkPolicies, RBAC objects, ServiceAccounts): an
operator who names them in `[kubernetes] kinds` gets them listed, watched and cached,
trimmed to what security-drift checks read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from prometheus_client import CollectorRegistry

from daemon.clients.kubernetes import RESOURCES, KubeClient
from daemon.settings import KubeKind, load_settings
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.harness import write_config
from tests.kube.server import KubeApiServer

Obj = dict[str, Any]
SECURITY = ["namespaces", "networkpolicies", "roles", "clusterroles", "rolebindings",
            "clusterrolebindings", "serviceaccounts"]
RBAC = "rbac.authorization.k8s.io/v1"
MANAGED = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]
FAST = Tuning(stall_timeout=1.5, watch_timeout=1, backoff_initial=0.05, backoff_max=0.2)


def objects() -> list[Obj]:
    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}
    subjects = [{"kind": "ServiceAccount", "name": "app", "namespace": "shop"}]
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "shop", "labels": {"pod-security.kubernetes.io/enforce": "baseline"},
            "managedFields": MANAGED}, "spec": {"finalizers": ["kubernetes"]},
         "status": {"phase": "Active"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {
            "name": "deny-all", "namespace": "shop", "managedFields": MANAGED},
         "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}},
        {"apiVersion": RBAC, "kind": "Role", "metadata": {
            "name": "reader", "namespace": "shop", "managedFields": MANAGED}, "rules": [rule]},
        {"apiVersion": RBAC, "kind": "ClusterRole", "metadata": {"name": "aggregate"},
         "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]},
         "rules": [rule]},
        {"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {
            "name": "reader", "namespace": "shop"}, "subjects": subjects,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "reader"}},
        {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "admins"},
         "subjects": subjects, "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                                           "kind": "ClusterRole", "name": "cluster-admin"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {
            "name": "app", "namespace": "shop", "managedFields": MANAGED},
         "automountServiceAccountToken": False, "secrets": [{"name": "app-token"}],
         "imagePullSecrets": [{"name": "registry"}]},
    ]


async def until(check: Callable[[], bool], limit: float = 5.0) -> None:
    """A bounded poll: the source offers no event to wait on."""
    for _ in range(int(limit / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {limit}s")


def test_every_security_kind_is_a_setting_with_a_resource(tmp_path: Path) -> None:
    assert set(get_args(KubeKind)) == set(RESOURCES)
    config = write_config(tmp_path / "remedyd.toml", {"kubernetes": {"kinds": SECURITY}})
    assert load_settings(config).kubernetes.kinds == SECURITY
    # Off unless named: the default stays what the bundled rules need.
    assert not set(SECURITY) & set(load_settings(None).kubernetes.kinds)


async def test_security_kinds_are_listed_watched_and_cached_trimmed(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    for obj in objects():
        kube.bed.apply(obj)
    client = KubeClient(kubeconfig, None, 5.0)
    source = KubernetesSource(client, lambda event: None, Metrics(CollectorRegistry()),
                              SECURITY, tuning=FAST)
    task = asyncio.create_task(source.run())
    try:
        await until(lambda: source.synced)
        cache = source.cache
        for kind in SECURITY:
            resource = RESOURCES[kind]
            # Cluster-wide: one list and one watch per kind, at the API's own path.
            await kube.bed.log.wait_for("GET", resource.path(None) + "$", watch=True)
        namespace = cache.get("Namespace", "", "shop")
        assert namespace is not None and namespace["status"] == {"phase": "Active"}
        assert namespace["metadata"]["labels"] == {
            "pod-security.kubernetes.io/enforce": "baseline"}
        assert "spec" not in namespace and "managedFields" not in namespace["metadata"]
        policy = cache.get("NetworkPolicy", "shop", "deny-all")
        assert policy is not None and "managedFields" not in policy["metadata"]
        assert policy["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        role = cache.get("ClusterRole", "", "aggregate")
        assert role is not None and role["aggregationRule"] == {
            "clusterRoleSelectors": [{"matchLabels": {"agg": "yes"}}]}
        assert cache.get("Role", "shop", "reader")["rules"][0]["verbs"] == ["get", "list"]
        assert cache.get("RoleBinding", "shop", "reader")["roleRef"]["name"] == "reader"
        binding = cache.get("ClusterRoleBinding", "", "admins")
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "app",
                                        "namespace": "shop"}]
        account = cache.get("ServiceAccount", "shop", "app")
        assert {k: v for k, v in account.items() if k not in ("metadata", "apiVersion")} == {
            "kind": "ServiceAccount", "automountServiceAccountToken": False,
            "secrets": [{"name": "app-token"}], "imagePullSecrets": [{"name": "registry"}]}

        # Watched, not only listed: a change and a delete reach the cache.
        granted = objects()[3]
        granted["rules"][0]["verbs"] = ["*"]
        kube.bed.apply(granted)
        await until(lambda: cache.get("ClusterRole", "", "aggregate")["rules"][0][
            "verbs"] == ["*"])
        kube.bed.store.delete(kube.bed.kind(RBAC, "clusterrolebindings"), None, "admins")
        await until(lambda: cache.get("ClusterRoleBinding", "", "admins") is None)
        assert len(kube.bed.log.find("GET", "/clusterroles$", watch=False)) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
