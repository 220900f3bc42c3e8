"""Kubernetes cache memory and the trim+diff part of watch ingest, on plain JSON.

    .venv/bin/python bench/kube_cache.py [--pods 10000] [--replicasets 1000]
        [--deployments 300] [--events 20000] [--runs 5]

- memory: the fixtures' Pod (tests/kube/fixtures/pod.json, about 6 KB of JSON with its
  managedFields), ReplicaSet and Deployment, each copy with its own name, uid and
  resourceVersion, serialised and decoded one by one (so no string is shared with
  the fixture, as from a real watch), trimmed and cached. Reports tracemalloc's figure
  for what the cache holds (its share of the daemon), VmRSS before and after (which
  includes tracemalloc's own bookkeeping, so it overstates), and for a sample of 1,000 Pods
  what they would cost cached untrimmed.
- ingest: --events Pod update payloads (JSON bytes, ~6 KB each) for 500 Pods of 50
  ReplicaSets; every 10th update of a Pod restarts its app container and every 25th
  turns it unready, so transitions come out too. Timed: json.loads alone, and
  json.loads + trim + cache diff + transitions; median of --runs rounds on one core,
  timed in CPU time (process_time): on a shared machine wall time measures the neighbours.
  The engine's own evaluation is bench/engine_throughput.py's part.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import statistics
import time
import tracemalloc
from pathlib import Path
from typing import Any

import _common

from daemon.kube.cache import Cache
from daemon.kube.transitions import transitions

FIXTURES = _common.ROOT / "tests" / "kube" / "fixtures"
TARGET_DAEMON_RSS_MB = 150.0
TARGET_EVENTS_PER_S = 10_000


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def deployment(i: int, base: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    obj["metadata"].update(name=f"app-{i}", uid=f"dep-{i:08d}", resourceVersion=str(i))
    return obj


def replicaset(i: int, deployments: int, base: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    owner = i % deployments
    obj["metadata"].update(name=f"app-{owner}-{i:06x}", uid=f"rs-{i:08d}",
                           resourceVersion=str(100_000 + i))
    obj["metadata"]["ownerReferences"][0].update(name=f"app-{owner}", uid=f"dep-{owner:08d}")
    return obj


def pod(i: int, replicasets: int, base: dict[str, Any], version: int = 0) -> dict[str, Any]:
    obj = copy.deepcopy(base)
    owner = i % replicasets
    obj["metadata"].update(name=f"pod-{i:06d}", uid=f"pod-{i:08d}",
                           resourceVersion=str(1_000_000 + i * 1000 + version))
    obj["metadata"]["ownerReferences"][0].update(name=f"rs-{owner}", uid=f"rs-{owner:08d}")
    obj["status"]["podIP"] = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
    app = obj["status"]["containerStatuses"][0]
    app["restartCount"] = version // 10
    if version % 25 == 24:
        ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        ready.update(status="False", lastTransitionTime=f"2024-05-02T10:{version % 60:02d}:00Z")
    return obj


def decoded(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a watch would hand it over: freshly decoded, nothing shared."""
    data: dict[str, Any] = json.loads(json.dumps(obj))
    return data


def memory(pods: int, replicasets: int, deployments: int) -> dict[str, Any]:
    bases = {n: fixture(n) for n in ("pod", "replicaset", "deployment")}
    gc.collect()
    rss_before = rss_mib()
    tracemalloc.start()
    cache = Cache()
    cache.replace("Deployment", (decoded(deployment(i, bases["deployment"]))
                                 for i in range(deployments)))
    cache.replace("ReplicaSet", (decoded(replicaset(i, deployments, bases["replicaset"]))
                                 for i in range(replicasets)))
    cache.replace("Pod", (decoded(pod(i, replicasets, bases["pod"])) for i in range(pods)))
    gc.collect()
    cached_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    rss_after = rss_mib()

    sample = min(pods, 1000)
    tracemalloc.start()
    untrimmed = [decoded(pod(i, replicasets, bases["pod"])) for i in range(sample)]
    untrimmed_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    trimmed = Cache()
    trimmed.replace("Pod", (decoded(pod(i, replicasets, bases["pod"])) for i in range(sample)))
    trimmed_bytes = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del untrimmed, trimmed
    return {
        "objects": {"pods": pods, "replicasets": replicasets, "deployments": deployments,
                    "cached": len(cache)},
        "cache_tracemalloc_mib": round(cached_bytes / 2**20, 1),
        "rss_before_mib": round(rss_before, 1), "rss_after_mib": round(rss_after, 1),
        "rss_growth_mib": round(rss_after - rss_before, 1),
        "per_pod_bytes": {"trimmed": trimmed_bytes // sample,
                          "untrimmed": untrimmed_bytes // sample, "sample": sample},
    }


def ingest_payloads(events: int, base: dict[str, Any]) -> tuple[list[dict[str, Any]], list[bytes]]:
    pods, replicasets = 500, 50
    initial = [pod(i, replicasets, base) for i in range(pods)]
    payloads = [json.dumps(pod(n % pods, replicasets, base, 1 + n // pods)).encode()
                for n in range(events)]
    return initial, payloads


def ingest_once(initial: list[dict[str, Any]], payloads: list[bytes], replicasets: list[Any]
                ) -> tuple[float, int]:
    cache = Cache()
    cache.replace("ReplicaSet", replicasets)
    cache.replace("Pod", initial)
    found = 0
    start = time.process_time()
    for payload in payloads:
        change = cache.apply("MODIFIED", json.loads(payload))
        if change is not None:
            found += len(transitions(cache, change, 1714642500.0))
    return time.process_time() - start, found


def loads_once(payloads: list[bytes]) -> float:
    start = time.process_time()
    for payload in payloads:
        json.loads(payload)
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--replicasets", type=int, default=1_000)
    parser.add_argument("--deployments", type=int, default=300)
    parser.add_argument("--events", type=int, default=20_000, help="Pod updates per round")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    mem = memory(args.pods, args.replicasets, args.deployments)
    print(f"cache of {args.pods:,} Pods, {args.replicasets:,} ReplicaSets, "
          f"{args.deployments:,} Deployments (trimmed): {mem['cache_tracemalloc_mib']} MiB "
          f"(tracemalloc); VmRSS {mem['rss_before_mib']} -> {mem['rss_after_mib']} MiB")
    per = mem["per_pod_bytes"]
    print(f"  per Pod cached: {per['trimmed']:,} B trimmed vs {per['untrimmed']:,} B untrimmed "
          f"(sample of {per['sample']:,})")

    base = fixture("pod")
    initial, payloads = ingest_payloads(args.events, base)
    rs_base = fixture("replicaset")
    replicasets = [replicaset(i, 10, rs_base) for i in range(50)]
    size = statistics.mean(len(p) for p in payloads)
    gc.freeze()
    rounds: list[tuple[float, float, int]] = []
    for _ in range(args.runs):
        loads = loads_once(payloads)
        elapsed, found = ingest_once(initial, payloads, replicasets)
        rounds.append((loads, elapsed, found))
    loads_rate = statistics.median(len(payloads) / r[0] for r in rounds)
    ingest_rate = statistics.median(len(payloads) / r[1] for r in rounds)
    print(f"ingest of {len(payloads):,} Pod updates ({size:,.0f} B of JSON each), median of "
          f"{args.runs} rounds on CPU {cpu}: json.loads {loads_rate:,.0f}/s; loads+trim+diff+"
          f"transitions {ingest_rate:,.0f}/s ({rounds[0][2]:,} transitions per round); "
          f"target >= {TARGET_EVENTS_PER_S:,}/s for the whole ingest")
    data = {
        **_common.result_header("kube_cache", loadavg_before),
        "pinned_cpu": cpu,
        "memory": mem,
        "ingest": {"updates_per_round": len(payloads), "mean_payload_bytes": round(size),
                   "rounds": args.runs, "transitions_per_round": rounds[0][2],
                   "json_loads_per_s": round(loads_rate),
                   "loads_trim_diff_transitions_per_s": round(ingest_rate)},
        "target_daemon_rss_mib": TARGET_DAEMON_RSS_MB,
        "target_events_per_s": TARGET_EVENTS_PER_S,
    }
    path = _common.write_results("kube_cache", data)
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
