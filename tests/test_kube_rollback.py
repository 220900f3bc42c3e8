"""kubernetes.rollback against the test bed: kubectl's very PATCH, one rollback per bad
revision (three crash-looping pods, late decisions, a restart of remedyd), never back onto
a template it rolled away from, and kubectl's refusals."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry

from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.kube.catalog import kube_actions
from daemon.actions.kube.guards import CacheSyncedGuard
from daemon.actions.kube.revisions import go_json
from daemon.audit import AuditLog
from daemon.clients.kubernetes import KubeClient
from daemon.core.decisions import Decision
from daemon.engine.evaluator import Evaluator
from daemon.kube.cache import Cache
from daemon.sources.kubernetes import KubernetesSource, Tuning
from daemon.telemetry.metrics import Metrics
from tests.harness import DaemonProcess
from tests.kube.controller import HASH, REVISION
from tests.kube.faults import Request
from tests.kube.plugin import KubectlRunner
from tests.kube.server import KubeApiServer
from tests.rulekit import ruleset
from tests.test_kube_testbed import UNDO_FIXTURE, rolled_out_twice

Obj = dict[str, Any]
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/default/deployments/web"
RULE = """
rules:
  - name: rollback-crashloop
    source: kubernetes
    match: {kind: pod}
    when: event.action == "crashloop"
    cooldown: 0s
    actions:
      - kubernetes.rollback: PARAMS
"""
FAST = Tuning(stall_timeout=5.0, backoff_initial=0.05, backoff_max=0.2)


def deployment(image: str, replicas: int = 3, paused: bool = False) -> Obj:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": "uid-web",
                         "labels": {"app": "web"}, "annotations": {"team": "payments"}},
            "spec": {"replicas": replicas, "paused": paused,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


def pods(kube: KubeApiServer, image: str | None = None) -> list[Obj]:
    return [p for p in kube.bed.store.list(kube.bed.kind("v1", "pods"))
            if image is None or p["spec"]["containers"][0]["image"] == image]


def replicasets(kube: KubeApiServer) -> dict[str, Obj]:
    """The bed's ReplicaSets of `web` by revision."""
    return {r["metadata"]["annotations"][REVISION]: r
            for r in kube.bed.store.list(kube.bed.kind("apps/v1", "replicasets"))}


def patches(kube: KubeApiServer) -> list[Request]:
    return kube.bed.log.find("PATCH", DEPLOYMENT_PATH + "$")


async def until(check: Callable[[], Any], what: str, limit: float = 10.0) -> Any:
    """A bounded poll (the source and the executor offer nothing to wait on)."""
    for _ in range(int(limit / 0.02)):
        result = check()
        if result:
            return result
        await asyncio.sleep(0.02)
    raise AssertionError(f"not within {limit}s: {what}")


class Rig:
    """The Kubernetes source feeding an Evaluator feeding the real Executor, with the kube
    actions and the cache-synced guard as the daemon wires them. With `hold`, decisions are
    aimed (as submit() does on arrival) and kept for the test to submit."""

    def __init__(self, kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
                 params: str = "{}", hold: bool = False, **settings: Any) -> None:
        self.kube = kube
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.client = KubeClient(kubeconfig, None, 5.0)
        self.cache = Cache()
        self.audit = AuditLog(tmp_path / "audit.jsonl")
        self.actions = {a.name: a for a in kube_actions(self.client, self.cache)}
        self.executor = Executor(self.actions, self.audit, Metrics(CollectorRegistry()),
                                 ExecutorSettings(retry_delay=0.05, **settings))
        self.executor.insert_guard(CacheSyncedGuard(self.cache, frozenset(
            {"Pod", "ReplicaSet", "Deployment"})), before="target")
        self.evaluator = Evaluator(ruleset(tmp_path, RULE.replace("PARAMS", params)))
        self.source = KubernetesSource(self.client, self._emit, Metrics(CollectorRegistry()),
                                       ["pods", "replicasets", "deployments"], tuning=FAST,
                                       cache=self.cache)
        self.hold = hold
        self.held: list[Decision] = []
        self.submitted = 0

    def _emit(self, event: Any) -> None:
        for decision in self.evaluator.evaluate(event, asyncio.get_running_loop().time()):
            if self.hold:
                self.held.append(self.executor.retarget(decision))
            else:
                self.submit(decision)

    def submit(self, decision: Decision) -> None:
        self.submitted += 1
        self.executor.submit(decision)

    def records(self, kind: str) -> list[Obj]:
        return [r for r in self.audit.iter_backwards() if r.get("kind") == kind][::-1]

    async def settled(self, decisions: int) -> list[Obj]:
        """The decision records, once `decisions` were judged and nothing is in flight."""
        await until(lambda: len(self.records("decision")) + self.coalesced() >= decisions
                    and not self.executor.in_flight, f"{decisions} decision(s) handled")
        return self.records("decision")

    def coalesced(self) -> int:
        return sum(r["count"] for r in self.records("coalesced"))


@pytest_asyncio.fixture
async def rig_factory(kube: KubeApiServer, kubeconfig: Path, tmp_path: Path
                      ) -> AsyncIterator[Callable[..., Any]]:
    rigs: list[tuple[Rig, asyncio.Task[None]]] = []

    async def start(**kwargs: Any) -> Rig:
        rig = Rig(kube, kubeconfig, tmp_path / f"rig{len(rigs)}", **kwargs)
        rig.audit.open()
        task = asyncio.create_task(rig.source.run())
        rigs.append((rig, task))
        await until(lambda: rig.source.synced, "the source to list")
        await kube.bed.log.wait_for("GET", "/deployments$", watch=True)
        return rig

    yield start
    for rig, task in rigs:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rig.executor.drain(1.0)
        await rig.client.close()
        rig.audit.close()


async def bad_rollout(kube: KubeApiServer, rig_factory: Callable[..., Any], replicas: int = 3,
                      **rig: Any) -> Rig:
    """Revision 1 (example/web:1.0) runs; remedyd starts; revision 2 (2.0) rolls out and
    crash-loops in every pod."""
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas))
    started = await rig_factory(**rig)
    kube.bed.log.clear()
    kube.bed.controller.crash_images.add("example/web:2.0")
    kube.bed.apply(deployment("example/web:2.0", replicas))
    return cast(Rig, started)


# ===================================================================== kubectl's PATCH


async def test_the_patch_is_kubectls_byte_for_byte(kube: KubeApiServer, kubectl: KubectlRunner,
                                                   rig_factory: Callable[..., Any]) -> None:
    await rolled_out_twice(kube, kubectl)  # the objects the fixture was captured on
    kube.bed.log.clear()
    # Server-side dry run: kubectl sends its PATCH (with dryRun=All) and nothing changes.
    undo = await kubectl("rollout", "undo", "deployment/web", "--dry-run=server")
    assert undo.returncode == 0, undo.stderr
    (theirs,) = patches(kube)
    assert theirs.query == {"dryRun": "All"}
    kube.bed.controller.crash_images.add("example/web:2.0")
    rig = await rig_factory()
    kube.bed.log.clear()
    for pod in pods(kube):  # the revision-2 pods start crash-looping
        kube.bed.controller.crash_loop("default", pod["metadata"]["name"])
    await kube.bed.log.wait_for("PATCH", DEPLOYMENT_PATH + "$")
    await rig.settled(1)
    (ours,) = patches(kube)
    assert (ours.method, ours.path, ours.content_type, ours.query) == (
        "PATCH", DEPLOYMENT_PATH, "application/json-patch+json", {})
    fixture = json.loads(UNDO_FIXTURE.read_text())
    assert (ours.method, ours.path, ours.content_type, ours.json) == (
        fixture["method"], fixture["path"], fixture["content_type"], fixture["body"])
    # Live: the same bytes as kubectl's, key order and all.
    assert ours.body == theirs.body
    assert go_json(ours.json) == theirs.body


# ============================================================== once per bad revision


async def test_three_crash_looping_pods_are_one_rollback(
        kube: KubeApiServer, rig_factory: Callable[..., Any]) -> None:
    rig = await bad_rollout(kube, rig_factory, coalesce_window=0.3)  # three pods crash-loop
    records = await rig.settled(3)
    assert [r["decision"] for r in records] == ["act"]
    assert rig.coalesced() == 2
    assert [(m.method, m.path) for m in kube.bed.log.mutations()] == [
        ("PATCH", DEPLOYMENT_PATH)]
    (outcome,) = rig.records("outcome")
    step = outcome["steps"][0]
    assert (outcome["outcome"], step["verified"]) == ("success", True)
    details = step["details"]
    assert (details["from_revision"], details["to_revision"]) == (2, 1)
    assert (details["images_before"], details["images_after"]) == (
        ["example/web:2.0"], ["example/web:1.0"])
    rs = replicasets(kube)
    assert details["to_hash"] == rs["3"]["metadata"]["labels"][HASH]  # reused as revision 3
    assert details["from_hash"] == rs["2"]["metadata"]["labels"][HASH]
    assert {p["spec"]["containers"][0]["image"] for p in pods(kube)} == {"example/web:1.0"}


async def test_decisions_after_the_coalescing_window_are_superseded(
        kube: KubeApiServer, rig_factory: Callable[..., Any]) -> None:
    rig = await bad_rollout(kube, rig_factory, coalesce_window=0.1, hold=True)
    await until(lambda: len(rig.held) == 3, "three crashloop decisions")
    first, *late = rig.held
    rig.submit(first)
    await rig.settled(1)
    for count, decision in enumerate(late, start=2):
        await asyncio.sleep(0.2)  # past the coalescing window: each is judged anew
        rig.submit(decision)
        records = await rig.settled(count)
    assert [r["decision"] for r in records] == ["act", "suppressed", "suppressed"]
    assert rig.coalesced() == 0
    for record in records[1:]:
        assert record["suppressed_by"] == "superseded"
        assert "already rolled back or rolled forward" in record["reason"]
        assert "revision 2" in record["reason"]
    assert [(m.method, m.path) for m in kube.bed.log.mutations()] == [
        ("PATCH", DEPLOYMENT_PATH)]


async def crash_revision_one(kube: KubeApiServer) -> None:
    """The revision rolled back to crash-loops too."""
    kube.bed.controller.crash_images.add("example/web:1.0")
    for pod in pods(kube, "example/web:1.0"):
        kube.bed.controller.crash_loop("default", pod["metadata"]["name"])


async def test_never_rolls_back_onto_the_revision_it_left(
        kube: KubeApiServer, rig_factory: Callable[..., Any]) -> None:
    rig = await bad_rollout(kube, rig_factory, replicas=1)
    await rig.settled(1)  # revision 2 -> 1 (which becomes revision 3)
    assert len(patches(kube)) == 1
    await crash_revision_one(kube)
    records = await rig.settled(2)
    assert [r["decision"] for r in records] == ["act", "suppressed"]
    refused = records[1]
    assert refused["suppressed_by"] == "bad_revision"
    assert "revision 2" in refused["reason"] and "example/web:2.0" in refused["reason"]
    assert "remedyd rolled back from it" in refused["reason"]
    assert re.search(r" at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", refused["reason"])
    assert len(patches(kube)) == 1
    d = kube.bed.store.get(kube.bed.kind("apps/v1", "deployments"), "default", "web")
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "example/web:1.0"


def rollback_daemon(tmp_path: Path, kubeconfig: Path) -> DaemonProcess:
    """A real remedyd with the rollback rule, watching what a rollback resolves through."""
    return DaemonProcess(tmp_path / "d", RULE.replace("PARAMS", "{}"), extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig),
                       "kinds": ["pods", "replicasets", "deployments"]}})


async def test_a_restarted_remedyd_does_not_roll_back_again(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=1))
    daemon = rollback_daemon(tmp_path, kubeconfig)
    await asyncio.to_thread(daemon.start)
    try:
        kube.bed.controller.crash_images.add("example/web:2.0")
        kube.bed.apply(deployment("example/web:2.0", replicas=1))
        await until(lambda: daemon.audit("outcome"), "the rollback's outcome", 20)
        assert len(patches(kube)) == 1
        await asyncio.to_thread(daemon.signal, 9)  # killed mid-incident
        await asyncio.to_thread(daemon.proc.wait, 10)  # type: ignore[union-attr]
        await asyncio.to_thread(daemon.start)  # ready: it has listed every kind
        await crash_revision_one(kube)
        decisions = await until(lambda: len(daemon.audit("decision")) >= 2 and daemon.audit(
            "decision"), "the restarted daemon's decision", 20)
    finally:
        await asyncio.to_thread(daemon.stop)
    refused = decisions[-1]
    assert (refused["decision"], refused["suppressed_by"]) == ("suppressed", "bad_revision"), \
        refused
    assert "revision 2" in refused["reason"] and "example/web:2.0" in refused["reason"]
    assert len(patches(kube)) == 1


async def test_killed_between_the_patch_and_its_outcome_it_still_knows_what_it_left(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=1))
    daemon = rollback_daemon(tmp_path, kubeconfig)
    await asyncio.to_thread(daemon.start)
    try:
        await killed_once_the_rollback_landed(kube, daemon)
        assert daemon.audit("outcome") == [], "killed before the outcome was written"

        await asyncio.to_thread(daemon.start)
        [interrupted] = daemon.audit("outcome")
        assert interrupted["outcome"] == "interrupted"
        assert [s["outcome"] for s in interrupted["steps"]] == ["interrupted"]
        await crash_revision_one(kube)
        decisions = await until(lambda: len(daemon.audit("decision")) >= 2 and daemon.audit(
            "decision"), "the restarted daemon's decision", 20)
    finally:
        await asyncio.to_thread(daemon.stop)
    refused = decisions[-1]
    assert (refused["decision"], refused["suppressed_by"]) == ("suppressed", "bad_revision"), \
        refused
    assert "example/web:2.0" in refused["reason"]
    assert len(patches(kube)) == 1


async def killed_once_the_rollback_landed(kube: KubeApiServer, daemon: DaemonProcess) -> None:
    """Revision 2 crash-loops; remedyd's rollback lands, but its answer never reaches it
    before it is killed (-9)."""
    kube.bed.faults.add("slow", method="PATCH", path="/deployments/web$", delay=60)
    kube.bed.controller.crash_images.add("example/web:2.0")
    kube.bed.apply(deployment("example/web:2.0", replicas=1))
    await kube.bed.log.wait_for("PATCH", "/deployments/web$", limit=20)
    await until(lambda: image(kube) == "example/web:1.0", "the rollback to land")
    await asyncio.to_thread(daemon.signal, 9)
    await asyncio.to_thread(daemon.proc.wait, 10)  # type: ignore[union-attr]


def image(kube: KubeApiServer) -> str:
    d = kube.bed.store.get(kube.bed.kind("apps/v1", "deployments"), "default", "web")
    return str(d["spec"]["template"]["spec"]["containers"][0]["image"])


# ============================================================ refusals and dry run

DEPLOYMENTS = ("apps/v1", "deployments")


@pytest.mark.parametrize(("case", "params", "reason"), [
    ("paused", "{}", "you cannot rollback a paused deployment; resume it first"),
    ("one revision", "{}", 'no rollout history found for deployment "web"'),
    ("bad rollout", "{to_revision: 7}", "unable to find specified revision 7 in history"),
    ("bad rollout", "{to_revision: 2}", "the current template already matches revision 2"),
])
async def test_kubectls_refusals(kube: KubeApiServer, rig_factory: Callable[..., Any],
                                 case: str, params: str, reason: str) -> None:
    if case == "one revision":
        kube.bed.add_node("node-1")
        rig = await rig_factory(params=params)
        kube.bed.controller.crash_images.add("example/web:1.0")
        kube.bed.apply(deployment("example/web:1.0"))
    else:
        rig = await bad_rollout(kube, rig_factory, params=params, hold=case == "paused")
    if case == "paused":
        await until(lambda: len(rig.held) == 3, "three crashloop decisions")
        kube.bed.store.mutate(kube.bed.kind(*DEPLOYMENTS), "default", "web",
                              lambda d: d["spec"].__setitem__("paused", True))
        for decision in rig.held:
            rig.submit(decision)
    records = await rig.settled(3)
    assert {(r["decision"], r.get("suppressed_by")) for r in records} == {
        ("suppressed", "preflight")}, records[0]
    assert reason in records[0]["reason"], records[0]["reason"]
    assert kube.bed.log.mutations() == []


async def test_to_revision_rolls_back_to_that_revision(
        kube: KubeApiServer, rig_factory: Callable[..., Any]) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=1))
    kube.bed.apply(deployment("example/web:2.0", replicas=1))
    rig = await rig_factory(params="{to_revision: 1}")
    kube.bed.controller.crash_images.add("example/web:3.0")
    kube.bed.apply(deployment("example/web:3.0", replicas=1))
    await rig.settled(1)
    (outcome,) = rig.records("outcome")
    details = outcome["steps"][0]["details"]
    assert (details["from_revision"], details["to_revision"]) == (3, 1)  # not 2, the previous
    assert details["images_after"] == ["example/web:1.0"]


async def test_dry_run_sends_no_mutation(kube: KubeApiServer,
                                         rig_factory: Callable[..., Any]) -> None:
    rig = await bad_rollout(kube, rig_factory, dry_run=True)
    records = await rig.settled(3)
    assert {r["suppressed_by"] for r in records} == {"dry_run"}
    assert kube.bed.log.mutations() == []


def test_go_json_escapes_as_go_does() -> None:
    value = {"b": "<a&b>", "a": "é\u2028", "n": [1, True, None]}
    assert go_json(copy.deepcopy(value)) == (
        '{"b":"\\u003ca\\u0026b\\u003e","a":"é\\u2028","n":[1,true,null]}').encode()
