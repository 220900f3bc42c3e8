"""Run every benchmark of bench/ one after another and write bench/results.md.

    .venv/bin/python bench/run_all.py              # default sizes, ~20 min
    .venv/bin/python bench/run_all.py --quick      # tiny sizes, ~2 min
    .venv/bin/python bench/run_all.py --only latency,autoheal_compare

The report gives the machine (CPU model, nproc, memory, kernel, Python, Docker), the
date, the commit (`git rev-parse HEAD`, and whether the tree was dirty), and for each
benchmark: the exact command, its exit status, the load average before and after it, its
headline figures (read from the bench/results/NAME.json it wrote) and each of its
targets (TARGETS below, the table of bench/README.md) as met or missed. A benchmark that
fails (exits non-zero, times out, or writes no summary) is reported as failed, with the
end of its output, and the run goes on.

With --quick the summaries go to a temporary directory (unless $BENCH_RESULTS is set)
and the report next to them, so a tiny run never overwrites the published figures.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import operator
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common

BENCH = Path(__file__).resolve().parent
PYTHON = ".venv/bin/python"


@dataclass(frozen=True)
class Bench:
    name: str  # the results file's name, bench/results/NAME.json
    script: str
    quick: tuple[str, ...]  # the tiny size (tests/test_bench.py's)
    figures: tuple[tuple[str, str], ...]  # (label, dotted path into the summary)
    args: tuple[str, ...] = ()  # the default size: no arguments
    timeout_s: float = 900.0


@dataclass(frozen=True)
class Target:
    bench: str
    what: str
    path: str
    op: str  # "<=", "<" or ">="
    limit: float
    unit: str


BENCHMARKS: tuple[Bench, ...] = (
    Bench("latency", "latency.py",
          ("--containers", "1", "--faults-per-container", "1", "--health-interval", "0.5"),
          (("unhealthy -> restart request sent, p50 ms", "latency_ms.p50"),
           ("… p99 ms", "latency_ms.p99"),
           ("unhealthy -> dockerd's kill event, p50 / p99 ms",
            "unhealthy_to_kill_event_ms.p50|unhealthy_to_kill_event_ms.p99"),
           ("inside remedyd (event relayed -> request), p50 ms", "stage_inside_remedyd_ms.p50"),
           ("faults injected / remedied", "faults_injected|faults_remedied"),
           ("host CPU busy, probes alone / during faults",
            "host_cpu_busy_share_no_faults|host_cpu_busy_share_in_fault_phase"))),
    Bench("engine_throughput", "engine_throughput.py",
          ("--events", "1000", "--runs", "1", "--subjects", "2000"),
          (("full mix, indexed, median events/s",
            "results.full_mix.indexed.median_events_per_s"),
           ("… without exec_* events, events/s", "results.no_exec.indexed.median_events_per_s"),
           ("cost per event x json.loads", "ratios_median_of_rounds.cost_per_event_vs_json_loads"),
           ("engine state after its subjects, MiB before / after its window",
            "state_memory.before_sweep.traced_mib|state_memory.after_sweep.traced_mib"))),
    Bench("footprint", "footprint.py",
          ("--starts", "1", "--idle", "0", "--containers", "1", "--audit-records", "20"),
          (("exec -> /readyz 200, median s", "ready_seconds.median"),
           ("… with 20,000 audit records 2 h / 10 min old, s",
            "ready_seconds_with_big_audit_log.2h_old.median"
            "|ready_seconds_with_big_audit_log.10min_old.median"),
           ("idle VmRSS after 60 s, Docker only / with containers, MiB",
            "idle_docker_only.VmRSS_mib|idle_with_containers.VmRSS_mib"),
           ("modules imported", "imports.modules_total"))),
    Bench("kube_ingest", "kube_ingest.py",
          ("--events", "400", "--pods", "40", "--runs", "1", "--model-events", "20"),
          (("pipeline (daemon decoder), median events/s",
            "median_events_per_s.pipeline daemon"),
           ("pipeline json / orjson / msgspec, events/s",
            "median_events_per_s.pipeline json|median_events_per_s.pipeline orjson"
            "|median_events_per_s.pipeline msgspec"),
           ("pipeline cost x json.loads", "pipeline_cost_x_json_loads"),
           ("kubernetes_asyncio models, events/s",
            "kubernetes_asyncio_models.watch_unmarshal_event_per_s"))),
    Bench("kube_cache", "kube_cache.py",
          ("--pods", "200", "--replicasets", "20", "--deployments", "6", "--events", "300",
           "--runs", "1"),
          (("cache, tracemalloc MiB", "memory.cache_tracemalloc_mib"),
           ("RSS growth MiB", "memory.rss_growth_mib"),
           ("bytes per Pod, trimmed / untrimmed",
            "memory.per_pod_bytes.trimmed|memory.per_pod_bytes.untrimmed"),
           ("loads+trim+diff+transitions per s", "ingest.loads_trim_diff_transitions_per_s"))),
    Bench("kube_footprint", "kube_footprint.py",
          ("--pods", "100", "--replicasets", "10", "--deployments", "3", "--settle", "0"),
          (("VmRSS with the objects cached / empty, MiB", "cached.VmRSS_mib|empty.VmRSS_mib"),
           ("ready with the objects, s", "cached.ready_seconds"))),
    Bench("kube_latency", "kube_latency.py", ("--samples", "2", "--pause", "0"),
          (("MODIFIED written -> rollback PATCH in, p50 / p99 ms",
            "latency_ms.p50|latency_ms.p99"),
           ("Pod event -> audited decision, p50 / p99 ms",
            "pod_event_to_audited_decision_ms.p50|pod_event_to_audited_decision_ms.p99"),
           ("samples / missed", "samples|missed"))),
    Bench("kube_failover", "kube_failover.py",
          ("--runs", "1", "--idle", "1", "--lease", "3", "--renew", "2", "--retry", "0.5"),
          (("leader SIGKILLed -> new leader's rollback, median s", "failover_s.median"),
           ("idle API requests/s, leader / follower",
            "idle.leader.per_second|idle.follower.per_second"))),
    Bench("kpi_latency", "kpi_latency.py", ("--services", "2"),
          (("answer showing the breach -> action, p50 / p99 ms",
            "answer_to_action_ms.p50|answer_to_action_ms.p99"),
           ("fault injected -> action, p50 / p99 ms",
            "fault_to_action_ms.p50|fault_to_action_ms.p99"),
           ("services / acted", "services|acted"))),
    Bench("webhook_intake", "webhook_intake.py",
          ("--seconds", "1", "--warmup", "0.5", "--runs", "1"),
          (("alerts accepted per wall s, median", "median.alerts_per_s"),
           ("… per server CPU s", "median.alerts_per_cpu_s"),
           ("server's share of its core", "median.server_cpu_share"))),
    Bench("security_scan", "security_scan.py", ("--pods", "30", "--runs", "1"),
          (("one multi-document file: s / peak RSS MiB",
            "results.multi.seconds.median|results.multi.peak_rss_mib.median"),
           ("one file per Pod: s / peak RSS MiB",
            "results.files.seconds.median|results.files.peak_rss_mib.median"),
           ("Pods / findings", "results.multi.pods|results.multi.findings"))),
    Bench("security_live", "security_live.py",
          ("--containers", "2", "--stagger", "0", "--rules", "one"),
          (("start -> notification, p50 / p99 ms",
            "start_to_notification_ms.p50|start_to_notification_ms.p99"),
           ("start -> decision record, p50 / p99 ms",
            "start_to_decision_record_ms.p50|start_to_decision_record_ms.p99"),
           ("containers / found", "containers|found"))),
    Bench("autoheal_compare", "autoheal_compare.py",
          ("--containers", "2", "--faults-per-container", "1", "--interval", "1",
           "--health-interval", "0.5"),
          (("remedyd: unhealthy -> start, p50 / p99 ms",
            "healers.remedyd.unhealthy_to_start_ms.p50"
            "|healers.remedyd.unhealthy_to_start_ms.p99"),
           ("5 s poller: unhealthy -> start, p50 / p99 ms",
            "healers.poller.unhealthy_to_start_ms.p50|healers.poller.unhealthy_to_start_ms.p99"),
           ("ratio poller / remedyd, p50 / p99",
            "ratio_poller_over_remedyd.p50|ratio_poller_over_remedyd.p99"),
           ("ratio poller / remedyd to the kill (the healer acting), p50 / p99",
            "ratio_poller_over_remedyd.p50_kill|ratio_poller_over_remedyd.p99_kill"),
           ("remedyd / poller: unhealthy -> kill, p50 ms",
            "healers.remedyd.unhealthy_to_kill_ms.p50|healers.poller.unhealthy_to_kill_ms.p50"),
           ("faults per healer, remedied (remedyd / poller)",
            "healers.remedyd.remedied|healers.poller.remedied"),
           ("never acted on the other's half", "never_acted_on_the_other_half"))),
)

# The targets of bench/README.md's table, in one place.
TARGETS: tuple[Target, ...] = (
    Target("latency", "unhealthy -> restart request, p50", "latency_ms.p50", "<=", 10, "ms"),
    Target("latency", "unhealthy -> restart request, p99", "latency_ms.p99", "<=", 50, "ms"),
    Target("engine_throughput", "events/s, one core",
           "results.full_mix.indexed.median_events_per_s", ">=", 20_000, "events/s"),
    Target("footprint", "idle RSS after 60 s", "idle_docker_only.VmRSS_mib", "<=", 64, "MiB"),
    Target("footprint", "exec -> /readyz 200", "ready_seconds.median", "<=", 1, "s"),
    Target("kube_ingest", "Pod watch events/s, one core",
           "median_events_per_s.pipeline daemon", ">=", 10_000, "events/s"),
    Target("kube_footprint", "VmRSS with the objects cached", "cached.VmRSS_mib", "<=", 150,
           "MiB"),
    Target("kube_latency", "MODIFIED -> rollback PATCH, p99", "latency_ms.p99", "<=", 50, "ms"),
    Target("kpi_latency", "answer -> action, p99", "answer_to_action_ms.p99", "<=", 50, "ms"),
    Target("webhook_intake", "alerts/s accepted", "median.alerts_per_s", ">=", 5_000,
           "alerts/s"),
    Target("security_scan", "10,000 Pods, one file", "results.multi.seconds.median", "<", 10,
           "s"),
    Target("security_scan", "10,000 Pods, one file, peak RSS",
           "results.multi.peak_rss_mib.median", "<", 300, "MiB"),
    Target("security_scan", "10,000 Pods, one file each", "results.files.seconds.median", "<",
           10, "s"),
    Target("security_scan", "10,000 Pods, one file each, peak RSS",
           "results.files.peak_rss_mib.median", "<", 300, "MiB"),
    Target("security_live", "start -> notification, p99", "start_to_notification_ms.p99", "<",
           100, "ms"),
)

OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, "<": operator.lt, ">=": operator.ge}


@dataclass
class Run:
    bench: Bench
    command: list[str]
    load_before: list[str]
    load_after: list[str] = field(default_factory=list)
    seconds: float = 0.0
    exit_code: int | None = None
    error: str | None = None
    summary: dict[str, Any] | None = None
    date: str = ""  # UTC, when it started
    commit: str = ""
    again: bool = False  # made by --again, into an earlier report

    def as_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["bench"] = self.bench.name
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        bench = next(b for b in BENCHMARKS if b.name == record["bench"])
        return cls(**{**record, "bench": bench})


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path (keys may hold spaces, not dots); None if absent."""
    for key in path.split("."):
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def figure(summary: dict[str, Any], paths: str) -> str:
    return " / ".join(fmt(dig(summary, p)) for p in paths.split("|"))


def verdict(target: Target, summary: dict[str, Any] | None) -> tuple[str, str]:
    """(measured, "met" | "missed" | "not measured")."""
    value = dig(summary, target.path) if summary is not None else None
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-", "not measured"
    return fmt(value), "met" if OPS[target.op](value, target.limit) else "**missed**"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M")


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def run_one(bench: Bench, args: tuple[str, ...], results: Path, env: dict[str, str]) -> Run:
    command = [PYTHON, f"bench/{bench.script}", *args]
    run = Run(bench, command, loadavg(), date=now(), commit=git("rev-parse", "HEAD").strip())
    print(f"== {bench.name}: {shlex.join(command)}  (load {' '.join(run.load_before)})",
          flush=True)
    summary_path = results / f"{bench.name}.json"
    started = time.time()
    try:
        done = subprocess.run([sys.executable, str(BENCH / bench.script), *args],
                              cwd=_common.ROOT, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=bench.timeout_s,
                              check=False)
        run.exit_code = done.returncode
        output = (done.stdout + done.stderr).strip()
        if done.returncode != 0:
            run.error = f"exit {done.returncode}: " + output[-1500:]
    except subprocess.TimeoutExpired as exc:
        tail = exc.stderr if isinstance(exc.stderr, str) else (exc.stderr or b"").decode(
            errors="replace")
        run.error = f"timed out after {bench.timeout_s:.0f} s: " + tail[-1500:]
    run.seconds = time.time() - started
    run.load_after = loadavg()
    # Only a summary this run wrote counts: an older one would pass stale figures off.
    if summary_path.exists() and summary_path.stat().st_mtime >= started:
        try:
            run.summary = json.loads(summary_path.read_text())
        except (OSError, ValueError) as exc:
            run.error = (run.error or "") + f" (summary unreadable: {exc})"
    elif run.error is None:
        run.error = f"no summary written to {summary_path}"
    state = "ok" if run.error is None else "FAILED"
    print(f"   {state} in {run.seconds:.0f} s (load after {' '.join(run.load_after)})",
          flush=True)
    return run


def docker_version() -> str:
    async def ask(host: str) -> str:
        api = _common.DockerAPI(host, timeout_s=5)
        try:
            return str((await api.version()).get("Version") or "unknown")
        finally:
            await api.close()

    for host in (os.environ.get("DOCKER_HOST", ""), _common.stack_docker_host()):
        if host and _common.docker_ping(host):
            return f"Docker Engine {asyncio.run(ask(host))} ({host})"
    return "no dockerd answering yet (the Docker benchmarks start the stack's)"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=_common.ROOT, text=True, capture_output=True,
                          timeout=10, check=False).stdout


def report(runs: list[Run], header: dict[str, Any], results: Path) -> str:
    machine, commit, dirty = header["machine"], header["commit"], header["dirty"]
    quick, docker = header["quick"], header["docker"]
    mem_gib = machine["mem_total_mib"] / 1024
    again = [f"{r.bench.name} at {r.date} (`{r.commit[:12]}`)" for r in runs
             if r.again]
    lines = [
        "# remedyd benchmark results",
        "",
        f"Written by `{PYTHON} bench/run_all.py{' --quick' if quick else ''}` "
        f"({'tiny sizes: these figures say the scripts run, not how fast' if quick else 'default sizes'}).",  # noqa: E501
        "",
        "| | |",
        "|---|---|",
        f"| date (UTC) | {header['started']} → {header['finished']}"
        + (f"; run again (`--again`): {', '.join(again)}" if again else "") + " |",
        f"| commit | `{commit}`"
        + (f", **dirty**: {len(dirty)} tracked path(s) changed ({', '.join(dirty[:8])}"
           f"{', …' if len(dirty) > 8 else ''})" if dirty else ", clean") + " |",
        f"| CPU | {machine['cpu_model']}, nproc = {machine['nproc']} |",
        f"| memory | {mem_gib:.1f} GiB |",
        f"| kernel | {machine['kernel']} |",
        f"| Python | {machine['python']} |",
        f"| Docker | {docker} |",
        "",
        "Load average (1, 5, 15 min) is read before and after each benchmark: the machine "
        "may be shared (other test suites), and a loaded machine gives slower figures.",
        "",
        "## Targets",
        "",
        "| benchmark | target | measured | |",
        "|---|---|---:|---|",
    ]
    by_name = {r.bench.name: r for r in runs}
    for target in TARGETS:
        if target.bench not in by_name:
            continue
        run = by_name[target.bench]
        measured, status = verdict(target, run.summary)
        if run.error is not None and run.summary is None:
            status = "not measured (failed)"
        unit = f" {target.unit}" if measured != "-" else ""
        lines.append(f"| {target.bench} | {target.what} {target.op} {target.limit:,g} "
                     f"{target.unit} | {measured}{unit} | {status} |")
    lines += ["", "## Runs", "",
              "| benchmark | status | seconds | load before → after |",
              "|---|---|---:|---|"]
    for run in runs:
        status = "ok" if run.error is None else (
            f"failed (exit {run.exit_code})" if run.exit_code is not None else "failed")
        lines.append(f"| {run.bench.name} | {status} | {run.seconds:.0f} | "
                     f"{' '.join(run.load_before)} → {' '.join(run.load_after)} |")
    for run in runs:
        lines += ["", f"### {run.bench.name}", "", f"Started {run.date} UTC, commit "
                  f"`{run.commit[:12]}`.", "", "```sh", shlex.join(run.command), "```", ""]
        if run.error is not None:
            lines += ["**Failed**:", "", "```", run.error.strip()[-1500:], "```", ""]
        if run.summary is not None:
            lines += ["| figure | value |", "|---|---:|"]
            lines += [f"| {label} | {figure(run.summary, paths)} |"
                      for label, paths in run.bench.figures]
            mine = [t for t in TARGETS if t.bench == run.bench.name]
            for target in mine:
                measured, status = verdict(target, run.summary)
                lines.append(f"| target: {target.what} {target.op} {target.limit:,g} "
                             f"{target.unit} | {status} |")
            path = results / f"{run.bench.name}.json"
            shown = path.relative_to(_common.ROOT) if path.is_relative_to(_common.ROOT) else path
            lines += ["", f"Summary: `{shown}`."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a few s each)")
    parser.add_argument("--only", default="",
                        help="comma-separated benchmark names (default: all): "
                        + ", ".join(b.name for b in BENCHMARKS))
    parser.add_argument("--args", action="append", default=[], metavar="NAME=ARGS",
                        help="run benchmark NAME with these arguments instead (repeatable)")
    parser.add_argument("--again", action="store_true",
                        help="run the --only benchmarks again and keep the other runs of the "
                        "last report (from its state, RESULTS/run_all.json)")
    parser.add_argument("--output", type=Path, default=None,
                        help="the report (default: bench/results.md; with --quick, next to "
                        "the summaries in a temporary directory)")
    options = parser.parse_args()
    names = [n for n in options.only.split(",") if n]
    known = {b.name for b in BENCHMARKS}
    if unknown := [n for n in names if n not in known]:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(known)}")
    overrides: dict[str, tuple[str, ...]] = {}
    for item in options.args:
        name, sep, text = item.partition("=")
        if not sep or name not in known:
            parser.error(f"--args {item!r}: NAME=ARGS with NAME one of {', '.join(known)}")
        overrides[name] = tuple(shlex.split(text))
    env = dict(os.environ)
    if options.quick and not env.get("BENCH_RESULTS"):
        env["BENCH_RESULTS"] = tempfile.mkdtemp(prefix="remedyd-bench-quick-")
    results = Path(env.get("BENCH_RESULTS") or _common.ROOT / "bench" / "results")
    output = options.output or (results / "results.md" if options.quick
                                else _common.ROOT / "bench" / "results.md")
    selected = [b for b in BENCHMARKS if not names or b.name in names]

    state_path = results / "run_all.json"
    if options.again:
        if not names:
            parser.error("--again needs --only NAMES")
        state = json.loads(state_path.read_text())
        header = state["header"]
        kept = [Run.from_record(r) for r in state["runs"]]
    else:
        header = {"machine": _common.machine(), "docker": docker_version(),
                  "commit": git("rev-parse", "HEAD").strip(), "quick": options.quick,
                  "dirty": [line[3:] for line in git("status", "--porcelain",
                                                     "--untracked-files=no").splitlines()
                            if line.strip()],
                  "started": now(), "finished": now()}
        kept = []
    runs: list[Run] = []
    for bench in selected:
        args = overrides.get(bench.name, bench.quick if options.quick else bench.args)
        runs.append(run_one(bench, args, results, env))
        runs[-1].again = options.again
        if not options.again:
            header["finished"] = now()
        done = {r.bench.name: r for r in (*kept, *runs)}
        ordered = [done[b.name] for b in BENCHMARKS if b.name in done]
        # Written after each benchmark: an interrupted run still leaves what it measured.
        output.write_text(report(ordered, header, results))
        state_path.write_text(json.dumps({"header": header, "runs": [
            r.as_record() for r in ordered]}, indent=1) + "\n")
    failed = [r.bench.name for r in runs if r.error is not None]
    print(f"report: {output}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
