"""Kubernetes watch ingest on one core: Pod watch lines -> decode -> cache -> transitions -> engine.

    .venv/bin/python bench/kube_ingest.py [--events 20000] [--pods 500] [--runs 5]
        [--model-events 1000]

What is timed, per Pod watch event, what one remedyd process does with it, minus the
socket: the watch client's line splitting of 64 KiB chunks, decoding a line into a
watch event, the informer's handling (KubernetesSource: trim, Cache.apply,
daemon.kube.transitions, its metrics, Bus.emit), and for every Event that comes out
what Daemon._engine_loop does (Bus.get_nowait, Evaluator.next_due/evaluate/due/
take_problems, the rule-error metric). No executor, no audit log.

Workload: --pods Pods (80 % one container, 20 % with an envoy sidecar; env, probes,
resources, managedFields, shaped like `kubectl get pod -o json`, from
tests/kube/fixtures/pod.json) of 50 Deployments in 10 namespaces, their ReplicaSets
and Deployments cached, then --events MODIFIED events for random Pods in the mix of
MIX: most only move the resourceVersion and kubelet's managedFields time (or bring a
Pod back to ready or running, which no rule cares about); some restart a container,
turn a Pod unready, put it into CrashLoopBackOff or have it OOM-killed.

Rules: every file in rules/ plus 100 synthetic Kubernetes rules (crash loops, restarts
with `occurrences`, unready with `for`, OOM kills, conditions on `object`, regexes,
rules the index cannot narrow by action, Deployment and Node rules).

Decoders side by side in each round, on the same lines: stdlib json, orjson, msgspec
and the daemon's own (daemon.clients.kubernetes, whichever it uses); each alone and
in the whole pipeline. The daemon's own decodes a line into msgspec Structs of the
fields the cache keeps (daemon.kube.watchdecode) and leaves the rest of the work to
Cache.apply_trimmed: "decode daemon" alone is only its share. Timed in CPU time
(process_time) on one pinned CPU, median of --runs rounds after a warm-up. For the
record, once: decoding into kubernetes_asyncio's V1Pod models (its
Watch.unmarshal_event, and ApiClient.deserialize of the object), on --model-events lines.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import inspect
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import _common
import msgspec
import orjson
from engine_throughput import side_by_side
from kube_cache import deployment, fixture, replicaset

from daemon.app import Daemon
from daemon.bus import Bus
from daemon.clients import kubernetes as kube_client
from daemon.clients.kubernetes import RESOURCES, KubeClient, KubeStreamBroken
from daemon.engine.evaluator import Evaluator
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.kube.transitions import transitions
from daemon.kube.watchdecode import Trimmed
from daemon.security.events import view_of
from daemon.settings import Settings
from daemon.sources.kube_posture import KubePosture
from daemon.sources.kubernetes import KubernetesSource
from daemon.telemetry.metrics import Metrics

TARGET_EVENTS_PER_S = 10_000
SEED = 20261201
NAMESPACES = 10
DEPLOYMENTS = 50
SINGLE_SHARE = 0.8  # Pods with one container; the rest have an envoy sidecar
CHUNK = 65_536  # what aiohttp's readany() hands over from a busy stream
# Share of each kind of Pod update (percent). "noise" changes nothing a rule reads.
MIX: dict[str, float] = {"noise": 88, "restart": 5, "unready": 3, "crashloop": 3, "oom": 1}
EPOCH = 1_714_644_000.0  # 2024-05-02T10:00:00Z, after the fixtures' creation times
Loads = Callable[[bytes], Any]


# -- workload ----------------------------------------------------------------------------------

def stamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def workloads() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """DEPLOYMENTS Deployments over NAMESPACES namespaces, one current ReplicaSet each."""
    dep_base, rs_base = fixture("deployment"), fixture("replicaset")
    deps, sets = [], []
    for i in range(DEPLOYMENTS):
        dep = deployment(i, dep_base)
        dep["metadata"]["namespace"] = f"ns-{i % NAMESPACES}"
        rs = replicaset(i, DEPLOYMENTS, rs_base)
        rs["metadata"].update(namespace=f"ns-{i % NAMESPACES}", name=f"app-{i}-7c9d8f6b5d")
        deps.append(dep)
        sets.append(rs)
    return deps, sets


def pod_shapes() -> tuple[dict[str, Any], dict[str, Any]]:
    """(one container, with the envoy sidecar), both as `kubectl get pod -o json` shows."""
    sidecar = fixture("pod")
    single = copy.deepcopy(sidecar)
    # No sidecar, no annotations, no config or log volume: a plain Deployment's Pod.
    del single["metadata"]["annotations"]
    spec, status = single["spec"], single["status"]
    spec["containers"] = spec["containers"][:1]
    status["containerStatuses"] = status["containerStatuses"][:1]
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] not in ("config", "logs")]
    app = spec["containers"][0]
    app["volumeMounts"] = [m for m in app["volumeMounts"] if m["name"] != "config"]
    fields = single["metadata"]["managedFields"][0]["fieldsV1"]
    fields["f:metadata"].pop("f:annotations")
    fields["f:spec"]["f:containers"].pop('k:{"name":"envoy"}')
    return single, sidecar


class PodState:
    """One Pod's object, mutated in place by each update and serialised at once."""

    def __init__(self, i: int, rng: random.Random, shapes: tuple[dict[str, Any], ...]) -> None:
        self.obj = obj = copy.deepcopy(shapes[0] if rng.random() < SINGLE_SHARE else shapes[1])
        owner = i % DEPLOYMENTS
        team = owner % 7
        meta = obj["metadata"]
        meta.update(name=f"app-{owner}-7c9d8f6b5d-{i:05x}", namespace=f"ns-{owner % NAMESPACES}",
                    uid=f"pod-{i:08d}", resourceVersion=str(1_000 + i),
                    generateName=f"app-{owner}-7c9d8f6b5d-")
        meta["labels"]["app.kubernetes.io/name"] = f"app-{owner}"
        meta["ownerReferences"][0].update(name=f"app-{owner}-7c9d8f6b5d", uid=f"rs-{owner:08d}")
        obj["spec"]["nodeName"] = f"worker-{i % 12}"
        image = f"registry.example/team-{team}/app-{owner}:1.{owner % 9}.0"
        obj["spec"]["containers"][0]["image"] = image
        self.app = obj["status"]["containerStatuses"][0]
        self.app["image"] = image
        self.ready = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
        self.containers_ready = next(c for c in obj["status"]["conditions"]
                                     if c["type"] == "ContainersReady")
        self.kubelet = meta["managedFields"][-1]
        obj["status"]["podIP"] = f"10.244.{i // 256 % 256}.{i % 256}"
        self.serial = 0

    def update(self, kind: str, version: int, now: float) -> bytes:
        """The watch line of this Pod after one `kind` update at wall time `now`."""
        self.serial += 1
        at = stamp(now)
        self.obj["metadata"]["resourceVersion"] = str(version)
        self.kubelet["time"] = at
        app = self.app
        if kind == "noise":
            if not app["ready"]:  # back to running and ready: nothing a rule reads
                app.update(ready=True, started=True, state={"running": {"startedAt": at}})
                self._set_ready("True", at)
        elif kind == "unready":
            app["ready"] = False
            self._set_ready("False", at, "ContainersNotReady",
                            "containers with unready status: [app]")
        else:
            app["restartCount"] += 1
            reason, code = ("OOMKilled", 137) if kind == "oom" else ("Error", 1)
            app["lastState"] = {"terminated": {
                "containerID": f"containerd://{self.serial:064x}", "exitCode": code,
                "finishedAt": at, "reason": reason, "startedAt": stamp(now - 30)}}
            app["containerID"] = f"containerd://{self.serial + 1:064x}"
            if kind == "crashloop":
                app.update(ready=False, started=False, state={"waiting": {
                    "reason": "CrashLoopBackOff", "message": (
                        f"back-off 40s restarting failed container=app "
                        f"pod={self.obj['metadata']['name']}_{self.obj['metadata']['namespace']}"
                        f"({self.obj['metadata']['uid']})")}})
                self._set_ready("False", at, "ContainersNotReady",
                                "containers with unready status: [app]")
            else:
                app.update(ready=True, started=True, state={"running": {"startedAt": at}})
        return json.dumps({"type": "MODIFIED", "object": self.obj},
                          separators=(",", ":")).encode() + b"\n"

    def _set_ready(self, status: str, at: str, reason: str | None = None,
                   message: str | None = None) -> None:
        for condition in (self.ready, self.containers_ready):
            if condition["status"] != status:
                condition["lastTransitionTime"] = at
            condition["status"] = status
            for key, value in (("reason", reason), ("message", message)):
                if value is None:
                    condition.pop(key, None)
                else:
                    condition[key] = value


def make_stream(events: int, pods: int, seed: int = SEED
                ) -> tuple[list[dict[str, Any]], list[bytes], dict[str, int]]:
    """(the Pods as listed, the watch lines that follow, how many of each MIX kind)."""
    rng = random.Random(seed)
    shapes = pod_shapes()
    states = [PodState(i, rng, shapes) for i in range(pods)]
    initial = [json.loads(json.dumps(s.obj)) for s in states]
    kinds, weights = zip(*MIX.items(), strict=True)
    counts = dict.fromkeys(MIX, 0)
    lines = []
    for n, kind in enumerate(rng.choices(kinds, weights=weights, k=events)):
        counts[kind] += 1
        lines.append(rng.choice(states).update(kind, 10_000 + n, EPOCH + n / 100))
    return initial, lines, counts


def synthetic_rules(count: int = 100, seed: int = SEED) -> str:
    """`count` Kubernetes rules in the styles operators write (see the module docstring)."""
    rng = random.Random(seed)
    lines = ["rules:"]
    for i in range(count):
        n = rng.randrange(DEPLOYMENTS)
        app, ns, team = f"app-{n}", f"ns-{n % NAMESPACES}", n % 7
        extra: list[str] = []
        style = i % 10
        if style == 0:
            when = f'event.action == "crashloop" && event.attributes.workload_name == "{app}"'
            action = "kubernetes.rollback: {}"
        elif style == 1:
            when = (f'event.action == "restarted" && event.attributes.namespace == "{ns}" && '
                    'event.attributes.restartCount >= 3')
            extra.append("occurrences: {count: 3, within: 10m}")
            action = "kubernetes.delete_pod: {}"
        elif style == 2:
            when = f'event.action == "unready" && event.attributes.namespace == "{ns}"'
            extra += ["for: 5m", "budget: {max: 1, per: 1h}"]
            action = "kubernetes.evict: {}"
        elif style == 3:
            when = f'event.action == "oom_killed" && event.attributes.workload_name == "{app}"'
            action = "notify.webhook: {message: synthetic}"
        elif style == 4:
            when = (f'event.action in ["crashloop", "oom_killed"] && event.attributes.namespace '
                    f'== "{ns}" && "exitCode" in event.attributes && '
                    'event.attributes.exitCode != 0')
            action = "notify.webhook: {message: synthetic}"
        elif style == 5:
            when = (f'event.action == "restarted" && object.spec.nodeName == "worker-{n % 12}" '
                    f'&& object.metadata.labels["app.kubernetes.io/name"] == "{app}"')
            action = "kubernetes.annotate: {set: {remedyd.io/seen: restarted}}"
        elif style == 6:
            when = ('event.action == "crashloop" && '
                    f'event.attributes.image.matches("^registry[.]example/team-{team}/")')
            action = "kubernetes.pause_rollout: {}"
        elif style == 7:
            if i % 20 == 7:
                extra.append("match: {kind: deployment}")
                when = (f'event.action == "new_revision" && '
                        f'event.attributes.name == "{app}"')
                action = "notify.webhook: {message: synthetic}"
            else:
                extra.append("match: {kind: node}")
                when = f'event.action == "not_ready" && event.attributes.name == "worker-{n % 12}"'
                action = "kubernetes.cordon: {}"
        elif style == 8:
            # Not narrowed by the index: no top-level `event.action == ...` conjunct.
            when = (f'event.attributes.workload_name == "{app}" && '
                    '(event.action == "crashloop" || event.action == "restarted")')
            action = "notify.webhook: {message: synthetic}"
        else:
            when = ('event.kind == "pod" && event.action == "unready" && '
                    f'event.attributes.workload_name.startsWith("app-{n % 10}") && '
                    'event.attributes.unreadySeconds >= 0.0')
            extra.append("for: 30s")
            action = "notify.webhook: {message: synthetic}"
        lines += [f"  - name: synthetic-kube-{i:03d}", "    source: kubernetes",
                  f"    when: '{when}'", f"    cooldown: {rng.choice(['0s', '1m', '10m'])}"]
        lines += [f"    {e}" for e in extra]
        lines += ["    actions:", f"      - {action}"]
    return "\n".join(lines) + "\n"


def load_rules(workdir: Path) -> RuleSet:
    path = workdir / "synthetic-kubernetes.yaml"
    path.write_text(synthetic_rules())
    ruleset, errors = load_ruleset([_common.ROOT / "rules", path],
                                   Daemon.action_catalog(Settings()))
    if errors:
        raise SystemExit("rule errors:\n" + "\n".join(map(str, errors)))
    return ruleset


# -- decoders ----------------------------------------------------------------------------------

def decoders() -> dict[str, Loads]:
    """What each decoder's watch-line step is: the bytes to a dict, checked as the client does."""
    msgspec_decode = msgspec.json.Decoder().decode

    def checked(loads: Loads) -> Loads:
        def decode(line: bytes) -> Any:
            try:
                event = loads(line)
            except ValueError:
                raise KubeStreamBroken("not a JSON line") from None
            if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
                raise KubeStreamBroken("not a watch event")
            return event
        return decode

    pods = RESOURCES["pods"]
    return {"json": checked(json.loads), "orjson": checked(orjson.loads),
            "msgspec": checked(msgspec_decode),
            "daemon": lambda line: kube_client._decode_line(pods, line)}


def daemon_decoder_name() -> str:
    """What daemon.clients.kubernetes decodes with (json.loads before it had decode_json)."""
    if getattr(kube_client, "watchdecode", None) is not None:
        return "daemon.kube.watchdecode (msgspec Structs of the kept fields)"
    decode = getattr(kube_client, "decode_json", json.loads)
    owner = getattr(decode, "__self__", None)
    if owner is not None and not inspect.ismodule(owner):
        return f"{type(owner).__module__}.{type(owner).__qualname__}.{decode.__name__}"
    return f"{decode.__module__}.{decode.__name__}"


# -- measurement -------------------------------------------------------------------------------

def split_lines(chunks: list[bytes]) -> Iterator[bytes]:
    """The watch client's framing: chunks as they arrive, split at newlines."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield line


class ViewingTracker:
    """The posture tracker's share the tap pays for: a view of what it hands over."""

    def __init__(self) -> None:
        self.seen_count = 0

    def seen(self, platform: str, obj: Any, *, origin: str, view: Any = None) -> None:
        self.seen_count += 1
        view_of(platform, obj)

    def gone(self, subject: Any) -> None:
        pass


class Pipeline:
    """One daemon's worth of ingest state: source (with its cache), bus and evaluator;
    with `posture`, the security posture tap on the source too, as the daemon runs it
    while [security] is on (its default)."""

    def __init__(self, ruleset: RuleSet, initial: list[dict[str, Any]],
                 deps: list[dict[str, Any]], sets: list[dict[str, Any]],
                 posture: bool = False) -> None:
        self.metrics = Metrics()
        self.bus = Bus(self.metrics, maxsize=100_000)
        self.wall = EPOCH
        client = KubeClient(None, None, 5.0)  # never connects: the lines are fed in
        self.source = KubernetesSource(client, self.bus.emit, self.metrics, ["pods"],
                                       clock=lambda: self.wall)
        cache = self.source.cache
        cache.replace("Deployment", copy.deepcopy(deps))
        cache.replace("ReplicaSet", copy.deepcopy(sets))
        cache.replace("Pod", copy.deepcopy(initial))
        # The informer's own watch-event step (private: the benchmark drives it directly).
        informer = self.source._informers[0]
        self.handle = informer._handle
        self.scope = informer.scopes[0]
        self.evaluator = Evaluator(ruleset)
        if posture:
            KubePosture(self.source, ViewingTracker())

    def run(self, chunks: list[bytes], decode: Loads) -> dict[str, Any]:
        evaluator, bus, rule_errors = self.evaluator, self.bus, self.metrics.rule_errors
        events = decisions = problems = lines = 0
        start = time.process_time()
        for line in split_lines(chunks):
            lines += 1
            self.wall = EPOCH + lines / 100
            now = lines / 100  # the engine loop's monotonic clock, 100 updates a second
            self.handle(self.scope, decode(line))
            while (event := bus.get_nowait()) is not None:
                events += 1
                evaluator.next_due()
                decided = evaluator.evaluate(event, now)
                decided += evaluator.due(now)
                for problem in evaluator.take_problems():
                    problems += 1
                    rule_errors.labels(problem.rule).inc()
                decisions += len(decided)
        elapsed = time.process_time() - start
        return {"seconds": elapsed, "events_per_s": lines / elapsed, "lines": lines,
                "engine_events": events, "decisions": decisions,
                "evaluation_problems": problems}


    def stages(self, lines: list[bytes], decode: Loads) -> dict[str, float]:
        """The same steps timed apart (CPU us per Pod update), the informer's spelled out."""
        cache, evaluator, clock = self.source.cache, self.evaluator, time.process_time_ns
        spent = dict.fromkeys(("decode", "trim_and_cache", "transitions", "engine"), 0)
        for n, line in enumerate(lines, 1):
            now = n / 100
            t0 = clock()
            event = decode(line)
            t1 = clock()
            change = (cache.apply_trimmed(event)
                      if isinstance(event, Trimmed) else
                      cache.apply(event["type"], event["object"]))
            t2 = clock()
            found = transitions(cache, change, EPOCH + now) if change is not None else []
            t3 = clock()
            for item in found:
                evaluator.next_due()
                evaluator.evaluate(item, now)
                evaluator.due(now)
                evaluator.take_problems()
            t4 = clock()
            for key, spent_ns in zip(spent, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                spent[key] += spent_ns
        return {key: round(ns / len(lines) / 1000, 1) for key, ns in spent.items()}


def decode_only(lines: list[bytes], decode: Loads) -> dict[str, Any]:
    start = time.process_time()
    for line in lines:
        decode(line)
    elapsed = time.process_time() - start
    return {"seconds": elapsed, "events_per_s": len(lines) / elapsed}


def models(lines: list[bytes]) -> dict[str, float]:
    """kubernetes_asyncio's typed path: what its Watch does per line, and deserialize alone."""
    from kubernetes_asyncio.client import ApiClient
    from kubernetes_asyncio.watch import Watch

    objects = [json.dumps(json.loads(line)["object"]) for line in lines]

    async def measure() -> dict[str, float]:
        watch = Watch()
        api = ApiClient()
        try:
            start = time.process_time()
            for line in lines:
                watch.unmarshal_event(line, "V1Pod")
            unmarshal = time.process_time() - start
            start = time.process_time()
            for obj in objects:
                api.deserialize(SimpleNamespace(data=obj), "V1Pod")
            deserialize = time.process_time() - start
        finally:
            await api.close()
            await watch._api_client.close()
        return {"watch_unmarshal_event_per_s": round(len(lines) / unmarshal),
                "api_client_deserialize_per_s": round(len(objects) / deserialize)}

    return asyncio.run(measure())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="Pod updates per round")
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model-events", type=int, default=1_000,
                        help="lines decoded into kubernetes_asyncio models (once)")
    args = parser.parse_args()
    loadavg_before = Path("/proc/loadavg").read_text().split()[:3]
    cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})

    deps, sets = workloads()
    initial, lines, counts = make_stream(args.events, args.pods)
    stream = b"".join(lines)
    chunks = [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]
    lines = [line.rstrip(b"\n") for line in lines]
    size = statistics.mean(len(line) for line in lines)
    with tempfile.TemporaryDirectory(prefix="remedyd-bench-") as tmp:
        ruleset = load_rules(Path(tmp))
    decode = decoders()
    print(f"kube ingest: {len(lines):,} Pod MODIFIED events per round ({size:,.0f} B of JSON "
          f"each) for {args.pods:,} Pods, {len(ruleset.rules)} rules, {args.runs} rounds, "
          f"pinned to CPU {cpu}; the daemon decodes with {daemon_decoder_name()}")
    gc.collect()
    gc.freeze()  # the workload itself is no garbage; the pipeline's own garbage stays
    variants: dict[str, Callable[[], dict[str, Any]]] = {}
    for name, loads in decode.items():
        variants[f"decode {name}"] = lambda loads=loads: decode_only(lines, loads)
    for name, loads in decode.items():
        variants[f"pipeline {name}"] = lambda loads=loads: Pipeline(
            ruleset, initial, deps, sets).run(chunks, loads)
    variants["pipeline daemon+posture"] = lambda: Pipeline(
        ruleset, initial, deps, sets, posture=True).run(chunks, decode["daemon"])
    rounds = side_by_side(variants, args.runs)
    results = {name: round(statistics.median(r["events_per_s"] for r in found))
               for name, found in rounds.items()}
    first = rounds["pipeline daemon"][0]
    outcome = {k: first[k] for k in ("engine_events", "decisions", "evaluation_problems")}
    if any({k: r[0][k] for k in outcome} != outcome for n, r in rounds.items()
           if n.startswith("pipeline")):
        print("WARNING: the decoders' pipelines disagree on what came out", flush=True)
    breakdown = Pipeline(ruleset, initial, deps, sets).stages(lines, decode["daemon"])
    typed = models(lines[:args.model_events]) if args.model_events else {}

    def rate(name: str) -> int:
        return results[name]

    data = {
        **_common.result_header("kube_ingest", loadavg_before),
        "pinned_cpu": cpu,
        "workload": {"events_per_round": len(lines), "pods": args.pods,
                     "mean_line_bytes": round(size), "mix_percent": MIX, "mix_counts": counts,
                     "rules": len(ruleset.rules), "rounds": args.runs, **outcome},
        "daemon_decoder": daemon_decoder_name(),
        "median_events_per_s": results,
        "cpu_us_per_update_by_stage": breakdown,
        # The machine's speed cancels out: the whole pipeline in units of json.loads alone.
        "pipeline_cost_x_json_loads": round(rate("decode json") / rate("pipeline daemon"), 2),
        "kubernetes_asyncio_models": {"lines": min(args.model_events, len(lines)), **typed},
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "meets_target": rate("pipeline daemon") >= TARGET_EVENTS_PER_S,
    }
    path = _common.write_results("kube_ingest", data)
    print()
    verdict = "met" if data["meets_target"] else "MISSED"
    print(f"median of {args.runs} rounds on one core, Pod events/s (target >= "
          f"{TARGET_EVENTS_PER_S:,} for the whole pipeline: {verdict}):")
    for name in decode:
        print(f"  {name:8s} decode {rate(f'decode {name}'):>9,}   pipeline "
              f"{rate(f'pipeline {name}'):>8,}")
    print(f"  the daemon's pipeline costs {data['pipeline_cost_x_json_loads']} x json.loads "
          "of the same lines")
    print(f"  with the security posture tap on the source: "
          f"{rate('pipeline daemon+posture'):,} events/s")
    print(f"  {outcome['engine_events']:,} Events reached the engine per round "
          f"({outcome['engine_events'] / len(lines):.1%} of Pod updates), "
          f"{outcome['decisions']:,} decisions, {outcome['evaluation_problems']} "
          "evaluation problems")
    print("  CPU per Pod update, steps timed apart (daemon's decoder): "
          + ", ".join(f"{k} {v} us" for k, v in breakdown.items())
          + f"; the whole pipeline {1e6 / rate('pipeline daemon'):.1f} us")
    if typed:
        print(f"  kubernetes_asyncio V1Pod models: Watch.unmarshal_event "
              f"{typed['watch_unmarshal_event_per_s']:,}/s, ApiClient.deserialize "
              f"{typed['api_client_deserialize_per_s']:,}/s (decode only)")
    print(f"summary: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
