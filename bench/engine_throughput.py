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
import json
import os
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common

from daemon.app import Daemon
from daemon.core.conditions import ConditionError, make_context
from daemon.engine.evaluator import Evaluator, event_variables
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
        cid = f"{rng.getrandbits(256):064x}"
        if k < CONTAINERS * COMPOSE_SHARE:
            project, service = f"proj-{k // 9}", f"svc-{k}"
            team = k % 10
            image = f"registry.example/team-{team}/app-{k}:1.{k % 7}"
            name = f"{project}-{service}-1"
            labels = {
                "com.docker.compose.config-hash": f"{rng.getrandbits(256):064x}",
                "com.docker.compose.container-number": "1",
                "com.docker.compose.depends_on": f"svc-{max(0, k - 1)}:service_healthy:false",
                "com.docker.compose.image": f"sha256:{rng.getrandbits(256):064x}",
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
        return {"execID": f"{rng.getrandbits(256):064x}"}
    if verb == "exec_die":
        return {"execID": f"{rng.getrandbits(256):064x}", "exitCode": "0"}
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


def synthetic_rules(count: int = 100, seed: int = SEED, narrowable: bool = False) -> str:
    """`count` rules in the styles operators write; see the module docstring.

    narrowable: write the 10 rules the index cannot narrow in an equivalent form
    that it can (same matches), to show what such rules cost.
    """
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
                    '"exitCode" in event.attributes && event.attributes.exitCode == "137"')
        elif style == 6:
            when = (f'event.action in ["die", "kill", "oom"] && '
                    f'event.attributes.image.startsWith("registry.example/team-{team}/app-{n}:")')
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
            verb = ('event.action == "health_status"' if narrowable
                    else 'event.action.startsWith("health_status")')
            when = (f'event.attributes["com.docker.compose.service"] == "{svc}" && '
                    f'{verb} && event.attributes.health == "unhealthy"')
        else:
            verb = ('event.action in ["die", "oom"]' if narrowable
                    else '(event.action == "die" || event.action == "oom")')
            when = (f'{verb} && event.attributes["com.docker.compose.oneoff"] == "False" && '
                    f'event.attributes["com.docker.compose.service"] == "{svc}"')
        lines += [f"  - name: synthetic-{i:03d}", "    source: docker",
                  f"    when: '{when}'", f"    cooldown: {rng.choice(['0s', '1m', '10m'])}"]
        lines += [f"    {e}" for e in extra]
        lines += ["    actions:", f"      - {acts[i % len(acts)]}"]
    return "\n".join(lines) + "\n"


def load_rules(workdir: Path, narrowable: bool = False) -> RuleSet:
    path = workdir / "synthetic.yaml"
    path.write_text(synthetic_rules(narrowable=narrowable))
    catalog = Daemon.action_catalog(Settings())
    ruleset, errors = load_ruleset([_common.ROOT / "rules" / "docker.yaml", path], catalog)
    if errors:
        raise SystemExit("rule errors:\n" + "\n".join(map(str, errors)))
    return ruleset


# -- measurement -------------------------------------------------------------------------------

def run_once(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, Any]:
    """One pass of every event through a fresh Evaluator; the loop of app._engine_loop."""
    evaluator = Evaluator(ruleset)
    decisions = problems = deciding_events = 0
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
        deciding_events += bool(decided)
        problems += len(evaluator.take_problems())
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "events_per_s": len(events) / elapsed,
            "decisions": decisions, "events_with_decisions": deciding_events,
            "evaluation_problems": problems}


def index_stats(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, Any]:
    normalised = [e for raw in events if (e := normalise(raw, 0.0)) is not None]
    counts = [len(ruleset.candidates(e.source, e.kind, e.action)) for e in normalised]
    return {"raw_events": len(events), "after_normalise": len(normalised),
            "with_candidates": sum(1 for c in counts if c),
            "mean_candidates_per_normalised_event": round(sum(counts) / len(counts), 2)}


def breakdown(ruleset: RuleSet, events: list[dict[str, Any]]) -> dict[str, float]:
    """Mean cost of each step, timed apart, on the indexed rule set (microseconds)."""
    t0 = time.perf_counter()
    normalised = [normalise(raw, 0.0) for raw in events]
    t_normalise = (time.perf_counter() - t0) / len(events)
    work = [(e, c) for e in normalised if e is not None and (
        c := ruleset.candidates(e.source, e.kind, e.action))]
    t0 = time.perf_counter()
    contexts = [make_context({"event": event_variables(e)}) for e, _ in work]
    t_context = (time.perf_counter() - t0) / len(work)
    calls = failed = 0
    t0 = time.perf_counter()
    for (_, candidates), context in zip(work, contexts, strict=True):
        for compiled in candidates:
            calls += 1
            try:
                compiled.condition.evaluate(context)
            except ConditionError:
                failed += 1
    t_eval = (time.perf_counter() - t0) / calls
    attributes = sum(len(e.attributes) for e, _ in work) / len(work)
    return {"normalise_us_per_raw_event": round(t_normalise * 1e6, 2),
            "context_us_per_event_with_candidates": round(t_context * 1e6, 2),
            "mean_attributes_per_event_with_candidates": round(attributes, 1),
            "condition_us_per_evaluation": round(t_eval * 1e6, 2),
            "evaluations_per_event_with_candidates": round(calls / len(work), 1),
            "evaluations_failing_share": round(failed / calls, 3)}


def run_json(payloads: list[bytes]) -> dict[str, Any]:
    """The yardstick: json.loads of every raw event as the engine's stream carries it."""
    gc.collect()
    start = time.perf_counter()
    for payload in payloads:
        json.loads(payload)
    elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "events_per_s": len(payloads) / elapsed}


def side_by_side(variants: dict[str, Callable[[], dict[str, Any]]],
                 runs: int) -> dict[str, list[dict[str, Any]]]:
    """Every variant once per round, one round after another: ratios are taken per round."""
    for run in variants.values():
        run()  # warm-up: caches, CEL, allocator
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(runs):
        for name, run in variants.items():
            result = run()
            rounds[name].append(result)
            problems = (f" ({result['decisions']} decisions, {result['evaluation_problems']} "
                        "evaluation problems)" if "decisions" in result else "")
            print(f"  round {i + 1}/{runs} {name:16s} {result['events_per_s']:>10,.0f} "
                  f"events/s{problems}", flush=True)
    return rounds


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["events_per_s"] for r in results]
    found = {"median_events_per_s": round(statistics.median(rates)),
             "min_events_per_s": round(min(rates)), "max_events_per_s": round(max(rates))}
    for key in ("decisions", "events_with_decisions", "evaluation_problems"):
        if key in results[0]:
            found[f"{key}_per_run"] = results[0][key]
    return found


def ratio(rounds: dict[str, list[dict[str, Any]]], slow: str, fast: str) -> float:
    """Median over rounds of slow's time / fast's time (same events, same round)."""
    return round(statistics.median(a["seconds"] / b["seconds"] for a, b in zip(
        rounds[slow], rounds[fast], strict=True)), 2)


def state_memory(subjects: int) -> dict[str, Any]:
    """The engine's state after `die` from `subjects` distinct containers, and after a sweep.

    Bundled rules only (docker-notify-restart-loop counts `die` per container over
    10 min); 1,000 new containers a second, so all are inside the window at the end.
    """
    ruleset, errors = load_ruleset([_common.ROOT / "rules" / "docker.yaml"],
                                   Daemon.action_catalog(Settings()))
    if errors:
        raise SystemExit("rule errors:\n" + "\n".join(map(str, errors)))
    window = max(r.rule.occurrences.within for r in ruleset.rules if r.rule.occurrences)
    evaluator = Evaluator(ruleset)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        now = 0.0
        for i in range(subjects):
            now = i / 1000
            cid = f"{i:064x}"
            event = normalise({"Type": "container", "Action": "die", "timeNano": i + 1,
                               "Actor": {"ID": cid, "Attributes": {
                                   "name": f"job-{i}", "image": "busybox", "exitCode": "1"}}},
                              now)
            assert event is not None
            evaluator.evaluate(event, now)
            evaluator.due(now)
        gc.collect()
        before = evaluator.state.size()
        before_bytes = tracemalloc.get_traced_memory()[0] - base
        later = now + window + 1
        sweeps = 0
        t0 = time.perf_counter()
        while evaluator.state.size().series and sweeps < subjects:
            evaluator.due(later)
            sweeps += 1
        sweep_s = time.perf_counter() - t0
        gc.collect()
        after = evaluator.state.size()
        after_bytes = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    return {"subjects": subjects, "window_s": window,
            "before_sweep": {"series": before.series, "pending": before.pending,
                             "traced_mib": round(before_bytes / 2**20, 2)},
            "after_sweep": {"series": after.series, "pending": after.pending,
                            "traced_mib": round(after_bytes / 2**20, 2)},
            "due_calls_to_sweep": sweeps, "sweep_seconds": round(sweep_s, 3)}


def pin_to_one_core() -> int | None:
    try:
        cpu = max(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def _unindexed(ruleset: RuleSet) -> int:
    return sum(1 for r in ruleset.rules
               if r in ruleset._index.get((r.rule.source, r.rule.match.kind, None), ()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="raw events per run")
    parser.add_argument("--runs", type=int, default=7,
                        help="timed rounds (each runs every variant once)")
    parser.add_argument("--subjects", type=int, default=100_000,
                        help="distinct containers for the engine state figure")
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    cpu = pin_to_one_core()
    events = make_events(args.events)
    no_exec = [e for e in events if not e["Action"].startswith("exec_")]
    with tempfile.TemporaryDirectory(prefix="remedyd-bench-") as tmp:
        indexed = load_rules(Path(tmp))
        narrowable = load_rules(Path(tmp), narrowable=True)
    flat = FlatRuleSet(rules=indexed.rules, files=indexed.files)
    memory = state_memory(args.subjects)  # before gc.freeze(): its garbage is its own
    gc.freeze()  # the workload itself is no garbage; keep full collections off it
    print(f"engine throughput: {len(indexed.rules)} rules ({_unindexed(indexed)} the index "
          f"cannot narrow), {len(events):,} raw events per run, {args.runs} rounds, "
          f"pinned to CPU {cpu}")
    payloads = [json.dumps(e).encode() for e in events]
    payloads_ne = [json.dumps(e).encode() for e in no_exec]
    print("mix with the exec_* health-probe events (as the engine streams them):")
    full = side_by_side({
        "indexed": lambda: run_once(indexed, events),
        "no-index": lambda: run_once(flat, events),
        "all-narrowable": lambda: run_once(narrowable, events),
        "json.loads": lambda: run_json(payloads)}, args.runs)
    print(f"the same mix without exec_* events ({len(no_exec):,} events per run):")
    ne = side_by_side({
        "indexed": lambda: run_once(indexed, no_exec),
        "no-index": lambda: run_once(flat, no_exec),
        "json.loads": lambda: run_json(payloads_ne)}, args.runs)
    costs = breakdown(indexed, events)
    res = {"full_mix": {k: summarise(v) for k, v in full.items()},
           "no_exec": {k: summarise(v) for k, v in ne.items()}}
    decisions = {f"{mix}/{k}": v.get("decisions_per_run") for mix, group in res.items()
                 for k, v in group.items() if "decisions_per_run" in v}
    if len({decisions[f"full_mix/{k}"] for k in ("indexed", "no-index", "all-narrowable")}
           ) != 1 or decisions["no_exec/indexed"] != decisions["no_exec/no-index"]:
        print(f"WARNING: variants disagree on decisions: {decisions}", file=sys.stderr)

    def rate(mix: str, key: str) -> int:
        return int(res[mix][key]["median_events_per_s"])

    ratios = {"index_speedup": ratio(full, "no-index", "indexed"),
              "index_speedup_no_exec": ratio(ne, "no-index", "indexed"),
              "cost_per_event_vs_json_loads": ratio(full, "indexed", "json.loads"),
              "cost_per_event_vs_json_loads_no_exec": ratio(ne, "indexed", "json.loads")}
    unhealthy = sum(1 for e in events if e["Action"] == "health_status: unhealthy")
    data = {
        **_common.result_header("engine_throughput", loadavg_before),
        "pinned_cpu": cpu,
        "workload": {"raw_events_per_run": len(events), "rounds": args.runs, "mix_percent": MIX,
                     "unhealthy_share": round(unhealthy / len(events), 4),
                     "containers": CONTAINERS, "rules": len(indexed.rules),
                     "rules_not_narrowed_by_index": _unindexed(indexed),
                     "index": index_stats(indexed, events)},
        "results": res,
        "ratios_median_of_rounds": ratios,
        "cost_breakdown_indexed": costs,
        "state_memory": memory,
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": rate("full_mix", "indexed") >= TARGET_EVENTS_PER_S,
    }
    path = _common.write_results("engine_throughput", data)
    verdict = "met" if data["meets_target"] else "MISSED"
    print()
    print(f"median of {args.runs} rounds on one core, events/s (target >= "
          f"{TARGET_EVENTS_PER_S:,}: {verdict}); ratios are medians of per-round ratios:")
    print(f"  full mix      indexed {rate('full_mix', 'indexed'):>8,}   no index "
          f"{rate('full_mix', 'no-index'):>8,}   x{ratios['index_speedup']:.2f}   "
          f"all rules narrowable {rate('full_mix', 'all-narrowable'):>8,}")
    print(f"  no exec_*     indexed {rate('no_exec', 'indexed'):>8,}   no index "
          f"{rate('no_exec', 'no-index'):>8,}   x{ratios['index_speedup_no_exec']:.2f}")
    print(f"  cost per raw event = {ratios['cost_per_event_vs_json_loads']:.2f} x json.loads "
          f"of it (json.loads {rate('full_mix', 'json.loads'):,} events/s); without exec_*: "
          f"{ratios['cost_per_event_vs_json_loads_no_exec']:.2f} x")
    deciding = res["full_mix"]["indexed"]["events_with_decisions_per_run"]
    print(f"  {unhealthy / len(events):.1%} of raw events are health_status: unhealthy; "
          f"{deciding / len(events):.1%} make >= 1 decision "
          f"({decisions['full_mix/indexed']:,} decisions per run)")
    print("  per event with candidates: CEL context "
          f"{costs['context_us_per_event_with_candidates']} us "
          f"({costs['mean_attributes_per_event_with_candidates']} attributes), "
          f"{costs['evaluations_per_event_with_candidates']} evaluations x "
          f"{costs['condition_us_per_evaluation']} us; normalise "
          f"{costs['normalise_us_per_raw_event']} us per raw event")
    b, a = memory["before_sweep"], memory["after_sweep"]
    print(f"  engine state after `die` from {memory['subjects']:,} distinct containers: "
          f"{b['series']:,} series, {b['traced_mib']} MiB; after their "
          f"{memory['window_s']:g} s window and {memory['due_calls_to_sweep']} due() calls "
          f"({memory['sweep_seconds'] * 1e3:.0f} ms): {a['series']:,} series, "
          f"{a['traced_mib']} MiB")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
