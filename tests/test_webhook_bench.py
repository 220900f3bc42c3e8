"""bench/webhook_intake.py runs at a tiny size and reports its figures (no speed asserted)."""

from __future__ import annotations

from pathlib import Path

from tests.test_bench import run_bench


def test_webhook_intake_benchmark_reports_alerts_per_second(tmp_path: Path) -> None:
    out, data = run_bench(tmp_path, "webhook_intake.py", "--seconds", "0.5", "--warmup",
                          "0.2", "--runs", "1", "--connections", "2")
    (run,) = data["runs"]
    assert run["accepted"] > 0 and run["errors"] == 0 and run["alerts_per_cpu_s"]
    assert data["median"]["alerts_per_s"] > 0 and "alerts/s" in out
