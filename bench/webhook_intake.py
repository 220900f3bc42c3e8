"""Alertmanager webhook intake: alerts/s remedyd accepts on one core, with auth and
de-duplication.

    .venv/bin/python bench/webhook_intake.py [--seconds 10] [--alerts 10] [--connections 16]
                                            [--repeat 0.1] [--runs 3]

The server is a separate process pinned to one CPU (sched_setaffinity): remedyd's
webhook routes as the daemon plugs them (WebhooksIntegration -> build_app -> serve,
its aiohttp server, bearer-token auth, the de-duplication set, the engine's Bus),
with a task taking events off the bus as the engine loop does (no rule evaluation:
engine_throughput.py measures that). The client is this process (aiohttp, loopback,
`--connections` keep-alive connections, pinned to another CPU where there is one):
each POST carries `--alerts` alerts shaped as Alertmanager's notify/webhook sends
them (version 4), new fingerprints each time, except a `--repeat` share of requests
that re-send an earlier payload (a retry, an HA peer), whose alerts must come back as
duplicates. Reported per run: alerts accepted per second of wall time and per second
of the server's CPU time (utime + stime from /proc), requests/s, request latency
p50/p99, and how many duplicates were recognised; the median over `--runs`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common
import aiohttp

TARGET_ALERTS_PER_S = 5_000
TOKEN = "bench-token-0123456789"
PATH = "/webhooks/alertmanager"


# -- the server (child process) ----------------------------------------------------------

async def serve(port: int) -> None:
    from contextlib import AsyncExitStack

    from daemon.bus import Bus
    from daemon.clients.http import HttpClient
    from daemon.http.server import build_app
    from daemon.http.server import serve as listen
    from daemon.integrations.base import BuildContext
    from daemon.integrations.webhooks import WebhooksIntegration
    from daemon.settings import Settings, WebhookSettings
    from daemon.telemetry.metrics import Metrics

    class View:
        def readiness(self) -> dict[str, Any]:
            return {"ready": True, "checks": {}}

        def rules_view(self) -> list[dict[str, Any]]:
            return []

        def audit_tail(self, limit: int) -> list[dict[str, Any]]:
            return []

    settings = Settings(webhooks=WebhookSettings(alertmanager=True, alertmanager_token=TOKEN))
    metrics = Metrics()
    bus = Bus(metrics, 100_000)

    async def engine() -> None:
        while True:
            await bus.get()

    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(HttpClient())
        plugged = WebhooksIntegration(settings).build(
            BuildContext(emit=bus.emit, metrics=metrics, http=http, stack=stack))
        stop = await listen(build_app(View(), metrics, plugged.routes), "127.0.0.1", port)
        stack.push_async_callback(stop)
        consumer = asyncio.create_task(engine())
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        consumer.cancel()


# -- the client ----------------------------------------------------------------------------

_BATCH = "@@batch@@"


def template(size: int) -> bytes:
    """A payload whose fingerprints and `batch` label a batch number is put into."""
    alerts = []
    for i in range(size):
        labels = {"alertname": "HighErrorRate", "service": f"svc-{i}", "batch": _BATCH,
                  "severity": "critical", "namespace": "shop"}
        alerts.append({
            "status": "firing", "labels": labels,
            "annotations": {"summary": "error ratio above 1%", "runbook_url": "http://x/r"},
            "startsAt": "2026-01-02T03:04:05.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=rate",
            "fingerprint": f"{_BATCH}{i:06x}"})
    return json.dumps({
        "receiver": "remedyd", "status": "firing", "alerts": alerts,
        "groupLabels": {"alertname": "HighErrorRate"}, "commonLabels": {"severity": "critical"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "version": "4",
        "groupKey": '{}:{alertname="HighErrorRate"}', "truncatedAlerts": 0}).encode()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(port: int, pid: int, args: argparse.Namespace, run: int) -> dict[str, Any]:
    rng = random.Random(run)
    url = f"http://127.0.0.1:{port}{PATH}"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    counts = {"accepted": 0, "duplicates": 0, "requests": 0, "errors": 0}
    latencies: list[float] = []
    sent: list[bytes] = []
    batch = run * 10_000_000
    body_template = template(args.alerts)

    def payload(number: int) -> bytes:
        # Cheap, so the client is not what is measured: one replace, not json.dumps.
        return body_template.replace(_BATCH.encode(), b"%010x" % number)

    deadline = 0.0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal batch
        while time.perf_counter() < deadline:
            if sent and rng.random() < args.repeat:
                body = rng.choice(sent)
            else:
                batch += 1
                body = payload(batch)
                if len(sent) < 1000:
                    sent.append(body)
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as answer:
                result = await answer.json()
                if answer.status != 200:
                    counts["errors"] += 1
                    continue
            latencies.append(time.perf_counter() - started)
            counts["requests"] += 1
            counts["accepted"] += result["accepted"]
            counts["duplicates"] += result["duplicates"]

    connector = aiohttp.TCPConnector(limit=args.connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + args.warmup
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
        for key in counts:
            counts[key] = 0
        latencies.clear()
        cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
        deadline = wall_before + args.seconds
        await asyncio.gather(*(worker(session) for _ in range(args.connections)))
        wall = time.perf_counter() - wall_before
        cpu = cpu_seconds(pid) - cpu_before
    return {
        "alerts_per_s": round(counts["accepted"] / wall),
        "alerts_per_cpu_s": round(counts["accepted"] / cpu) if cpu else None,
        "requests_per_s": round(counts["requests"] / wall),
        "server_cpu_share": round(cpu / wall, 3),
        "latency_ms": _common.summary([1000 * s for s in latencies]) if latencies else {},
        **counts,
    }


def pin(cpu: int) -> None:
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {cpu})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--alerts", type=int, default=10, help="alerts per POST")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=float, default=0.1,
                        help="share of POSTs re-sending an earlier payload")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if args.serve:
        pin(cpus[0])
        asyncio.run(serve(args.serve))
        return 0
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=_common.ROOT)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise SystemExit("the webhook server did not start")
        # The client on another CPU where there is one, so it does not share the core.
        pin(cpus[1] if len(cpus) > 1 else cpus[0])
        runs = [asyncio.run(one_run(port, server.pid, args, run)) for run in range(args.runs)]
    finally:
        if server.stdin is not None:
            server.stdin.close()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
    median = {key: statistics.median(r[key] for r in runs)
              for key in ("alerts_per_s", "alerts_per_cpu_s", "requests_per_s",
                          "server_cpu_share")}
    data = {
        **_common.result_header("webhook_intake", loadavg_before),
        "alerts_per_post": args.alerts, "connections": args.connections,
        "repeat_share": args.repeat, "seconds": args.seconds,
        "target_alerts_per_s": TARGET_ALERTS_PER_S, "median": median, "runs": runs,
    }
    path = _common.write_results("webhook_intake", data)
    for i, r in enumerate(runs):
        print(f"run {i + 1}: {r['alerts_per_s']:,} alerts/s accepted "
              f"({r['alerts_per_cpu_s'] or 0:,} per server CPU second, server at "
              f"{r['server_cpu_share']:.0%} of a core), {r['requests_per_s']:,} POSTs/s, "
              f"{r['duplicates']:,} duplicates recognised, {r['errors']} errors, latency "
              f"p50 {r['latency_ms'].get('p50', 0)} ms p99 {r['latency_ms'].get('p99', 0)} ms")
    print(f"median: {median['alerts_per_s']:,.0f} alerts/s (target >= {TARGET_ALERTS_PER_S:,}); "
          f"{median['alerts_per_cpu_s']:,.0f} per server CPU second; summary in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
