"""Kubernetes failover: the leader SIGKILLed -> the first action of the new leader on an
incident pending meanwhile; and the API requests an idle cluster-mode replica makes.

    .venv/bin/python bench/kube_failover.py [--runs 3] [--idle 30]
        [--lease 15 --renew 10 --retry 2]

Setup: the in-process Kubernetes test bed (tests.kube.server.KubeApiServer, loopback), 2
Nodes, and two remedyd replicas as child processes (bench/_daemon.py), Docker off,
`[kubernetes.leader_election]` on with the given timings (default: client-go's and
remedyd's, 15/10/2 s), identities `a` and `b`, the shared state in its ConfigMap (the
default), one rule: roll back a Deployment one of whose pods crash-loops. Coalescing is
off: the one crash loop of a run must not be folded into the follower's refused decision.

A run: a fresh Deployment rolled out from image 1.0 to 2.0 (2 pods); the leader is sent
SIGKILL, and at once one pod of the new revision crash-loops. The follower sees it and
refuses it (`leader`); it takes the Lease once it has not seen it change for
lease_duration, restores the shared state, re-emits the cached states and rolls back.
Failover = the rollback PATCH's arrival minus the SIGKILL, both on this process's
monotonic clock (the bed's request log). Also reported: when the new leader's first
Lease write got through. The killed replica is started again (as a follower) before
the next run. Idle: after the runs, the requests each replica makes over --idle seconds,
by kind (Lease reads and writes, watches opened, other).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _daemon import Remedyd

from tests.kube.controller import DEPLOYMENTS, PODS, REPLICASETS
from tests.kube.faults import Request
from tests.kube.server import KubeApiServer, write_kubeconfig

NAMESPACE = "default"
RULE = """rules:
  - name: bench-failover-rollback
    source: kubernetes
    when: >-
      event.kind == "pod" && event.action == "crashloop"
      && event.attributes.workload_kind == "Deployment"
    cooldown: 0s
    budget: {max: 1000, per: 1h}
    actions:
      - kubernetes.rollback: {}
"""
LEASES = "/leases/remedyd$"


def deployment(name: str, image: str) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels},
            "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "app", "image": image}]}}}}


def by(request: Request, identity: str) -> bool:
    return request.user_agent.endswith(f"({identity})")


class Cluster:
    def __init__(self, server: KubeApiServer, workdir: Path, args: argparse.Namespace) -> None:
        self.server, self.bed, self.args = server, server.bed, args
        kubeconfig = write_kubeconfig(str(workdir / "kubeconfig"), server.url)
        self.replicas = {name: Remedyd(workdir / name, None, rules=RULE, extra={
            "kubernetes": {"enabled": True, "kubeconfig": kubeconfig,
                           "kinds": ["pods", "replicasets", "deployments"]},
            "kubernetes.leader_election": {
                "enabled": True, "identity": name, "lease_duration": f"{args.lease}s",
                "renew_deadline": f"{args.renew}s", "retry_period": f"{args.retry}s"},
            "safety": {"coalesce_window": "0s", "max_actions": 100000},
            "log": {"level": "INFO"}}) for name in ("a", "b")}

    def leader(self) -> str | None:
        for name, daemon in self.replicas.items():
            status, body = daemon.get("/readyz")
            if status == 200 and b'"leader": true' in body:
                return name
        return None

    async def wait(self, check: Any, what: str, limit: float) -> Any:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(check)
            if found:
                return found
            await asyncio.sleep(0.02)
        raise TimeoutError(f"not within {limit:g} s: {what}")

    async def run(self, k: int) -> dict[str, Any]:
        name = f"web-{k}"
        self.bed.apply(deployment(name, "registry.example/app:1.0"))
        self.bed.apply(deployment(name, "registry.example/app:2.0"))
        await asyncio.sleep(0.5)  # both replicas have it cached
        old = await self.wait(self.leader, "a leader", self.args.lease * 3)
        new = "b" if old == "a" else "a"
        dep = self.bed.store.get(DEPLOYMENTS, NAMESPACE, name)
        newest = max((rs for rs in self.bed.store.list(REPLICASETS, NAMESPACE)
                      if rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]),
                     key=lambda rs: int(rs["metadata"]["annotations"][
                         "deployment.kubernetes.io/revision"]))
        pod = next(p for p in self.bed.store.list(PODS, NAMESPACE)
                   if p["metadata"]["ownerReferences"][0]["uid"] == newest["metadata"]["uid"])
        killed = self.replicas[old]
        killed_at = time.monotonic()
        os.kill(killed.pid, signal.SIGKILL)
        self.bed.controller.crash_loop(NAMESPACE, pod["metadata"]["name"])
        assert killed.proc is not None
        await asyncio.to_thread(killed.proc.wait)
        path = f"/deployments/{name}$"
        patch = await self.wait(lambda: [r for r in self.bed.log.find("PATCH", path)
                                         if by(r, new) and r.received_at > killed_at],
                                "the new leader's rollback", self.args.lease * 4)
        taken = [r for r in self.bed.log.find("PUT", LEASES) + self.bed.log.find("POST",
                                                                                   "/leases$")
                 if by(r, new) and r.received_at > killed_at and r.status < 300]
        await asyncio.to_thread(killed.start)  # back, as a follower
        return {"old_leader": old, "new_leader": new,
                "failover_s": round(patch[0].received_at - killed_at, 3),
                "lease_taken_s": round(min(r.received_at for r in taken) - killed_at, 3)
                if taken else None}

    async def idle(self) -> dict[str, Any]:
        leader = await self.wait(self.leader, "a leader", self.args.lease * 3)
        start = time.monotonic()
        await asyncio.sleep(self.args.idle)
        window = [r for r in self.bed.log.entries if r.received_at >= start]
        out: dict[str, Any] = {"seconds": self.args.idle}
        for name in self.replicas:
            mine = [r for r in window if by(r, name)]
            kinds = {"lease_get": sum(1 for r in mine if r.method == "GET"
                                      and "/leases" in r.path),
                     "lease_write": sum(1 for r in mine if r.method in ("PUT", "POST")
                                        and "/leases" in r.path),
                     "watches_opened": sum(1 for r in mine if r.is_watch)}
            kinds["other"] = len(mine) - sum(kinds.values())
            role = "leader" if name == leader else "follower"
            out[role] = {"identity": name, "requests": len(mine),
                         "per_second": round(len(mine) / self.args.idle, 3), **kinds}
        return out


async def bench(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server = KubeApiServer()
    await server.start()
    cluster: Cluster | None = None
    try:
        for i in range(2):
            server.bed.add_node(f"node-{i}")
        cluster = Cluster(server, workdir, args)
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in cluster.replicas.values()))
        runs = [await cluster.run(k) for k in range(args.runs)]
        idle = await cluster.idle()
        verify = {name: await asyncio.to_thread(d.verify_audit)
                  for name, d in cluster.replicas.items()}
    finally:
        if cluster is not None:
            for daemon in cluster.replicas.values():
                await asyncio.to_thread(daemon.stop)
        await server.stop()
    failovers = [r["failover_s"] for r in runs]
    return {"timings_s": {"lease_duration": args.lease, "renew_deadline": args.renew,
                          "retry_period": args.retry},
            "runs": runs,
            "failover_s": {"median": statistics.median(failovers), "min": min(failovers),
                           "max": max(failovers), "n": len(failovers)},
            "idle": idle,
            "audit_verify": {name: v.splitlines()[-1] if v else "" for name, v in
                             verify.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle", type=float, default=30.0,
                        help="seconds both replicas are watched idle")
    parser.add_argument("--lease", type=float, default=15.0)
    parser.add_argument("--renew", type=float, default=10.0)
    parser.add_argument("--retry", type=float, default=2.0)
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory(prefix="remedyd-kube-failover-", dir="/var/tmp") as tmp:
        found = asyncio.run(bench(args, Path(tmp)))
    data = {**_common.result_header("kube_failover", loadavg_before), **found}
    path = _common.write_results("kube_failover", data)
    idle = found["idle"]
    print(f"failover (leader SIGKILLed -> new leader's rollback PATCH in), lease "
          f"{args.lease:g}/{args.renew:g}/{args.retry:g} s: median "
          f"{found['failover_s']['median']} s over {args.runs} run(s): "
          f"{', '.join(str(r['failover_s']) for r in found['runs'])} s (Lease taken after "
          f"{', '.join(str(r['lease_taken_s']) for r in found['runs'])} s)")
    for role in ("leader", "follower"):
        if role in idle:
            r = idle[role]
            print(f"  idle {role}: {r['per_second']} requests/s over {idle['seconds']:g} s "
                  f"(Lease GET {r['lease_get']}, Lease writes {r['lease_write']}, watches "
                  f"opened {r['watches_opened']}, other {r['other']})")
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
