"""Side by side: remedyd and a docker-autoheal-style 5 s poller, same dockerd, same faults.

    .venv/bin/python bench/autoheal_compare.py [--containers 20] [--faults-per-container 5]
                                               [--interval 5] [--health-interval 1]

Latency of one fault, for both healers alike = the `timeNano` of dockerd's `start` event
that brings the container back minus the `timeNano` of its `health_status: unhealthy`
event (both dockerd's stamps, so neither healer is timed by itself). Also reported:
unhealthy -> dockerd's `kill` event (the restart taking effect).

The poller behaves as docker-autoheal does with AUTOHEAL_INTERVAL=5 and
AUTOHEAL_CONTAINER_LABEL=autoheal: list the containers that are unhealthy
(`GET /containers/json?filters={"health":["unhealthy"],"label":["autoheal=true"]}`),
restart each one after the other, sleep the interval, again. It runs in this process,
over the same unix socket. As autoheal's, its restarts are one at a time and each
returns once dockerd has the container running again, so containers found unhealthy in
the same poll wait for each other's restart (reported too: unhealthy -> the poller's
restart request).

Setup: N busybox containers (`--network none`) whose health check fails while
/tmp/sick exists (interval --health-interval, retries 1), in pairs: one of each pair
labelled remedyd.enable=true (remedyd's, which runs with `[docker] scope = "labelled"`),
the other autoheal=true (the poller's). Neither healer can act on the other's half: the
poller lists autoheal=true only, and remedyd's scope guard refuses a container without
its label (it still decides, and audits the refusal, for the poller's half). A fault is
`docker exec C touch /tmp/sick`; each round both containers of a pair get it at the same
moment (after the same random pause, up to one polling interval, so faults are spread
over the poller's period rather than all waiting for one poll), and the next round
starts once both are healthy again: same containers, same faults, same load for both
healers. Both restart with t=0 (the bench's rule and the poller's stop timeout), so the
container's own shutdown time is not counted on either side. remedyd's [safety]
coalesce_window is 0 (it folds a burst of repeats within 5 s into one incident; here a
fault comes only once the last one is healed, which may be sooner than 5 s after it).
The run checks, and reports, that no container was restarted by the healer it does not
belong to and that each fault brought one restart.

Bounded: every wait has a timeout, the fault phase a deadline, containers are removed
at the end; traffic stays on unix sockets and loopback. Uses $DOCKER_HOST if it answers,
else scripts/stack's dockerd (started here, and stopped again, only if nothing answers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
import aiohttp
from _common import DockerAPI, summary, wall_ns
from _daemon import Remedyd
from latency import COMMAND, HEALTH_CMD, HEALTHY, REMEDY_EVENTS, UNHEALTHY, WHEN, Tracker

LABEL = "remedyd-bench-autoheal"
RULE_NAME = "bench-restart-unhealthy"
POLLER_LABEL = "autoheal=true"
HEALERS = ("remedyd", "poller")
HEALER_LABELS = {"remedyd": {"remedyd.enable": "true"}, "poller": {"autoheal": "true"}}


def bench_rule(run_id: str, stop_timeout_s: int) -> str:
    """latency.py's rule (the bundled unhealthy condition, no cooldown, a large budget),
    on this run's containers only: the engine may be shared with other test runs."""
    mine = f'"{LABEL}" in event.attributes && event.attributes["{LABEL}"] == "{run_id}"'
    return f"""rules:
  - name: {RULE_NAME}
    source: docker
    when: '{WHEN} && {mine}'
    cooldown: 0s
    budget: {{max: 100000, per: 1h}}
    actions:
      - docker.restart: {{timeout: {stop_timeout_s}s}}
"""


async def leftovers(api: DockerAPI) -> list[str]:
    """Containers of an earlier run whose process is gone (not those of a run going on)."""
    found = await api.call("GET", "/containers/json",
                           params={"all": "1", "filters": json.dumps({"label": [LABEL]})})
    gone = []
    for container in found or []:
        pid = str((container.get("Labels") or {}).get(LABEL, "")).partition("-")[0]
        try:
            os.kill(int(pid), 0)
        except (ValueError, ProcessLookupError):
            gone.append(str(container["Id"]))
        except PermissionError:  # alive, someone else's
            pass
    return gone


class AutohealPoller:
    """docker-autoheal's loop over the Engine API: list unhealthy, restart each, sleep."""

    def __init__(self, api: DockerAPI, interval_s: float, label: str | None,
                 stop_timeout_s: int, run_label: str) -> None:
        self.api = api
        self.interval_s = interval_s
        self.filters: dict[str, list[str]] = {"health": ["unhealthy"]}
        if label is not None:  # AUTOHEAL_CONTAINER_LABEL=all lists every container
            self.filters["label"] = [label]
        # And this run's containers only: the engine may be shared with other test runs.
        self.filters.setdefault("label", []).append(run_label)
        self.stop_timeout_s = stop_timeout_s
        self.restarted: list[tuple[str, int]] = []  # (id, wall-clock ns of the request)
        self.errors: list[str] = []
        self.polls = 0
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name="autoheal-poller")

    async def _loop(self) -> None:
        params = {"filters": json.dumps(self.filters)}
        while True:
            try:
                listed = await self.api.call("GET", "/containers/json", params=params) or []
                for container in listed:  # one after the other, as autoheal's shell loop
                    cid = str(container["Id"])
                    self.restarted.append((cid, wall_ns()))
                    await self.api.restart(cid, self.stop_timeout_s)
            except (RuntimeError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                self.errors.append(str(exc)[:200])  # autoheal logs and carries on
            self.polls += 1
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Fault:
    healer: str
    cid: str
    pair: int
    round: int
    unhealthy_ns: int = 0
    kill_ns: int = 0
    start_ns: int = 0
    # die events between unhealthy and healthy again: 1 unless restarted twice (a restart
    # with t=0 has two kill events, SIGTERM then SIGKILL, and one die)
    dies: int = 0
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.error is None and self.start_ns > 0


async def inject(api: DockerAPI, tracker: Tracker, fault: Fault, within_s: float) -> None:
    cid = fault.cid
    try:
        mark = tracker.mark(cid)
        await api.exec(cid, ["touch", "/tmp/sick"])
        i, unhealthy = await tracker.wait(cid, mark, (UNHEALTHY,), within=20)
        fault.unhealthy_ns = unhealthy.time_nano
        i, kill = await tracker.wait(cid, i + 1, REMEDY_EVENTS, within=within_s)
        fault.kill_ns = kill.time_nano
        i, started = await tracker.wait(cid, i + 1, ("start",), within=within_s)
        fault.start_ns = started.time_nano
        end, _ = await tracker.wait(cid, i + 1, (HEALTHY,), within=30)
        fault.dies = sum(1 for seen in tracker.events[cid][mark:end] if seen.action == "die")
    except TimeoutError:
        fault.error = "timeout"
    except (RuntimeError, OSError, aiohttp.ClientError) as exc:
        fault.error = str(exc)[:200]


async def run_faults(api: DockerAPI, tracker: Tracker, pairs: list[dict[str, str]],
                     rounds: int, spread_s: float, within_s: float,
                     deadline_s: float) -> list[Fault]:
    faults: list[Fault] = []
    rng = random.Random(11)
    # Drawn up front: the schedule does not depend on how the run goes.
    pauses = [[rng.uniform(0, spread_s) for _ in range(rounds)] for _ in pairs]

    async def pair_worker(p: int, pair: dict[str, str]) -> None:
        for r in range(rounds):
            # Spread over a polling period: from the probes' phase, the poller's, the others'.
            await asyncio.sleep(pauses[p][r])
            both = [Fault(healer, pair[healer], p, r) for healer in HEALERS]
            faults.extend(both)
            await asyncio.gather(*(inject(api, tracker, f, within_s) for f in both))
            if any(f.error for f in both):
                return  # a container in an unknown state gets no further fault

    workers = [asyncio.create_task(pair_worker(p, pair)) for p, pair in enumerate(pairs)]
    if not await _common.within_deadline(workers, deadline_s):
        for fault in faults:
            if not fault.complete and fault.error is None:
                fault.error = "deadline"
    return faults


def remedyd_restarts(daemon: Remedyd) -> tuple[dict[str, int], dict[str, int]]:
    """(decisions by status, acted-on container ids -> count) from remedyd's audit."""
    statuses: dict[str, int] = {}
    acted: dict[str, int] = {}
    for record in daemon.audit():
        if record["kind"] != "decision" or record.get("rule") != RULE_NAME:
            continue
        key = record["decision"] + (f"/{record['suppressed_by']}"
                                    if record.get("suppressed_by") else "")
        statuses[key] = statuses.get(key, 0) + 1
        if record["decision"] == "act":
            cid = record["event"]["subject"]["id"]
            acted[cid] = acted.get(cid, 0) + 1
    return statuses, acted


async def create_pairs(api: DockerAPI, tracker: Tracker, count: int, run_id: str,
                       interval_s: float) -> list[dict[str, str]]:
    names: list[tuple[int, str, str]] = []
    for p in range(count):
        names += [(p, healer, f"{LABEL}-{run_id}-{p:02d}-{healer}") for healer in HEALERS]
    configs = {healer: _common.container_config(
        labels={LABEL: run_id, **HEALER_LABELS[healer]}, health_cmd=HEALTH_CMD,
        interval_s=interval_s, command=COMMAND) for healer in HEALERS}
    ids = await _common.gather_limited(8, [api.run(n, configs[h]) for _, h, n in names])
    pairs: list[dict[str, str]] = [{} for _ in range(count)]
    for (p, healer, _), cid in zip(names, ids, strict=True):
        pairs[p][healer] = cid
    await asyncio.gather(*(tracker.wait(cid, 0, (HEALTHY,), within=60) for cid in ids))
    return pairs


async def bench(args: argparse.Namespace, docker_host: str, workdir: Path) -> dict[str, Any]:
    api = DockerAPI(docker_host)
    run_id = f"{os.getpid()}-{int(time.time())}"
    tracker = Tracker(api, run_id, label=LABEL)
    poller = AutohealPoller(api, args.interval, POLLER_LABEL, args.stop_timeout,
                            f"{LABEL}={run_id}")
    daemon: Remedyd | None = None
    ids: list[str] = []
    try:
        version = await api.version()
        await _common.remove_all(api, await leftovers(api))
        tracker.start()
        await asyncio.wait_for(tracker.ready.wait(), 10)
        t0 = time.monotonic()
        pairs = await create_pairs(api, tracker, args.containers // 2, run_id,
                                   args.health_interval)
        ids = [cid for pair in pairs for cid in pair.values()]
        print(f"{len(ids)} containers healthy in {time.monotonic() - t0:.1f}s", flush=True)
        daemon = Remedyd(
            workdir / "remedyd", docker_host, rules=bench_rule(run_id, args.stop_timeout),
            extra={"docker": {"scope": "labelled"},
                   "safety": {"max_actions": 100000, "max_actions_per": "1h",
                              "coalesce_window": "0s"},
                   "log": {"level": "INFO"}})
        await asyncio.to_thread(daemon.start)
        poller.start()
        print(f"remedyd ready (pid {daemon.pid}, scope labelled), poller every "
              f"{args.interval:g} s on {POLLER_LABEL}; {len(pairs)} pairs x "
              f"{args.faults_per_container} rounds", flush=True)
        t0 = time.monotonic()
        faults = await run_faults(api, tracker, pairs, args.faults_per_container,
                                  spread_s=args.interval, within_s=args.interval + 30,
                                  deadline_s=args.deadline)
        phase_s = time.monotonic() - t0
        await poller.stop()
        await asyncio.sleep(0.5)  # the last audit records
        statuses, acted = await asyncio.to_thread(remedyd_restarts, daemon)
        if any(f.error for f in faults if f.healer == "remedyd"):
            print("remedyd missed a fault; its log ends:\n"
                  + daemon.log_path.read_text(errors="replace")[-4000:], file=sys.stderr)
    finally:
        await poller.stop()
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        await tracker.stop()
        await _common.remove_all(api, ids)
        await api.close()

    side = {healer: {pair[healer] for pair in pairs} for healer in HEALERS}
    done = {h: [f for f in faults if f.healer == h and f.complete] for h in HEALERS}
    per_healer: dict[str, Any] = {}
    for healer in HEALERS:
        mine = [f for f in faults if f.healer == healer]
        per_healer[healer] = {
            "faults": len(mine), "remedied": len(done[healer]),
            "failed": [{"cid": f.cid[:12], "round": f.round, "error": f.error}
                       for f in mine if not f.complete],
            "unhealthy_to_start_ms": summary([(f.start_ns - f.unhealthy_ns) / 1e6
                                              for f in done[healer]]),
            "unhealthy_to_kill_ms": summary([(f.kill_ns - f.unhealthy_ns) / 1e6
                                             for f in done[healer]]),
            "faults_restarted_more_than_once": sum(1 for f in done[healer] if f.dies > 1),
        }
    # The poller's own moment of acting: its polling delay, without dockerd's restart.
    sent = [min((t for cid, t in poller.restarted if cid == f.cid and t >= f.unhealthy_ns),
                default=None) for f in done["poller"]]
    per_healer["poller"]["unhealthy_to_restart_request_ms"] = summary(
        [(t - f.unhealthy_ns) / 1e6 for f, t in zip(done["poller"], sent, strict=True)
         if t is not None])
    crossed = {
        "poller_restarts_of_remedyd_containers": sum(
            1 for cid, _ in poller.restarted if cid in side["remedyd"]),
        "remedyd_restarts_of_poller_containers": sum(
            n for cid, n in acted.items() if cid in side["poller"]),
    }
    ratio: dict[str, float | None] = {}
    for measure, suffix in (("unhealthy_to_start_ms", ""), ("unhealthy_to_kill_ms", "_kill")):
        for q in ("p50", "p99"):
            r, p = (per_healer[h][measure].get(q) for h in HEALERS)
            ratio[q + suffix] = round(p / r, 1) if r and p else None
    return {
        "docker": {"host": docker_host, "server_version": version.get("Version")},
        "healers": per_healer,
        "ratio_poller_over_remedyd": ratio,
        "never_acted_on_the_other_half": not any(crossed.values()),
        **crossed,
        "remedyd_audit_decisions": statuses,
        "poller": {"polls": poller.polls, "restarts": len(poller.restarted),
                   "errors": poller.errors[:5]},
        "fault_phase_s": round(phase_s, 1),
    }


def line(label: str, stats: dict[str, Any]) -> str:
    if not stats.get("n"):
        return f"  {label:34s} (no samples)"
    return (f"  {label:34s} p50 {stats['p50']:8.1f}  p99 {stats['p99']:8.1f}  "
            f"max {stats['max']:8.1f}  (n={stats['n']})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=20,
                        help="containers in all, half for each healer (even, 2..40)")
    parser.add_argument("--faults-per-container", type=int, default=5)
    parser.add_argument("--interval", type=float, default=5.0,
                        help="the poller's AUTOHEAL_INTERVAL, seconds")
    parser.add_argument("--health-interval", type=float, default=1.0,
                        help="seconds between health probes of each container")
    parser.add_argument("--stop-timeout", type=int, default=0,
                        help="restart t= of both healers, seconds")
    parser.add_argument("--deadline", type=float, default=300.0,
                        help="seconds for the whole fault phase")
    parser.add_argument("--out", default="autoheal_compare",
                        help="results file name under bench/results/ (without .json)")
    args = parser.parse_args()
    if args.containers % 2 or not 2 <= args.containers <= 40:
        parser.error("--containers: an even number from 2 to 40")
    if not 1 <= args.faults_per_container <= 50:
        parser.error("--faults-per-container: 1 to 50")
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    with _common.dockerd() as (host, started), tempfile.TemporaryDirectory(
            prefix="remedyd-bench-autoheal-", dir="/var/tmp") as tmp:
        print(f"dockerd: {host} ({'started here' if started else 'already running'})")
        result = asyncio.run(bench(args, host, Path(tmp)))
    data = {
        **_common.result_header(args.out, loadavg_before),
        "settings": {"containers": args.containers,
                     "faults_per_container": args.faults_per_container,
                     "poller_interval_s": args.interval,
                     "health_interval_s": args.health_interval, "health_retries": 1,
                     "stop_timeout_s": args.stop_timeout, "poller_label": POLLER_LABEL,
                     "remedyd_scope": "labelled"},
        **result,
    }
    path = _common.write_results(args.out, data)
    print()
    for healer in HEALERS:
        h = result["healers"][healer]
        print(f"{healer}: {h['remedied']}/{h['faults']} faults remedied")
        print(line("unhealthy -> start (back up), ms", h["unhealthy_to_start_ms"]))
        print(line("unhealthy -> kill, ms", h["unhealthy_to_kill_ms"]))
        if "unhealthy_to_restart_request_ms" in h:
            print(line("unhealthy -> restart request, ms", h["unhealthy_to_restart_request_ms"]))
    ratio = result["ratio_poller_over_remedyd"]
    print(f"ratio poller / remedyd (unhealthy -> start): p50 x{ratio['p50']}, "
          f"p99 x{ratio['p99']}; (unhealthy -> kill): p50 x{ratio['p50_kill']}, "
          f"p99 x{ratio['p99_kill']}")
    print(f"acted on the other healer's containers: poller "
          f"{result['poller_restarts_of_remedyd_containers']}, remedyd "
          f"{result['remedyd_restarts_of_poller_containers']}; remedyd decisions "
          f"{result['remedyd_audit_decisions']}")
    print(f"results: {path}")
    ok = result["never_acted_on_the_other_half"] and all(
        h["remedied"] == h["faults"] for h in result["healers"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
