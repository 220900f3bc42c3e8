#!/usr/bin/env python3
"""Regenerates what deploy/kubernetes copies from the repository, since kustomize reads
no file outside its own directory: base/rules/ from rules/*.yaml (but the Docker rules: a
pod has no Docker engine; a new file must also be listed in base/kustomization.yaml), the
ClusterRole `remedyd rbac` prints for the bundled rules, the Role it prints for remedyd's
own namespace (its Lease and state ConfigMap, by name: base/leader-election-role.yaml),
and the sidecar's Role (the namespaced part of the ClusterRole for the sidecar's kinds).
tests/test_deploy_kubernetes.py fails while they differ.

    .venv/bin/python deploy/kubernetes/sync.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RULES = ROOT / "rules"
# Docker rules need a Docker engine; probe rules need [[probes]] and KPI rules
# [prometheus] url, which base/remedyd.toml leaves to the operator.
NOT_IN_A_POD = {"docker.yaml", "probes.yaml", "kpi.yaml"}
CONFIG = HERE / "base" / "remedyd.toml"
CLUSTER_ROLE = HERE / "components" / "cluster-role" / "clusterrole.yaml"
SIDECAR_ROLE = HERE / "overlays" / "sidecar" / "role.yaml"
LOCAL_ROLE = HERE / "base" / "leader-election-role.yaml"
# The sidecar watches these (its Deployment sets REMEDYD_KUBERNETES__KINDS to them).
SIDECAR_KINDS = '["pods", "deployments", "replicasets", "events"]'
CLUSTER_HEADER = """\
# Written by deploy/kubernetes/sync.py: the ClusterRole `remedyd rbac` prints for the
# bundled rules (rules/) under base/remedyd.toml.
"""
LOCAL_HEADER = """\
# Written by deploy/kubernetes/sync.py: the Role `remedyd rbac` prints for remedyd's own
# namespace: leader election's Lease and the shared state's ConfigMap, read and written
# by name (create cannot be limited to a name), as client-go controllers keep theirs.
"""
SIDECAR_HEADER = """\
# Written by deploy/kubernetes/sync.py: the namespaced rules `remedyd rbac` prints for the
# bundled rules and the sidecar's kinds, but the Lease and state ConfigMap (base's
# remedyd-leader-election Role). Cluster-scoped ones (nodes: the node rules' cordon)
# cannot be granted by a Role, and no node event reaches a sidecar that watches no nodes.
"""


def rbac(env: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The documents `remedyd rbac` prints for the bundled rules under base/remedyd.toml."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("REMEDYD_")}
    done = subprocess.run([sys.executable, "-m", "daemon", "rbac", "--config", str(CONFIG),
                           str(RULES)], capture_output=True, text=True, check=False,
                          cwd=ROOT, env={**clean, **(env or {})})
    if done.returncode != 0:
        raise SystemExit(f"remedyd rbac failed:\n{done.stderr}")
    return list(yaml.safe_load_all(done.stdout))


def cluster_scoped(rule: dict[str, Any]) -> bool:
    sys.path.insert(0, str(ROOT))
    from daemon.kube.resources import RESOURCES, WRITE_RESOURCES

    scoped = {(r.group, r.plural) for r in (*RESOURCES.values(), *WRITE_RESOURCES.values())
              if not r.namespaced}
    return (rule["apiGroups"][0], rule["resources"][0].partition("/")[0]) in scoped


def cluster_role(printed: Iterable[dict[str, Any]]) -> dict[str, Any]:
    (role,) = [doc for doc in printed if doc["kind"] == "ClusterRole"]
    return role


def local_role(printed: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The namespaced Role, its namespace left to kustomize's."""
    (role,) = [doc for doc in printed if doc["kind"] == "Role"]
    metadata = {k: v for k, v in role["metadata"].items() if k != "namespace"}
    return {**role, "metadata": metadata}


def sidecar_role(printed: Iterable[dict[str, Any]]) -> dict[str, Any]:
    role = cluster_role(printed)
    return {**role, "kind": "Role",
            "rules": [rule for rule in role["rules"] if not cluster_scoped(rule)]}


def role_binding(role: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": role["apiVersion"], "kind": "RoleBinding",
            "metadata": dict(role["metadata"]),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": role["metadata"]["name"]},
            "subjects": [{"kind": "ServiceAccount", "name": "remedyd"}]}


def render(header: str, *documents: dict[str, Any]) -> str:
    return header + "---\n".join(yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
                                 for doc in documents)


def pod_rules() -> list[Path]:
    return [path for path in sorted(RULES.glob("*.yaml")) if path.name not in NOT_IN_A_POD]


def main() -> int:
    copies = HERE / "base" / "rules"
    for stale in copies.glob("*.yaml"):
        stale.unlink()
    for rule_file in pod_rules():
        shutil.copyfile(rule_file, copies / rule_file.name)
    printed = rbac()
    CLUSTER_ROLE.write_text(render(CLUSTER_HEADER, cluster_role(printed)))
    local = local_role(printed)
    LOCAL_ROLE.write_text(render(LOCAL_HEADER, local, role_binding(local)))
    role = sidecar_role(rbac({"REMEDYD_KUBERNETES__KINDS": SIDECAR_KINDS}))
    SIDECAR_ROLE.write_text(render(SIDECAR_HEADER, role, role_binding(role)))
    print(f"wrote {copies.relative_to(ROOT)}/, {CLUSTER_ROLE.relative_to(ROOT)}, "
          f"{LOCAL_ROLE.relative_to(ROOT)}, {SIDECAR_ROLE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
