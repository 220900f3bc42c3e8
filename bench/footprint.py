"""Footprint of the idle daemon: start-up time, resident memory, what it imports.

    .venv/bin/python bench/footprint.py [--starts 7] [--idle 60] [--containers 20]

Configuration: Docker enabled against a real dockerd, the bundled rules
(rules/docker.yaml), audit log in a temporary directory, every other key at its
default (so reconcile every 30 s, fsync on, log level INFO).

- start-up: wall time from just before the exec of `python -m daemon run` to the
  first 200 from GET /readyz (polled every 5 ms), median of --starts starts, each
  stopped with SIGTERM before the next; with a fresh audit log, then with one of
  --audit-records decision records 2 h old and 10 min old (remedyd reads records
  back on start, as far as the longest cooldown/budget window, to restore them);
- resident memory: VmRSS (and VmHWM, RssAnon, RssFile) from /proc/PID/status after
  --idle seconds, sampled every 5 s, first with no container on the engine besides
  whatever was already there, then with --containers running busybox containers
  (health check every 5 s, so a few events per second reach the daemon);
- imports: a second daemon, started alongside the first idle one with the same
  configuration plus `python -X importtime`, logs every module it imports to stderr
  over its whole life; the count is those names plus the interpreter's bootstrap
  modules that importtime cannot log (measured on `python -X importtime -c ...`).
  It checks that kubernetes_asyncio, opentelemetry, apscheduler, cel.cli (and the
  `cel` package, whose __init__ imports cel.cli) were never imported. Extension
  modules mapped into the idle daemon are listed from /proc/PID/maps.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import DockerAPI
from _daemon import Remedyd

TARGET_RSS_MB = 64.0
TARGET_READY_S = 1.0
FORBIDDEN = ("kubernetes_asyncio", "opentelemetry", "apscheduler", "cel.cli", "cel")
LABEL = "remedyd-bench-footprint"


def prefill_audit(path: Path, records: int, age_s: float = 7200.0) -> int:
    """An audit log of `records` decisions, `age_s` old, shaped like the executor's."""
    from daemon.audit.log import AuditLog

    stamp = time.time() - age_s
    log = AuditLog(path, fsync=False, clock=lambda: stamp)
    log.open()
    try:
        for i in range(records):
            cid = f"{i % 50:064x}"
            target = {"source": "docker", "kind": "container", "name": f"app-{i % 50}",
                      "id": cid, "namespace": ""}
            log.append("decision", {
                "incident": f"{i:016x}", "rule": "docker-restart-unhealthy", "target": target,
                "actions": [{"name": "docker.restart", "params": {"timeout": "10s"}}],
                "labels": {"severity": "warning"},
                "event": {"id": f"{i}:{cid}:health_status", "source": "docker",
                          "kind": "container", "action": "health_status", "subject": target,
                          "attributes": {"health": "unhealthy", "name": f"app-{i % 50}",
                                         "image": "registry.example/app:1"},
                          "occurred_at": stamp, "synthetic": False},
                "decision": "act", "guards": {"audit": "ok", "dry_run": "ok", "cooldown": "ok",
                                              "budget": "ok", "preflight": "ok"},
                "dry_run": False})
    finally:
        log.close()
    return path.stat().st_size


def timed_starts(daemon: Remedyd, count: int) -> tuple[list[float], list[float], list[float]]:
    """Seconds to ready of each start, and VmRSS and VmHWM (MiB) at that moment."""
    ready_s, rss, hwm = [], [], []
    for i in range(count):
        try:
            ready_s.append(daemon.start())
            status = daemon.status()
            rss.append(mib(status["VmRSS"]))
            hwm.append(mib(status["VmHWM"]))
        finally:
            daemon.stop()
        print(f"  start {i + 1}: {ready_s[-1] * 1e3:.0f} ms (VmRSS then {rss[-1]} MiB, "
              f"peak so far {hwm[-1]} MiB)", flush=True)
    return ready_s, rss, hwm


def seconds(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "n": len(values)}


def mib(kb: int) -> float:
    return round(kb / 1024, 1)


def idle(daemon: Remedyd, seconds: float, label: str) -> dict[str, Any]:
    """Wait `seconds` after start, sampling memory every 5 s; the last sample is the result."""
    rss = []
    t0 = time.monotonic()
    while True:
        elapsed = time.monotonic() - t0
        rss.append(mib(daemon.status()["VmRSS"]))
        if elapsed >= seconds:
            break
        time.sleep(min(5.0, seconds - elapsed))
    final = daemon.status()
    cpu_s = daemon.cpu_seconds()
    print(f"  {label}: VmRSS {mib(final['VmRSS'])} MiB after {seconds:.0f} s "
          f"(peak VmHWM {mib(final['VmHWM'])} MiB, anon {mib(final['RssAnon'])}, "
          f"file {mib(final['RssFile'])}; {final['Threads']} threads)", flush=True)
    return {"VmRSS_mib": mib(final["VmRSS"]), "VmHWM_mib": mib(final["VmHWM"]),
            "RssAnon_mib": mib(final["RssAnon"]), "RssFile_mib": mib(final["RssFile"]),
            "RssShmem_mib": mib(final["RssShmem"]), "threads": final["Threads"],
            "cpu_seconds_since_exec": round(cpu_s, 2),
            "VmRSS_mib_sampled_min_max": [min(rss), max(rss)], "samples": len(rss)}


def imported_modules(stderr_text: str) -> list[str]:
    names = []
    for line in stderr_text.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.append(name)
    return names


def bootstrap_modules() -> set[str]:
    """Modules every interpreter has that -X importtime never logs."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c",
                          "import sys; print('\\n'.join(sys.modules))"],
                         capture_output=True, text=True, timeout=60, check=True)
    return set(out.stdout.split()) - set(imported_modules(out.stderr))


def census(stderr_text: str, mapped: list[str]) -> dict[str, Any]:
    logged = imported_modules(stderr_text)
    boot = bootstrap_modules()
    names = set(logged) | boot
    loaded = {f: sorted(n for n in names if n == f or n.startswith(f + "."))
              for f in FORBIDDEN}
    tops: dict[str, int] = {}
    for name in names:
        top = name.split(".")[0]
        tops[top] = tops.get(top, 0) + 1
    return {"modules_total": len(names), "logged_by_importtime": len(set(logged)),
            "interpreter_bootstrap": len(boot),
            "forbidden_loaded": {k: v for k, v in loaded.items() if v},
            "forbidden_checked": list(FORBIDDEN),
            "cel_extension_mapped": [m for m in mapped if m.startswith("cel/")],
            "extension_modules_mapped": mapped,
            "largest_packages_by_module_count": dict(
                sorted(tops.items(), key=lambda kv: -kv[1])[:12])}


async def with_containers(host: str, count: int, run: Any) -> Any:
    api = DockerAPI(host)
    ids: list[str] = []
    try:
        for old in await api.list_ids(LABEL):
            await api.remove(old)
        config = _common.container_config(
            labels={LABEL: "1", "com.docker.compose.project": "bench",
                    "com.docker.compose.service": "idle"},
            health_cmd="true", interval_s=5.0,
            command=["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"])
        ids = await _common.gather_limited(
            8, [api.run(f"{LABEL}-{os.getpid()}-{i:02d}", config) for i in range(count)])
        return await asyncio.to_thread(run)
    finally:
        await _common.remove_all(api, ids)
        await api.close()


def container_count(host: str) -> int:
    async def count() -> int:
        api = DockerAPI(host)
        try:
            return len(await api.call("GET", "/containers/json") or [])
        finally:
            await api.close()
    return asyncio.run(count())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=7, help="timed starts")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle before RSS")
    parser.add_argument("--containers", type=int, default=20,
                        help="running containers for the second RSS reading")
    parser.add_argument("--audit-records", type=int, default=20_000,
                        help="decision records in the audit log of the second start-up series "
                             "(remedyd reads back up to 20,000 on start)")
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    with _common.dockerd() as (host, started), tempfile.TemporaryDirectory(
            prefix="remedyd-bench-footprint-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        print(f"dockerd: {host} ({'started here' if started else 'already running'})")
        running_before = container_count(host)

        print(f"start-up: exec -> /readyz 200, {args.starts} starts", flush=True)
        ready_s, rss_ready, hwm_ready = timed_starts(Remedyd(work / "starts", host), args.starts)
        big_audit: dict[str, Any] = {}
        for label, age_s in (("2h_old", 7200.0), ("10min_old", 600.0)):
            big = work / f"audit-{label}" / "audit.jsonl"
            size = prefill_audit(big, args.audit_records, age_s)
            print(f"start-up with an audit log of {args.audit_records:,} decision records "
                  f"({size / 1e6:.1f} MB) {age_s / 60:g} min old, {args.starts} starts",
                  flush=True)
            big_s, big_rss, big_hwm = timed_starts(
                Remedyd(work / f"audit-{label}", host, audit=big), args.starts)
            big_audit[label] = {"audit_records": args.audit_records, "audit_bytes": size,
                                "age_s": age_s, **seconds(big_s),
                                "VmRSS_mib_at_ready_median": statistics.median(big_rss),
                                "VmHWM_mib_at_ready_median": statistics.median(big_hwm)}

        print(f"idle {args.idle:.0f} s with Docker only ({running_before} running containers), "
              "plus a -X importtime twin for the module census", flush=True)
        plain = Remedyd(work / "idle", host)
        twin = Remedyd(work / "census", host, python_flags=("-X", "importtime"))
        try:
            plain.start()
            twin.start()
            idle_docker_only = idle(plain, args.idle, "docker only")
            mapped = plain.extension_modules()
        finally:
            plain.stop()
            twin.stop()
        modules = census(twin.log_path.read_text(errors="replace"), mapped)

        print(f"idle {args.idle:.0f} s with {args.containers} more running containers",
              flush=True)
        busy = Remedyd(work / "containers", host)

        def run_busy() -> dict[str, Any]:
            try:
                busy.start()
                return idle(busy, args.idle, f"{args.containers} containers")
            finally:
                busy.stop()

        idle_containers = asyncio.run(with_containers(host, args.containers, run_busy))

    ready_median = statistics.median(ready_s)
    rss = idle_docker_only["VmRSS_mib"]
    data = {
        **_common.result_header("footprint", loadavg_before),
        "dockerd_started_by_bench": started,
        "ready_seconds": {**seconds(ready_s),
                          "VmRSS_mib_at_ready_median": statistics.median(rss_ready),
                          "VmHWM_mib_at_ready_median": statistics.median(hwm_ready)},
        "ready_seconds_with_big_audit_log": big_audit,
        "idle_docker_only": {"running_containers": running_before, **idle_docker_only},
        "idle_with_containers": {"running_containers": running_before + args.containers,
                                 **idle_containers},
        "imports": modules,
        "targets": {"rss_mib": TARGET_RSS_MB, "ready_s": TARGET_READY_S},
        "meets_rss_target": rss <= TARGET_RSS_MB,
        "meets_ready_target": ready_median <= TARGET_READY_S,
    }
    path = _common.write_results("footprint", data)
    forbidden = modules["forbidden_loaded"]
    print()
    print(f"exec -> /readyz 200: median {ready_median * 1e3:.0f} ms of {args.starts} "
          f"(min {min(ready_s) * 1e3:.0f}, max {max(ready_s) * 1e3:.0f}; target <= "
          f"{TARGET_READY_S * 1e3:.0f} ms: {'met' if data['meets_ready_target'] else 'MISSED'})")
    for label, series in big_audit.items():
        print(f"  with an audit log of {args.audit_records:,} decision records, "
              f"{label.replace('_', ' ')}: median {series['median'] * 1e3:.0f} ms, VmRSS "
              f"{series['VmRSS_mib_at_ready_median']} MiB, peak "
              f"{series['VmHWM_mib_at_ready_median']} MiB")
    print(f"idle VmRSS after {args.idle:.0f} s, Docker only: {rss} MiB (target <= "
          f"{TARGET_RSS_MB:g}: {'met' if data['meets_rss_target'] else 'MISSED'}); with "
          f"{args.containers} containers: {idle_containers['VmRSS_mib']} MiB")
    print(f"modules imported: {modules['modules_total']} "
          f"({modules['logged_by_importtime']} logged by -X importtime + "
          f"{modules['interpreter_bootstrap']} interpreter bootstrap)")
    print("never imported: " + ", ".join(f for f in FORBIDDEN if f not in forbidden)
          + ("" if not forbidden else f"; IMPORTED: {forbidden}"))
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
