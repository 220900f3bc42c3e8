"""Kubernetes latency: a crash-looping pod's status update reaching remedyd -> the rollback
PATCH leaving it.

    .venv/bin/python bench/kube_latency.py [--samples 200] [--action kubernetes.rollback]

Latency of one sample = the moment the API server's PATCH of the Deployment has come in
minus the moment the server wrote the Pod's MODIFIED event (CrashLoopBackOff) to remedyd's
watch. Both are the test bed's own clock (its request log: `received_at`, and per watch
`sent`), so nothing in remedyd is touched. Between the two, remedyd reads the line,
decodes, caches, computes the transitions, evaluates, writes the intent to its audit log
(fsync), runs its guards (one fresh GET of the Deployment: `observe`), and sends what the
action sends (a rollback reads the Deployment and its ReplicaSets first, as kubectl does).
Also reported: when the audit `decision` record was stamped, and the requests remedyd
made in between.

Setup: the in-process Kubernetes test bed (tests.kube.server.KubeApiServer, loopback;
no kube-apiserver can be installed on these machines), 3 Nodes, and remedyd as a child
process (bench/_daemon.py) with Docker off, `[kubernetes]` on through a kubeconfig, the
default kinds, audit fsync on (as shipped) in /var/tmp, one rule: the bundled
kube-rollback-crashloop-after-rollout condition with --action, no cooldown and a large
budget. A sample is a fresh Deployment (2 replicas) rolled out from image 1.0 to 2.0,
then, once remedyd's watches have been sent both revisions, one Pod of the new revision
crash-loops. Samples run one after another; once a sample's outcome is audited its
Deployment, ReplicaSets and Pods are deleted (the bed's controller goes over everything
it holds after every write). Bounded: every wait has a timeout; a sample with no PATCH
within --timeout is counted as missed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
import yaml
from _common import summary
from _daemon import Remedyd

from tests.kube.controller import DEPLOYMENTS, PODS, REPLICASETS
from tests.kube.server import KubeApiServer, write_kubeconfig

TARGET_P99_MS = 50.0
NAMESPACE = "bench"
BUNDLED_RULE = "kube-rollback-crashloop-after-rollout"
RULE_NAME = "bench-kube-rollback"
WATCHES = {"pods": "^/api/v1/pods$", "replicasets": "^/apis/apps/v1/replicasets$",
           "deployments": "^/apis/apps/v1/deployments$"}


def bench_rule(action: str) -> str:
    """The bundled rollback rule's condition with `action`, no cooldown, a large budget."""
    bundled = yaml.safe_load((_common.ROOT / "rules" / "kubernetes.yaml").read_text())
    when = next(r["when"] for r in bundled["rules"] if r["name"] == BUNDLED_RULE)
    return (f"rules:\n  - name: {RULE_NAME}\n    source: kubernetes\n"
            f"    when: {when!r}\n    cooldown: 0s\n    budget: {{max: 100000, per: 1h}}\n"
            f"    actions:\n      - {action}: {{}}\n")


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "app", "image": image,
                          "ports": [{"containerPort": 8080}]}]}}}}


class Sampler:
    def __init__(self, server: KubeApiServer, daemon: Remedyd, timeout: float) -> None:
        self.server, self.bed, self.daemon = server, server.bed, daemon
        self.timeout = timeout
        # The bed's clock is monotonic; the audit log's is the wall clock.
        self.wall_offset = time.time() - time.monotonic()

    async def written(self, watch: str, version: str) -> float:
        """When remedyd's watch `watch` was sent the object at `version` (bounded wait)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for kind in ("ADDED", "MODIFIED"):
                at = self.bed.log.sent_at(WATCHES[watch], kind, version)
                if at is not None:
                    return at
            await asyncio.sleep(0.002)
        raise TimeoutError(f"the {watch} watch was not sent resourceVersion {version} "
                           f"within {self.timeout:g} s")

    async def rolled_out(self, name: str) -> dict[str, Any]:
        """A Deployment at image 1.0 then 2.0, once remedyd's watches carry all of it."""
        store = self.bed.store
        self.bed.apply(deployment(name, "registry.example/app:1.0"))
        self.bed.apply(deployment(name, "registry.example/app:2.0"))
        dep = store.get(DEPLOYMENTS, NAMESPACE, name)
        sets = [rs for rs in store.list(REPLICASETS, NAMESPACE)
                if rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]]
        current = max(sets, key=lambda rs: int(
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]))
        pods = [p for p in store.list(PODS, NAMESPACE)
                if p["metadata"]["ownerReferences"][0]["uid"] == current["metadata"]["uid"]]
        for watch, objs in (("deployments", [dep]), ("replicasets", sets), ("pods", pods)):
            for obj in objs:
                await self.written(watch, obj["metadata"]["resourceVersion"])
        return pods[0]

    async def sample(self, k: int) -> dict[str, Any] | None:
        name = f"app-{k}"
        pod = await self.rolled_out(name)
        await asyncio.sleep(0.05)  # remedyd has been sent it all; let it read it too
        crashed = self.bed.controller.crash_loop(NAMESPACE, pod["metadata"]["name"])
        path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}$"
        try:
            patch = await self.bed.log.wait_for("PATCH", path, limit=self.timeout)
        except TimeoutError:
            return None
        sent = await self.written("pods", crashed["metadata"]["resourceVersion"])
        between = [r for r in self.bed.log.entries
                   if sent <= r.received_at < patch.received_at and not r.is_watch]
        decided = self.decision_time(name)
        await self.closed(name)
        self.remove(name)
        return {"latency_ms": (patch.received_at - sent) * 1e3,
                "decision_ms": None if decided is None else
                (decided - self.wall_offset - sent) * 1e3,
                "requests_between": [f"{r.method} {r.path}" for r in between]}

    async def closed(self, name: str) -> None:
        """Until the incident on Deployment `name` has its outcome (the verify step read it)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(r.get("kind") == "outcome" and (r.get("target") or {}).get("name") == name
                   for r in await asyncio.to_thread(self.daemon.audit)):
                return
            await asyncio.sleep(0.01)

    def remove(self, name: str) -> None:
        """The sample's objects out of the bed: its controller reconciles every object it
        holds after each write, so hundreds of old samples would slow every later one."""
        store = self.bed.store
        dep = store.get(DEPLOYMENTS, NAMESPACE, name)
        sets = [rs for rs in store.list(REPLICASETS, NAMESPACE)
                if rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]]
        uids = {rs["metadata"]["uid"] for rs in sets}
        for pod in store.list(PODS, NAMESPACE):
            if pod["metadata"]["ownerReferences"][0]["uid"] in uids:
                store.delete(PODS, NAMESPACE, pod["metadata"]["name"])
        for rs in sets:
            store.delete(REPLICASETS, NAMESPACE, rs["metadata"]["name"])
        store.delete(DEPLOYMENTS, NAMESPACE, name)

    def decision_time(self, name: str) -> float | None:
        """The wall time of the audit `decision` record of the rollback of Deployment `name`."""
        for record in reversed(self.daemon.audit()):
            target = (record.get("target") or {}) if record.get("kind") == "decision" else {}
            if target.get("name") == name:
                stamp = str(record["time"]).replace("Z", "+00:00")
                return datetime.fromisoformat(stamp).timestamp()
        return None


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = KubeApiServer()
    await server.start()
    daemon: Remedyd | None = None
    try:
        for i in range(3):
            server.bed.add_node(f"node-{i}")
        kubeconfig = write_kubeconfig(str(workdir / "kubeconfig"), server.url)
        daemon = Remedyd(workdir / "remedyd", None, rules=bench_rule(args.action), extra={
            "kubernetes": {"enabled": True, "kubeconfig": kubeconfig},
            "safety": {"max_actions": 100000, "max_actions_per": "1h",
                       "action_timeout": "30s"},
            "log": {"level": "INFO"}})
        ready_s = await asyncio.to_thread(daemon.start)
        sampler = Sampler(server, daemon, args.timeout)
        results = []
        missed = 0
        for k in range(args.samples):
            found = await sampler.sample(k)
            if found is None:
                missed += 1
            else:
                results.append(found)
            await asyncio.sleep(args.pause)
        status = await asyncio.to_thread(daemon.status)
        verify = await asyncio.to_thread(daemon.verify_audit)
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        await server.stop()
    latencies = [r["latency_ms"] for r in results]
    decisions = [r["decision_ms"] for r in results if r["decision_ms"] is not None]
    requests = [len(r["requests_between"]) for r in results]
    return {
        "samples": args.samples, "missed": missed, "action": args.action,
        "ready_seconds": round(ready_s, 3),
        "latency_ms": summary(latencies),
        "pod_event_to_audited_decision_ms": summary(decisions),
        "requests_between_median": statistics.median(requests) if requests else None,
        "requests_between_example": results[-1]["requests_between"] if results else [],
        "remedyd_vmrss_mib_at_end": round(status.get("VmRSS", 0) / 1024, 1),
        "audit_verify": verify.splitlines()[-1] if verify else "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--action", default="kubernetes.rollback",
                        help="the rule's action (one that PATCHes the Deployment)")
    parser.add_argument("--pause", type=float, default=0.05,
                        help="seconds between samples, for the rollback's aftermath")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a sample may take before it counts as missed")
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="remedyd-kube-latency-", dir="/var/tmp") as tmp:
        found = asyncio.run(bench(args, Path(tmp)))
        audit_fs = _common.fs_type(Path(tmp))
    data = {**_common.result_header("kube_latency", loadavg_before), "audit_fs": audit_fs,
            **found, "target_p99_ms": TARGET_P99_MS,
            "meets_target": bool(found["latency_ms"].get("p99", 1e9) <= TARGET_P99_MS)}
    path = _common.write_results("kube_latency", data)
    lat, dec = found["latency_ms"], found["pod_event_to_audited_decision_ms"]
    verdict = "met" if data["meets_target"] else "MISSED"
    print(f"crash-looping pod's MODIFIED event written -> {args.action} PATCH in: "
          f"{lat['n']} samples ({found['missed']} missed), p50 {lat.get('p50')} ms, "
          f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms (target p99 <= "
          f"{TARGET_P99_MS:g} ms: {verdict})")
    print(f"  pod event -> audit decision record: p50 {dec.get('p50')} ms; remedyd's "
          f"requests in between (median {found['requests_between_median']}): "
          f"{', '.join(found['requests_between_example'])}")
    print(f"  remedyd VmRSS at the end {found['remedyd_vmrss_mib_at_end']} MiB; audit on "
          f"{audit_fs}: {found['audit_verify']}")
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
