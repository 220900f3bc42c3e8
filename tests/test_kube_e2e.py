"""The bundled rules/kubernetes.yaml in a real remedyd process against the test bed: a new
revision that crash-loops in every pod is rolled back once, audited and notified; with
--dry-run the same incident is audited and nothing is written to the cluster."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import DaemonProcess, WebhookSink
from tests.kube.faults import Request
from tests.kube.plugin import REMEDYD_AGENT
from tests.kube.server import KubeApiServer
from tests.test_kube_rollback import deployment, image, until

BUNDLED = Path(__file__).resolve().parent.parent / "rules" / "kubernetes.yaml"
ROLLBACK_RULE = "kube-rollback-crashloop-after-rollout"


def remedyd_writes(kube: KubeApiServer) -> list[Request]:
    """What remedyd changed in the cluster; its own shared state (the ConfigMap
    tests/test_kube_shared_state.py covers) aside."""
    return [r for r in kube.bed.log.mutations() if r.user_agent.startswith(REMEDYD_AGENT)
            and "/configmaps" not in r.path]


def daemon_for(tmp_path: Path, kubeconfig: Path, sink: WebhookSink,
               args: tuple[str, ...] = ()) -> DaemonProcess:
    daemon = DaemonProcess(tmp_path / "d", webhook_url=sink.url, args=args, extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)}})
    shutil.copy(BUNDLED, daemon.rules_dir / "kubernetes.yaml")
    return daemon


async def crash_looping_rollout(kube: KubeApiServer, replicas: int = 3) -> float:
    kube.bed.controller.crash_images.add("example/web:2.0")
    started = time.monotonic()
    kube.bed.apply(deployment("example/web:2.0", replicas))
    return started


@pytest.fixture
def sink() -> Any:
    with WebhookSink() as receiver:
        yield receiver


async def test_a_crash_looping_rollout_is_rolled_back_once_audited_and_notified(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, sink: WebhookSink) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=3))
    daemon = daemon_for(tmp_path, kubeconfig, sink)
    await asyncio.to_thread(daemon.start)
    try:
        started = await crash_looping_rollout(kube)
        patch = await kube.bed.log.wait_for("PATCH", "/deployments/web$", limit=20)
        took = patch.received_at - started
        await until(lambda: image(kube) == "example/web:1.0", "the Deployment back on 1.0")
        await until(lambda: [o for o in daemon.audit("outcome") if o["rule"] == ROLLBACK_RULE],
                    "the rollback's outcome", 20)
        await until(lambda: sink.bodies, "the notification", 20)
    finally:
        await asyncio.to_thread(daemon.stop)  # drains: coalesced repeats are audited
    # Three pods, one incident: the other two pods' decisions were coalesced into it.
    repeats = sum(r["count"] for r in daemon.audit("coalesced") if r["rule"] == ROLLBACK_RULE)
    decided = [d for d in daemon.audit("decision") if d["rule"] == ROLLBACK_RULE]
    assert len(decided) + repeats == 3, (decided, repeats)
    assert took < 5.0, f"the rollback PATCH came {took:.2f}s after the rollout"
    assert [(r.method, r.path) for r in remedyd_writes(kube)] == [
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web")]
    [outcome] = [o for o in daemon.audit("outcome") if o["rule"] == ROLLBACK_RULE]
    assert outcome["outcome"] == "success", outcome
    assert outcome["target"]["kind"] == "deployment" and outcome["target"]["name"] == "web"
    rollback = outcome["steps"][0]
    assert rollback["action"] == "kubernetes.rollback"
    assert (rollback["details"]["from_revision"], rollback["details"]["to_revision"]) == (2, 1)
    assert rollback.get("verified") is True
    [note] = [b for b in sink.bodies if b.get("rule") == ROLLBACK_RULE]
    assert note["target"]["name"] == "web"
    acted = [d for d in daemon.audit("decision")
             if d["rule"] == ROLLBACK_RULE and d["decision"] == "act"]
    assert len(acted) == 1 and acted[0]["subject"]["kind"] == "pod"


async def test_dry_run_audits_the_incident_and_writes_nothing_to_the_cluster(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path, sink: WebhookSink) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=3))
    daemon = daemon_for(tmp_path, kubeconfig, sink, args=("--dry-run",))
    await asyncio.to_thread(daemon.start)
    try:
        await crash_looping_rollout(kube)
        decisions = await until(lambda: [d for d in daemon.audit("decision")
                                         if d["rule"] == ROLLBACK_RULE],
                                "the rollback rule's decision", 20)
    finally:
        await asyncio.to_thread(daemon.stop)
    assert {(d["decision"], d["suppressed_by"]) for d in decisions} == {
        ("suppressed", "dry_run")}
    assert {d["target"]["kind"] for d in decisions} == {"deployment"}
    assert remedyd_writes(kube) == []
    assert image(kube) == "example/web:2.0"
