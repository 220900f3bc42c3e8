"""KPI path latency: a real Prometheus (1 s scrapes) over a fault-injectable service,
remedyd polling a `source: kpi` rule every second, and a notification as the action.

Two figures per breached series (one per `service` label, faults injected one after
another so each is its own incident):
- answer -> action (`--for 0`): from the moment Prometheus's answer that shows the
  breach left a recording proxy in front of it, to the action's request arriving at the
  receiver: remedyd's own share (parse, events, engine, guards, executor, request);
  with `--for N`, from the answer carrying the sample the decision was made on;
- fault -> action: from the error ratio turned up in the service to that request: what
  an operator waits, scrape interval, rate() window and poll interval included.

    .venv/bin/python bench/kpi_latency.py [--services 40] [--stagger 0.25] [--for 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
from _common import STACK, result_header, summary, write_results
from _daemon import Remedyd, free_port
from aiohttp import ClientSession, web
from prometheus_client import CollectorRegistry, Counter, generate_latest

THRESHOLD = 0.05
QUERY = ('sum by (service) (rate(http_requests_total{code=~"5.."}[3s])) '
         '/ sum by (service) (rate(http_requests_total[3s]))')
TICK = 0.1
RPS = 100


class Service:
    """http_requests_total{service, code} of `RPS` simulated requests a second each."""

    def __init__(self, names: list[str]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("http_requests", "Requests.", ["service", "code"],
                                registry=self.registry)
        self.ratio = dict.fromkeys(names, 0.0)
        self.faulted_at: dict[str, float] = {}

    def tick(self) -> None:
        for name, ratio in self.ratio.items():
            count = int(RPS * TICK)
            errors = round(count * ratio)
            self.requests.labels(name, "500").inc(errors)
            self.requests.labels(name, "200").inc(count - errors)

    def fault(self, name: str) -> None:
        self.ratio[name] = 0.5
        self.faulted_at[name] = time.time()

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), content_type="text/plain")


class Proxy:
    """Forwards remedyd's queries to Prometheus; notes when each answer left and which
    services it showed above the threshold."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.answers: list[tuple[float, set[str]]] = []
        self.session: ClientSession | None = None

    async def query(self, request: web.Request) -> web.StreamResponse:
        assert self.session is not None
        form = await request.post()
        async with self.session.post(f"{self.upstream}/api/v1/query",
                                     data=dict(form)) as answer:
            body = await answer.read()
            status = answer.status
        breached: set[str] = set()
        if form.get("query") == QUERY and status == 200:
            for series in json.loads(body)["data"]["result"]:
                value = float(series["value"][1])
                if value == value and value > THRESHOLD:
                    breached.add(series["metric"].get("service", ""))
        response = web.Response(body=body, status=status, content_type="application/json")
        await response.prepare(request)
        await response.write_eof()
        self.answers.append((time.time(), breached))
        return response


class Receiver:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.all_in = asyncio.Event()
        self.arrived: dict[str, float] = {}
        # The evaluation time of the sample the decision was made on.
        self.began: dict[str, float] = {}

    async def hook(self, request: web.Request) -> web.Response:
        at = time.time()
        body = await request.json()
        labels = body["event"]["attributes"].get("labels") or {}
        self.arrived.setdefault(labels.get("service", ""), at)
        self.began.setdefault(labels.get("service", ""), float(body["event"]["occurred_at"]))
        if len(self.arrived) >= self.expected:
            self.all_in.set()
        return web.Response(text="ok")


async def serve(app: web.Application, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


def stack(*args: str) -> str:
    done = subprocess.run([str(STACK / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=600, check=False, env={**os.environ, "PROM_WAIT_SCRAPE": "1"})
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)}: {done.stderr}")
    return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""


def rule(for_s: float) -> str:
    return f"""
rules:
  - name: error-ratio
    source: kpi
    query: '{QUERY}'
    interval: 1s
    for: {for_s:g}s
    when: event.attributes.value > {THRESHOLD}
    actions:
      - notify.webhook: {{timeout: 5s}}
"""


async def run(args: argparse.Namespace) -> dict[str, Any]:
    names = [f"s{i}" for i in range(args.services)]
    service, receiver = Service(names), Receiver(len(names))
    service_port, proxy_port, hook_port, prom_port = (free_port() for _ in range(4))
    app = web.Application()
    app.router.add_get("/metrics", service.metrics)
    runners = [await serve(app, service_port)]

    async def ticking() -> None:
        while True:
            service.tick()
            await asyncio.sleep(TICK)

    ticker = asyncio.create_task(ticking())
    prometheus = await asyncio.to_thread(stack, "prometheus-up", str(prom_port),
                                         f"127.0.0.1:{service_port}")
    proxy = Proxy(prometheus)
    proxy.session = ClientSession()
    papp = web.Application()
    papp.router.add_post("/api/v1/query", proxy.query)
    runners.append(await serve(papp, proxy_port))
    happ = web.Application()
    happ.router.add_post("/hook", receiver.hook)
    runners.append(await serve(happ, hook_port))
    workdir = Path(tempfile.mkdtemp(prefix="kpi-latency-"))
    daemon = Remedyd(workdir, None, rules=rule(args.for_s), extra={
        "prometheus": {"url": f"http://127.0.0.1:{proxy_port}", "interval": "1s"},
        "notify": {"webhook_url": f"http://127.0.0.1:{hook_port}/hook",
                   "max_notifications": 100_000}})
    try:
        await asyncio.to_thread(daemon.start)
        # Every series answered below the threshold before the first fault.
        deadline = time.time() + 30
        while not any(len(breached) == 0 and at > time.time() - 1
                      for at, breached in proxy.answers[-1:]) or len(
                          [a for a in proxy.answers if a[0] > deadline - 30]) < 3:
            if time.time() > deadline:
                raise RuntimeError("no healthy answers from Prometheus")
            await asyncio.sleep(0.1)
        for name in names:
            service.fault(name)
            await asyncio.sleep(args.stagger)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), 30 + args.for_s)
        answer_to_action, fault_to_action = [], []
        for name in names:
            arrived = receiver.arrived.get(name)
            if arrived is None:
                continue
            fault_to_action.append((arrived - service.faulted_at[name]) * 1000)
            # The answer carrying the sample the decision was made on (after `for`).
            carried = [at for at, breached in proxy.answers
                       if name in breached and receiver.began[name] <= at <= arrived]
            if carried:
                answer_to_action.append((arrived - carried[0]) * 1000)
        return {"services": len(names), "acted": len(receiver.arrived),
                "for_s": args.for_s, "stagger_s": args.stagger,
                "answer_to_action_ms": summary(answer_to_action),
                "fault_to_action_ms": summary(fault_to_action),
                "query_s": daemon.metric("remedyd_kpi_query_duration_seconds_sum")
                / max(1.0, daemon.metric("remedyd_kpi_query_duration_seconds_count"))}
    finally:
        daemon.stop()
        ticker.cancel()
        await proxy.session.close()
        for runner in runners:
            await runner.cleanup()
        await asyncio.to_thread(stack, "prometheus-down", str(prom_port))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=40)
    parser.add_argument("--stagger", type=float, default=0.25)
    parser.add_argument("--for", dest="for_s", type=float, default=0.0)
    parser.add_argument("--out", default="kpi_latency")
    args = parser.parse_args()
    load = Path("/proc/loadavg").read_text().split()[:3]
    data = asyncio.run(run(args))
    data = {**result_header(args.out, load), "command": " ".join(sys.argv), **data}
    path = write_results(args.out, data)
    a = data["answer_to_action_ms"]
    f = data["fault_to_action_ms"]
    print(f"{data['acted']}/{data['services']} breaches acted on (for {args.for_s:g}s)")
    print(f"answer -> action: p50 {a.get('p50')} ms, p99 {a.get('p99')} ms, max {a.get('max')}")
    print(f"fault  -> action: p50 {f.get('p50')} ms, p99 {f.get('p99')} ms, max {f.get('max')}")
    print(f"mean KPI query {data['query_s'] * 1000:.1f} ms; results: {path}")


if __name__ == "__main__":
    assert _common  # puts the repository on sys.path
    main()
