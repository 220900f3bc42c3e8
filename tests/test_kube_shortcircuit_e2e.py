"""The short-circuit in a real remedyd: 20 of a Deployment's 30 pods unhealthy at once is a
shared cause, not 20 bad pods; remedyd evicts none, audits one short-circuit and notifies
once."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.harness import DaemonProcess, WebhookSink
from tests.kube.server import KubeApiServer
from tests.kubeactions import deployment, until
from tests.test_kube_e2e import remedyd_writes

RULES = """rules:
  - name: evict-unready
    source: kubernetes
    when: event.kind == "pod" && event.action == "unready"
    actions: [kubernetes.evict: {}]
"""


async def test_twenty_of_thirty_unhealthy_pods_are_one_short_circuit_and_one_notification(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("web", replicas=30))
    pods = sorted(p["metadata"]["name"] for p in kube.bed.store.list(
        kube.bed.kind("v1", "pods")))
    assert len(pods) == 30
    for pod in pods[:20]:
        kube.bed.controller.set_ready("default", pod, False)
    with WebhookSink() as sink:
        daemon = DaemonProcess(tmp_path / "d", RULES, webhook_url=sink.url, extra={
            "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig)}})
        await asyncio.to_thread(daemon.start)
        try:
            await until(lambda: len(daemon.audit("decision")) >= 20 and all(
                d["decision"] == "suppressed" or [o for o in daemon.audit("outcome")
                                                  if o["incident"] == d["incident"]]
                for d in daemon.audit("decision")), "20 decisions, each closed", 20)
        finally:
            await asyncio.to_thread(daemon.stop)
        bodies = list(sink.bodies)

    decisions = daemon.audit("decision")
    assert len(decisions) == 20
    [escalated] = [d for d in decisions if d["decision"] == "escalate"]
    assert escalated["reason"] == ("20 of 30 pods of Deployment default/web are unhealthy at "
                                   "once (more than 40%)")
    others = [d for d in decisions if d is not escalated]
    assert {d["suppressed_by"] for d in others} == {"unhealthy_share"}
    assert all(escalated["incident"] in d["reason"] for d in others)
    assert [(r.method, r.path) for r in remedyd_writes(kube) if "/pods" in r.path] == []
    [note] = bodies
    assert note["incident"] == escalated["incident"]
    assert "20 of 30 pods" in note["message"] and "holding off" in note["message"]
