"""Each benchmark runs once at a tiny size, so none rots: it runs and reports its figures.

No speed is asserted (that is what the full-size runs in bench/README.md are for).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def run_bench(tmp_path: Path, script: str, *args: str) -> tuple[str, dict[str, Any]]:
    """Run bench/SCRIPT with its summary written under tmp_path; (stdout, summary)."""
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [summary] = tmp_path.glob("*.json")
    data: dict[str, Any] = json.loads(summary.read_text())
    assert data["machine"]["nproc"] and data["command"].endswith(" ".join(args))
    return done.stdout, data


def test_engine_benchmark_reports_rates_json_ratio_and_state_memory(tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "engine_throughput.py", "--events", "1000", "--runs", "1",
                          "--subjects", "2000")
    indexed = data["results"]["full_mix"]["indexed"]
    assert indexed["median_events_per_s"] > 0 and indexed["decisions_per_run"] > 0
    assert data["ratios_median_of_rounds"]["cost_per_event_vs_json_loads"] > 0
    memory = data["state_memory"]
    assert memory["before_sweep"]["series"] == 2000
    assert memory["after_sweep"]["series"] == 0
    assert "x json.loads" in out and "engine state after" in out


def test_footprint_benchmark_reports_start_up_memory_and_imports(
        tmp_path: Path, docker_host: str, busybox_image: str) -> None:
    out, data = run_bench(tmp_path, "footprint.py", "--starts", "1", "--idle", "0",
                          "--containers", "1", "--audit-records", "20")
    assert data["ready_seconds"]["median"] > 0
    assert data["idle_docker_only"]["VmRSS_mib"] > 0
    assert data["imports"]["modules_total"] > 0
    assert data["imports"]["forbidden_loaded"] == {}
    assert "exec -> /readyz 200: median" in out


def test_latency_benchmark_remedies_its_fault_and_reports_latency(
        tmp_path: Path, docker_host: str, busybox_image: str) -> None:
    out, data = run_bench(tmp_path, "latency.py", "--containers", "1",
                          "--faults-per-container", "1", "--health-interval", "0.5")
    assert data["faults_injected"] == data["faults_remedied"] == 1
    assert data["latency_ms"]["n"] == 1 and data["latency_ms"]["p50"] > 0
    assert "unhealthy -> restart request sent" in out


def test_security_live_benchmark_times_each_containers_finding(
        tmp_path: Path, docker_host: str, busybox_image: str) -> None:
    out, data = run_bench(tmp_path, "security_live.py", "--containers", "2", "--stagger", "0",
                          "--rules", "one")
    assert data["found"] == 2 and data["checks_notified"] == ["CIS-DOCKER-5-3"]
    assert data["start_to_notification_ms"]["n"] == data["create_to_notification_ms"]["n"] == 2
    assert data["create_to_notification_ms"]["p50"] > 0
    assert "start  -> notification" in out


def test_security_scan_benchmark_reports_seconds_and_peak_rss(tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "security_scan.py", "--pods", "30", "--runs", "1")
    for layout in ("multi", "files"):
        result = data["results"][layout]
        assert result["objects"] == 30 and result["findings"] > 0
        assert result["seconds"]["median"] > 0 and result["peak_rss_mib"]["median"] > 0
    assert "files: 30 Pods" in out


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_import_nothing_from_tests_but_the_kubernetes_test_bed(script: Path) -> None:
    # bench/ is a folder of scripts, not a package: no relative imports to miss here.
    # The Kubernetes test bed stands in for a kube-apiserver, which cannot be installed on
    # these machines; fixtures and harnesses stay out of the benchmarks.
    tree = ast.parse(script.read_text(), str(script))
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
             for alias in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {n for n in names if n in ("tests", "tests.kube.plugin") or (
        n.startswith("tests.") and not n.startswith("tests.kube."))}


def test_kube_cache_benchmark_reports_memory_and_ingest(tmp_path: Path) -> None:
    out, _ = run_bench(tmp_path, "kube_cache.py", "--pods", "200", "--replicasets", "20",
                       "--deployments", "6", "--events", "300", "--runs", "1")
    assert "per Pod cached" in out and "loads+trim+diff+transitions" in out


def test_kube_ingest_benchmark_compares_decoders_through_the_whole_pipeline(
        tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "kube_ingest.py", "--events", "400", "--pods", "40",
                          "--runs", "1", "--model-events", "20")
    rates = data["median_events_per_s"]
    for decoder in ("json", "orjson", "msgspec", "daemon"):
        assert rates[f"decode {decoder}"] > 0 and rates[f"pipeline {decoder}"] > 0
    workload = data["workload"]
    # Restarts, crash loops and readiness flips reach the rules and decide something.
    assert workload["engine_events"] > 0 and workload["decisions"] > 0
    assert workload["evaluation_problems"] == 0
    # The daemon decodes watch lines into msgspec Structs of the fields its cache keeps.
    assert data["daemon_decoder"].startswith("daemon.kube.watchdecode")
    assert data["kubernetes_asyncio_models"]["watch_unmarshal_event_per_s"] > 0
    assert "pipeline" in out and "kubernetes_asyncio V1Pod models" in out


def test_kube_latency_benchmark_times_the_pod_event_to_the_deployment_patch(
        tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "kube_latency.py", "--samples", "2", "--pause", "0")
    assert data["missed"] == 0 and data["latency_ms"]["n"] == 2
    assert 0 < data["pod_event_to_audited_decision_ms"]["p50"] < data["latency_ms"]["max"]
    assert data["audit_verify"].startswith("ok")
    assert "PATCH in: 2 samples (0 missed)" in out


def test_kube_footprint_benchmark_reports_the_daemons_memory_with_and_without_a_cache(
        tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "kube_footprint.py", "--pods", "100", "--replicasets",
                          "10", "--deployments", "3", "--settle", "0")
    assert data["cached"]["pods"] == 100 and data["empty"]["pods"] == 0
    assert data["cached"]["VmRSS_mib"] > 0 and data["empty"]["VmRSS_mib"] > 0
    assert "remedyd VmRSS with 100 Pods" in out


def test_kube_failover_benchmark_times_the_takeover_and_the_idle_requests(
        tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "kube_failover.py", "--runs", "1", "--idle", "1",
                          "--lease", "3", "--renew", "2", "--retry", "0.5")
    [run] = data["runs"]
    # The new leader cannot act before the old lease could expire (lease_duration after
    # the follower last saw it renewed, at most retry_period before the kill).
    assert 3 - 0.5 <= run["lease_taken_s"] <= run["failover_s"] < 10
    assert data["idle"]["leader"]["lease_write"] >= 1
    assert data["idle"]["follower"]["lease_write"] == 0
    assert all(v.startswith("ok") for v in data["audit_verify"].values())
    assert "failover (leader SIGKILLed" in out


def test_autoheal_compare_benchmark_heals_both_halves_and_reports_the_ratio(
        tmp_path: Path, docker_host: str, busybox_image: str) -> None:
    out, data = run_bench(tmp_path, "autoheal_compare.py", "--containers", "2",
                          "--faults-per-container", "1", "--interval", "1",
                          "--health-interval", "0.5")
    for healer in ("remedyd", "poller"):
        result = data["healers"][healer]
        assert result["faults"] == result["remedied"] == 1
        assert result["unhealthy_to_start_ms"]["p50"] > 0
        assert result["faults_restarted_more_than_once"] == 0
    # Each healer kept to its own half: remedyd's scope guard refused the poller's one.
    assert data["never_acted_on_the_other_half"] and data["poller"]["restarts"] == 1
    assert data["remedyd_audit_decisions"] == {"act": 1, "suppressed/scope": 1}
    assert data["ratio_poller_over_remedyd"]["p50"] > 0
    assert "ratio poller / remedyd" in out


def test_run_all_reports_machine_figures_targets_and_a_failed_benchmark(
        tmp_path: Path) -> None:
    report = tmp_path / "results.md"
    env = {**os.environ, "BENCH_RESULTS": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only",
         "security_scan,engine_throughput", "--args", "security_scan=--no-such-knob",
         "--output", str(report)], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, check=False)
    # The failed benchmark makes the exit status, not the end of the run.
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    assert "failed: security_scan" in done.stdout
    assert "### security_scan" in text and "unrecognized arguments: --no-such-knob" in text
    assert "| security_scan | 10,000 Pods, one file < 10 s | - | not measured (failed) |" in text
    assert "### engine_throughput" in text and "bench/engine_throughput.py --events 1000" in text
    assert "| engine_throughput | events/s, one core >= 20,000 events/s |" in text
    assert f"nproc = {os.cpu_count()}" in text and "| commit | `" in text
    # Load before and after each benchmark, in the runs table.
    assert text.count(" → ") >= 3

    # The failed one run again into the same report, the other run kept as it was.
    again = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--again", "--only",
         "security_scan", "--output", str(report)], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120, check=False)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    text_again = report.read_text()
    assert "unrecognized arguments" not in text_again
    assert "run again (`--again`): security_scan" in text_again
    assert "| security_scan | 10,000 Pods, one file < 10 s | " in text_again
    assert "not measured (failed)" not in text_again
    assert text_again.split("### engine_throughput")[1].split("###")[0] == text.split(
        "### engine_throughput")[1].split("###")[0]
