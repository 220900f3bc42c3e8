"""Engine throughput: raw Docker events/s through normalise -> Evaluator on one core.

    .venv/bin/python bench/engine_throughput.py [--events 100000] [--runs 7]

What is timed, per raw event, exactly what remedyd's engine loop does minus I/O and
metrics: daemon.sources.docker.normalise (which drops health-probe exec_* noise),
Evaluator.evaluate, Evaluator.due, Evaluator.take_problems and Evaluator.next_due.
No executor, no bus, no audit log.

Workload: a Docker Compose host with 200 containers (90% Compose services with the
labels Compose v2 sets, 10% plain `docker run` ones without them), events shaped
like the Engine API's /events output, in a fixed mix where 5% are
`health_status: unhealthy` (see MIX). Rules: the bundled rules/docker.yaml plus 100
synthetic rules (different actions, label conditions, `for`, `occurrences`,
`match.action`, and 10 rules whose `when` the index cannot narrow to an action).

Baseline: the same rules in a RuleSet whose candidates() hands every rule to every
event (still honouring `source`/`match.action`, which the Evaluator leaves to the
index), so the ratio shows what the (source, kind, action) index buys.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common

from daemon.app import Daemon
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import CompiledRule, RuleSet, load_ruleset
from daemon.settings import Settings
from daemon.sources.docker import normalise

TARGET_EVENTS_PER_S = 20_000
CONTAINERS = 200
COMPOSE_SHARE = 0.9
SEED = 20261127

# Share of each Action in the raw stream (percent). Health probes dominate a host
# with health checks: every probe is exec_create + exec_start + exec_die.
MIX: dict[str, float] = {
    "exec_create": 19, "exec_start": 19, "exec_die": 19,
    "health_status: healthy": 5, "health_status: unhealthy": 5,
    "start": 5, "die": 5, "kill": 5, "stop": 3, "restart": 2, "create": 3,
    "destroy": 2, "attach": 2, "resize": 2, "top": 2,
    "rename": 0.5, "pause": 0.5, "unpause": 0.5, "oom": 0.5,
}
PROBE = "/bin/sh -c wget -qO- http://127.0.0.1:8080/healthz || exit 1"


class FlatRuleSet(RuleSet):
    """No index: every rule of the event's source is a candidate for every event.

    `match.action` is still honoured (as a linear filter), because the Evaluator
    relies on candidates() for it; conditions are all evaluated through CEL.
    """

    def candidates(self, source: str, kind: str, action: str) -> tuple[CompiledRule, ...]:
        return tuple(r for r in self.rules if r.rule.source == source and (
            not r.rule.match.action or action in r.rule.match.action))


# -- workload ----------------------------------------------------------------------------------

def _containers(rng: random.Random) -> list[dict[str, Any]]:
    found = []
    for k in range(CONTAINERS):
        cid = "%064x" % rng.getrandbits(256)
        if k < CONTAINERS * COMPOSE_SHARE:
            project, service = f"proj-{k // 9}", f"svc-{k}"
            team = k % 10
            image = f"registry.example/team-{team}/app-{k}:1.{k % 7}"
            name = f"{project}-{service}-1"
            labels = {
                "com.docker.compose.config-hash": "%064x" % rng.getrandbits(256),
                "com.docker.compose.container-number": "1",
                "com.docker.compose.depends_on": f"svc-{max(0, k - 1)}:service_healthy:false",
                "com.docker.compose.image": "sha256:%064x" % rng.getrandbits(256),
                "com.docker.compose.oneoff": "False",
                "com.docker.compose.project": project,
                "com.docker.compose.project.config_files": f"/srv/{project}/compose.yaml",
                "com.docker.compose.project.working_dir": f"/srv/{project}",
                "com.docker.compose.service": service,
                "com.docker.compose.version": "2.29.7",
                "org.opencontainers.image.source": f"https://git.example/team-{team}/app",
                "org.opencontainers.image.version": f"1.{k % 7}.0",
            }
        else:
            image = rng.choice(["postgres:16", "redis:7-alpine", "nginx:1.27", "busybox:1.36"])
            name = f"{rng.choice(['quirky', 'brave', 'eager'])}_{k}"
            labels = {"maintainer": "ops@example"} if k % 2 else {}
        found.append({"id": cid, "image": image, "attributes": {**labels, "image": image,
                                                                 "name": name}})
    return found


def _extra(action: str, rng: random.Random) -> dict[str, str]:
    verb = action.partition(":")[0]
    if verb == "die":
        return {"exitCode": rng.choice(["0", "1", "137", "143"]),
                "execDuration": str(rng.randint(1, 90000))}
    if verb == "kill":
        return {"signal": rng.choice(["15", "9"])}
    if verb in ("exec_create", "exec_start"):
        return {"execID": "%064x" % rng.getrandbits(256)}
    if verb == "exec_die":
        return {"execID": "%064x" % rng.getrandbits(256), "exitCode": "0"}
    if verb == "resize":
        return {"height": "48", "width": "160"}
    if verb == "rename":
        return {"oldName": "/old-name"}
    return {}


def make_events(n: int, seed: int = SEED) -> list[dict[str, Any]]:
    """n raw events shaped like GET /events output (Docker 20.10+)."""
    rng = random.Random(seed)
    containers = _containers(rng)
    actions, weights = zip(*MIX.items(), strict=True)
    chosen = rng.choices(actions, weights=weights, k=n)
    t_ns = 1_795_750_000_000_000_000
    events = []
    for action in chosen:
        c = rng.choice(containers)
        if action in ("exec_create", "exec_start"):
            action = f"{action}: {PROBE}"
        t_ns += rng.randint(100_000, 1_900_000)  # ~1000 events/s on the host
        events.append({
            "status": action, "id": c["id"], "from": c["image"], "Type": "container",
            "Action": action,
            "Actor": {"ID": c["id"], "Attributes": {**c["attributes"], **_extra(action, rng)}},
            "scope": "local", "time": t_ns // 1_000_000_000, "timeNano": t_ns,
        })
    return events


def synthetic_rules(count: int = 100, seed: int = SEED) -> str:
    """`count` rules in the styles operators write; see the module docstring."""
    rng = random.Random(seed)
    acts = ["docker.restart: {timeout: 10s}", "docker.stop: {timeout: 5s}",
            "docker.kill: {signal: SIGKILL}", "docker.pause: {}",
            "notify.webhook: {message: synthetic}"]
    lines = ["rules:"]
    for i in range(count):
        n = rng.randrange(int(CONTAINERS * COMPOSE_SHARE))
        svc, proj, team = f"svc-{n}", f"proj-{n // 9}", n % 10
        extra: list[str] = []
        style = i % 10
        if style <= 3:
            verb = ["die", "oom", "kill", "stop", "health_status", "start"][i % 6]
            when = (f'event.action == "{verb}" && '
                    f'event.attributes["com.docker.compose.service"] == "{svc}"')
            if verb == "health_status":
                when += ' && event.attributes.health == "unhealthy"'
        elif style <= 5:
            extra.append("match: {kind: container, action: [die, oom]}")
            guard = '"com.docker.compose.project" in event.attributes && ' if i % 2 else ""
            when = (f'{guard}event.attributes["com.docker.compose.project"] == "{proj}" && '
                    '"exitCode" in event.attributes && event.attributes.exitCode != "0"')
        elif style == 6:
            when = (f'event.action in ["die", "kill", "oom"] && '
                    f'event.attributes.image.startsWith("registry.example/team-{team}/")')
            extra.append("occurrences: {count: 3, within: 5m}")
        elif style == 7:
            when = ('event.kind == "container" && event.action == "health_status" && '
                    'event.attributes.health == "unhealthy" && '
                    f'event.attributes["com.docker.compose.project"] == "{proj}"')
            extra += ["for: 30s", "budget: {max: 3, per: 1h}"]
        elif style == 8:
            when = f'event.action == "restart" && event.attributes.name.matches("^{proj}-.*")'
        elif i % 20 == 9:
            # Not narrowed by the index: no top-level `event.action == ...` conjunct.
            when = (f'event.attributes["com.docker.compose.service"] == "{svc}" && '
                    'event.action.startsWith("health_status") && '
                    'event.attributes.health == "unhealthy"')
        else:
            when = ('(event.action == "die" || event.action == "oom") && '
                    'event.attributes["com.docker.compose.oneoff"] == "False" && '
                    f'event.attributes["com.docker.compose.service"] == "{svc}"')
        lines += [f"  - name: synthetic-{i:03d}", "    source: docker",
                  f"    when: '{when}'", f"    cooldown: {rng.choice(['0s', '1m', '10m'])}"]
        lines += [f"    {e}" for e in extra]
        lines += ["    actions:", f"      - {acts[i % len(acts)]}"]
    return "\n".join(lines) + "\n"


def load_rules(workdir: Path) -> RuleSet:
    path = workdir / "synthetic.yaml"
    path.write_text(synthetic_rules())
    catalog = Daemon.action_catalog(Settings())
    ruleset, errors = load_ruleset([_common.ROOT / "rules" / "docker.yaml", path], catalog)
    if errors:
        raise SystemExit("rule errors:\n" + "\n".join(map(str, errors)))
    return ruleset


# -- measurement -------------------------------------------------------------------------------

def run_once(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, Any]:
    """One pass of every event through a fresh Evaluator; the loop of app._engine_loop."""
    evaluator = Evaluator(ruleset)
    decisions = problems = 0
    gc.collect()
    start = time.perf_counter()
    for raw in events:
        now = raw["timeNano"] / 1e9  # stands in for the loop's monotonic clock
        evaluator.next_due()
        event = normalise(raw, now)
        if event is None:
            continue
        decided = evaluator.evaluate(event, now)
        decided += evaluator.due(now)
        decisions += len(decided)
        problems += len(evaluator.take_problems())
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "events_per_s": len(events) / elapsed,
            "decisions": decisions, "evaluation_problems": problems}


def index_stats(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, Any]:
    normalised = [e for raw in events if (e := normalise(raw, 0.0)) is not None]
    counts = [len(ruleset.candidates(e.source, e.kind, e.action)) for e in normalised]
    return {"raw_events": len(events), "after_normalise": len(normalised),
            "with_candidates": sum(1 for c in counts if c),
            "mean_candidates_per_normalised_event": round(sum(counts) / len(counts), 2)}


def measure(name: str, ruleset: RuleSet, events: list[dict[str, Any]],
            runs: int) -> dict[str, Any]:
    run_once(ruleset, events[: len(events) // 10])  # warm-up: caches, CEL, allocator
    results = []
    for i in range(runs):
        result = run_once(ruleset, events)
        results.append(result)
        print(f"  {name:9s} run {i + 1}/{runs}: {result['events_per_s']:>10,.0f} events/s "
              f"({result['decisions']} decisions, {result['evaluation_problems']} "
              "evaluation problems)", flush=True)
    rates = [r["events_per_s"] for r in results]
    return {"median_events_per_s": round(statistics.median(rates)),
            "min_events_per_s": round(min(rates)), "max_events_per_s": round(max(rates)),
            "runs": [{k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}
                     for r in results],
            "decisions_per_run": results[0]["decisions"],
            "evaluation_problems_per_run": results[0]["evaluation_problems"],
            "index": index_stats(ruleset, events)}


def pin_to_one_core() -> int | None:
    try:
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="raw events per run")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per variant (>= 5)")
    args = parser.parse_args()
    cpu = pin_to_one_core()
    events = make_events(args.events)
    no_exec = [e for e in events if not e["Action"].startswith("exec_")]
    with tempfile.TemporaryDirectory(prefix="remedyd-bench-") as tmp:
        indexed = load_rules(Path(tmp))
    flat = FlatRuleSet(rules=indexed.rules, files=indexed.files)
    unindexed = sum(1 for r in indexed.rules if r in indexed._index.get(
        (r.rule.source, r.rule.match.kind, None), ()))
    print(f"engine throughput: {len(indexed.rules)} rules ({unindexed} the index cannot "
          f"narrow), {len(events):,} raw events per run, {args.runs} runs, pinned to CPU {cpu}")
    print("mix (all events):")
    res: dict[str, Any] = {"indexed": measure("indexed", indexed, events, args.runs)}
    res["no_index"] = measure("no-index", flat, events, args.runs)
    print(f"mix without exec_* probe events ({len(no_exec):,} events per run):")
    res["indexed_no_exec"] = measure("indexed", indexed, no_exec, args.runs)
    res["no_index_no_exec"] = measure("no-index", flat, no_exec, args.runs)
    for a, b in (("indexed", "no_index"), ("indexed_no_exec", "no_index_no_exec")):
        if res[a]["decisions_per_run"] != res[b]["decisions_per_run"]:
            print(f"WARNING: {a} and {b} made different numbers of decisions", file=sys.stderr)
    speedup = res["indexed"]["median_events_per_s"] / res["no_index"]["median_events_per_s"]
    speedup_ne = (res["indexed_no_exec"]["median_events_per_s"]
                  / res["no_index_no_exec"]["median_events_per_s"])
    median = res["indexed"]["median_events_per_s"]
    unhealthy = sum(1 for e in events if e["Action"] == "health_status: unhealthy")
    data = {
        "benchmark": "engine_throughput",
        "command": "  ".join(["(.venv/bin/python", *sys.argv]) + ")",
        "machine": _common.machine(),
        "pinned_cpu": cpu,
        "workload": {"raw_events_per_run": len(events), "runs": args.runs, "mix_percent": MIX,
                     "unhealthy_share": round(unhealthy / len(events), 4),
                     "containers": CONTAINERS, "rules": len(indexed.rules),
                     "rules_not_narrowed_by_index": unindexed},
        "results": res,
        "index_speedup": round(speedup, 2),
        "index_speedup_no_exec": round(speedup_ne, 2),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": median >= TARGET_EVENTS_PER_S,
    }
    path = _common.write_results("engine_throughput", data)
    print()
    print(f"median of {args.runs} runs, one core: {median:,} events/s with the index, "
          f"{res['no_index']['median_events_per_s']:,} without -> x{speedup:.2f} "
          f"(target >= {TARGET_EVENTS_PER_S:,}: {'met' if data['meets_target'] else 'MISSED'})")
    print(f"without exec_* noise: {res['indexed_no_exec']['median_events_per_s']:,} vs "
          f"{res['no_index_no_exec']['median_events_per_s']:,} events/s -> x{speedup_ne:.2f}")
    print(f"results: {path.relative_to(_common.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
