"""`remedyd scan` over N Pod manifests: seconds and peak RSS of the CLI process.

Generates N Pods shaped like real workloads (one to three containers, an init container
on some, securityContext at pod and container level, configMap/secret/emptyDir volumes,
a hostPath on some, env with secret-looking names on some, images pinned, tagged or
`latest`), a mix that passes and fails the bundled checks, into a temporary directory:
one multi-document file (`kustomize build` output) and/or one file per Pod. Each run is
`python -m daemon scan DIR --format json -o FILE` as a separate process, measured with
os.wait4 (its own wall time and ru_maxrss); the median of --runs is reported.
Target (issue 9): 10,000 Pods in under 10 s and 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common  # first: puts the repository on sys.path
import yaml

ROOT = Path(__file__).resolve().parents[1]

IMAGES = ["registry.example:5000/shop/web:1.4.2", "registry.example:5000/shop/api:3.1",
          "busybox", "nginx:latest",
          "registry.example:5000/ops/agent@sha256:" + "ab" * 32,
          "registry.example:5000/ops/proxy:2.0@sha256:" + "cd" * 32]


def pod(index: int, rng: random.Random) -> dict[str, Any]:
    """One Pod; about a third fully hardened (restricted), the rest failing one thing or
    several, as a real cluster's mix does."""
    hardened = index % 3 == 0
    namespace = f"team-{index % 40}"
    containers = []
    for n in range(rng.randint(1, 3)):
        context: dict[str, Any] = {"allowPrivilegeEscalation": False,
                                   "capabilities": {"drop": ["ALL"]},
                                   "readOnlyRootFilesystem": True}
        if not hardened:
            choice = rng.randrange(6)
            if choice == 0:
                context = {"privileged": True}
            elif choice == 1:
                context["capabilities"] = {"add": ["NET_ADMIN", "SYS_TIME"]}
            elif choice == 2:
                context.pop("allowPrivilegeEscalation")
            elif choice == 3:
                context["runAsUser"] = 0
        env = [{"name": "LOG_LEVEL", "value": "info"},
               {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
        if not hardened and rng.random() < 0.2:
            env.append({"name": "DB_PASSWORD", "value": "hunter2"})
        containers.append({
            "name": f"c{n}", "image": IMAGES[0] if hardened else rng.choice(IMAGES),
            "imagePullPolicy": "IfNotPresent", "args": ["--port", str(8000 + n)],
            "ports": [{"containerPort": 8000 + n, "protocol": "TCP",
                       **({"hostPort": 8000 + n} if not hardened and n == 2 else {})}],
            "env": env, "securityContext": context,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"memory": "256Mi"}},
            "volumeMounts": [{"name": "config", "mountPath": "/etc/app"},
                             {"name": "tmp", "mountPath": "/tmp"}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000 + n},
                               "periodSeconds": 10}})
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": f"app-{index % 50}"}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "token", "secret": {"secretName": "app-token"}}]
    if not hardened and rng.random() < 0.15:
        volumes.append({"name": "logs", "hostPath": {"path": "/var/log", "type": "Directory"}})
    spec: dict[str, Any] = {
        "serviceAccountName": "app", "automountServiceAccountToken": hardened,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}}
        if hardened or rng.random() < 0.5 else {},
        "containers": containers, "volumes": volumes, "nodeSelector": {
            "kubernetes.io/os": "linux"}}
    if not hardened and rng.random() < 0.05:
        spec["hostNetwork"] = True
    if rng.random() < 0.2:
        spec["initContainers"] = [{"name": "init", "image": IMAGES[1], "command": [
            "sh", "-c", "true"], "securityContext": containers[0]["securityContext"]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": f"app-{index}", "namespace": namespace,
        "labels": {"app.kubernetes.io/name": f"app-{index % 200}", "tier": "backend"},
        "annotations": {"prometheus.io/scrape": "true"}}, "spec": spec}


def generate(directory: Path, count: int, layout: str, seed: int) -> int:
    rng = random.Random(seed)
    pods = [pod(i, rng) for i in range(count)]
    dump = yaml.CSafeDumper if hasattr(yaml, "CSafeDumper") else yaml.SafeDumper
    if layout == "multi":
        text = yaml.dump_all(pods, Dumper=dump, sort_keys=False)
        (directory / "pods.yaml").write_text(text)
        return len(text)
    size = 0
    for i, item in enumerate(pods):
        text = yaml.dump(item, Dumper=dump, sort_keys=False)
        (directory / f"pod-{i:05d}.yaml").write_text(text)
        size += len(text)
    return size


def run_scan(directory: Path, out: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "daemon", "scan", str(directory), "--rules",
               str(ROOT / "rules"), "--format", "json", "-o", str(out)]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    assert process.stderr is not None
    err = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode not in (0, 1):
        raise SystemExit(f"remedyd scan failed ({process.returncode}): {err.decode()[-2000:]}")
    report = json.loads(out.read_text())
    return {"seconds": seconds, "peak_rss_mib": usage.ru_maxrss / 1024,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "objects": report["summary"]["objects"], "findings": report["summary"]["total"],
            "by_severity": {k: report["summary"][k]
                            for k in ("critical", "high", "medium", "low")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--layout", choices=("multi", "files", "both"), default="both",
                        help="one multi-document file, one file per Pod, or each in turn")
    parser.add_argument("--seed", type=int, default=9)
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    layouts = ["multi", "files"] if args.layout == "both" else [args.layout]
    results: dict[str, Any] = {}
    for layout in layouts:
        with tempfile.TemporaryDirectory(prefix="remedyd-scan-bench-") as tmp:
            manifests = Path(tmp) / "manifests"
            manifests.mkdir()
            size = generate(manifests, args.pods, layout, args.seed)
            runs = [run_scan(manifests, Path(tmp) / "report.json") for _ in range(args.runs)]
        seconds = [r["seconds"] for r in runs]
        rss = [r["peak_rss_mib"] for r in runs]
        results[layout] = {
            "pods": args.pods, "yaml_mib": round(size / 2**20, 1),
            "seconds": {"median": round(statistics.median(seconds), 3),
                        "min": round(min(seconds), 3), "max": round(max(seconds), 3)},
            "peak_rss_mib": {"median": round(statistics.median(rss), 1),
                             "max": round(max(rss), 1)},
            "cpu_seconds_median": round(statistics.median(r["cpu_seconds"] for r in runs), 3),
            "objects": runs[0]["objects"], "findings": runs[0]["findings"],
            "by_severity": runs[0]["by_severity"],
        }
        r = results[layout]
        print(f"{layout}: {args.pods} Pods ({r['yaml_mib']} MiB of YAML): "
              f"{r['seconds']['median']:.2f} s median ({r['seconds']['min']:.2f}-"
              f"{r['seconds']['max']:.2f}), peak RSS {r['peak_rss_mib']['median']:.0f} MiB "
              f"median, {r['findings']} findings {r['by_severity']}")
    data = {**_common.result_header("security_scan", loadavg_before),
            "target": {"seconds": 10, "peak_rss_mb": 300}, "results": results}
    path = _common.write_results("security_scan", data)
    print(f"summary: {path}")


if __name__ == "__main__":
    main()
