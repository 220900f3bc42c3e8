"""`remedyd run` as a benchmark's child process: its own config, port, rules and audit log.

The benchmarks' own runner (not tests/harness.py), so bench/ runs without the test
bed; it reads /proc for what footprint.py reports.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import ROOT
from prometheus_client.parser import text_string_to_metric_families


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_toml(path: Path, groups: dict[str, dict[str, Any]]) -> Path:
    """Flat [group] key = value TOML; a JSON string, number, bool or list is valid TOML."""
    lines: list[str] = []
    for group, keys in groups.items():
        lines += [f"[{group}]", *(f"{k} = {json.dumps(v)}" for k, v in keys.items()
                                  if v is not None)]
    path.write_text("\n".join(lines) + "\n")
    return path


class Remedyd:
    """One `python -m daemon run`; start() returns the seconds until /readyz answered 200."""

    def __init__(self, workdir: Path, docker_url: str | None, *, rules: str | None = None,
                 audit: Path | None = None, extra: dict[str, dict[str, Any]] | None = None,
                 python_flags: tuple[str, ...] = ()) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.audit_path = audit or workdir / "audit.jsonl"
        rules_path = ROOT / "rules"
        if rules is not None:
            rules_path = workdir / "rules"
            rules_path.mkdir(exist_ok=True)
            (rules_path / "rules.yaml").write_text(rules)
        groups: dict[str, dict[str, Any]] = {
            "server": {"listen": f"127.0.0.1:{self.port}"},
            # No engine named: Docker off (a Kubernetes-only daemon).
            # Acting on every container the benchmark starts, labelled or not.
            "docker": ({"enabled": True, "url": docker_url, "scope": "all"} if docker_url
                       else {"enabled": False}),
            "audit": {"path": str(self.audit_path)},
            "rules": {"paths": [str(rules_path)]},
        }
        for group, keys in (extra or {}).items():
            groups.setdefault(group, {}).update(keys)
        self.config = write_toml(workdir / "remedyd.toml", groups)
        self.log_path = workdir / "remedyd.log"
        self.python_flags = python_flags
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30) -> float:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)  # the config names the engine
        env.pop("PYTHONPROFILEIMPORTTIME", None)
        with self.log_path.open("ab") as log:
            started = time.perf_counter()
            self.proc = subprocess.Popen(
                [sys.executable, *self.python_flags, "-m", "daemon", "run", "--config",
                 str(self.config)], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=log, env=env)
        while time.perf_counter() < started + timeout_s:
            if self.get("/readyz")[0] == 200:
                return time.perf_counter() - started
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"remedyd not ready within {timeout_s:g} s:\n"
                           f"{self.log_path.read_text(errors='replace')[-3000:]}")

    def get(self, path: str) -> tuple[int, bytes]:
        """(status, body); (0, b"") while nothing listens."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples that carry `labels` (0 when there are none)."""
        text = self.get("/metrics")[1].decode()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == name and labels.items() <= sample.labels.items())

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        # Read while remedyd writes: a last line without its newline is still being
        # written, and is left for the next read.
        text = self.audit_path.read_text()
        complete = text[:text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def verify_audit(self) -> str:
        done = subprocess.run([sys.executable, "-m", "daemon", "audit", "verify",
                               str(self.audit_path)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, check=False)
        return (done.stdout or done.stderr).strip()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def status(self) -> dict[str, int]:
        """The kB figures (and Threads) of /proc/PID/status."""
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads"):
                found[key] = int(value.split()[0])
        return found

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def extension_modules(self) -> list[str]:
        paths = set()
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].endswith(".so") and "site-packages" in parts[5]:
                paths.add(parts[5].split("site-packages/", 1)[1])
        return sorted(paths)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
