"""Kubernetes footprint: remedyd's VmRSS with 10,000 Pods, 1,000 ReplicaSets and 300
Deployments cached, as a real daemon holds them.

    .venv/bin/python bench/kube_footprint.py [--pods 10000] [--replicasets 1000]
        [--deployments 300] [--settle 5]

bench/kube_cache.py measures the cache alone inside one process (tracemalloc); this is
the daemon's own resident memory: remedyd as a child process (bench/_daemon.py: Docker
off, `[kubernetes]` on through a kubeconfig, the default kinds, the bundled rules)
against the in-process Kubernetes test bed (tests.kube.server, loopback), which holds
the same objects kube_cache.py builds from the fixtures (a Pod is about 6 KB of JSON
with its managedFields). remedyd lists them (pages of 500), trims and caches them; once
/readyz answers 200 and --settle seconds have passed, /proc/PID/status is read. The
same is done first against an empty test bed, so the cache's share shows.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _daemon import Remedyd
from kube_cache import deployment, fixture, pod, replicaset

from tests.kube.controller import DEPLOYMENTS, PODS, REPLICASETS
from tests.kube.server import KubeApiServer, write_kubeconfig
from tests.kube.store import Store

TARGET_RSS_MB = 150.0


def fill(store: Store, pods: int, replicasets: int, deployments: int) -> None:
    """The objects straight into the store: no controller runs over them."""
    bases = {name: fixture(name) for name in ("pod", "replicaset", "deployment")}
    for i in range(deployments):
        store.create(DEPLOYMENTS, None, deployment(i, bases["deployment"]), keep_identity=True)
    for i in range(replicasets):
        store.create(REPLICASETS, None, replicaset(i, deployments, bases["replicaset"]),
                     keep_identity=True)
    for i in range(pods):
        store.create(PODS, None, pod(i, replicasets, bases["pod"]), keep_identity=True)


async def measure(workdir: Path, objects: tuple[int, int, int], settle: float
                  ) -> dict[str, Any]:
    server = KubeApiServer()
    fill(server.bed.store, *objects)
    await server.start()
    daemon: Remedyd | None = None
    try:
        kubeconfig = write_kubeconfig(str(workdir / "kubeconfig"), server.url)
        daemon = Remedyd(workdir / "remedyd", None, extra={
            "kubernetes": {"enabled": True, "kubeconfig": kubeconfig}})
        ready_s = await asyncio.to_thread(daemon.start, 120)
        await asyncio.sleep(settle)
        status = await asyncio.to_thread(daemon.status)
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        await server.stop()
    pods, sets, deps = objects
    return {"pods": pods, "replicasets": sets, "deployments": deps,
            "ready_seconds": round(ready_s, 2),
            **{f"{key}_mib": round(status[key] / 1024, 1)
               for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--replicasets", type=int, default=1_000)
    parser.add_argument("--deployments", type=int, default=300)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds after /readyz 200 before memory is read")
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="remedyd-kube-footprint-", dir="/var/tmp") as tmp:
        for name in ("empty", "full"):
            (Path(tmp) / name).mkdir()
        empty = asyncio.run(measure(Path(tmp) / "empty", (0, 0, 0), args.settle))
        full = asyncio.run(measure(Path(tmp) / "full", (
            args.pods, args.replicasets, args.deployments), args.settle))
    data = {**_common.result_header("kube_footprint", loadavg_before),
            "empty": empty, "cached": full,
            "cache_share_mib": round(full["VmRSS_mib"] - empty["VmRSS_mib"], 1),
            "target_rss_mb": TARGET_RSS_MB,
            # MB as the issue writes it: MiB is the stricter reading.
            "meets_target": full["VmRSS_mib"] <= TARGET_RSS_MB}
    path = _common.write_results("kube_footprint", data)
    verdict = "met" if data["meets_target"] else "MISSED"
    print(f"remedyd VmRSS with {args.pods:,} Pods, {args.replicasets:,} ReplicaSets, "
          f"{args.deployments:,} Deployments cached: {full['VmRSS_mib']} MiB (peak "
          f"{full['VmHWM_mib']}; anon {full['RssAnon_mib']}), ready in "
          f"{full['ready_seconds']} s; with nothing cached {empty['VmRSS_mib']} MiB "
          f"(target <= {TARGET_RSS_MB:g} MB: {verdict}; {time.monotonic() - started:.0f} s)")
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
