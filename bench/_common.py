"""Shared helpers for the benchmarks: machine facts, results files, percentiles, dockerd.

Not a benchmark itself. Every script in bench/ imports it first; it puts the
repository root on sys.path so `daemon` imports from the work tree. Nothing here
imports tests/; only the Kubernetes benchmarks use the test bed (tests.kube), which
stands in for a kube-apiserver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(os.environ.get("BENCH_RESULTS") or ROOT / "bench" / "results")
STACK = ROOT / "scripts" / "stack"
IMAGE = "remedyd-test/busybox:latest"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# -- machine and results -------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "daemon", "rules"],
                               cwd=ROOT, text=True, capture_output=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("+dirty(daemon/ or rules/)" if dirty.strip() else "")


def result_header(name: str, loadavg_before: list[str]) -> dict[str, Any]:
    """The fields every results/NAME.json starts with: what ran, where, under what load."""
    return {
        "benchmark": name,
        "command": " ".join([".venv/bin/python", *sys.argv]),
        "machine": machine(),
        "loadavg_before": loadavg_before,
        "loadavg_after": Path("/proc/loadavg").read_text().split()[:3],
    }


def machine() -> dict[str, Any]:
    return {
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nproc": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "mem_total_mib": _mem_total_mib(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "git": _git_revision(),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write the run's summary (no per-sample data) to RESULTS/NAME.json."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "min": round(min(values), digits),
            "p50": round(percentile(values, 50), digits),
            "p90": round(percentile(values, 90), digits),
            "p99": round(percentile(values, 99), digits),
            "max": round(max(values), digits),
            "mean": round(sum(values) / len(values), digits)}


# -- dockerd ---------------------------------------------------------------------------------

def stack_docker_host() -> str:
    """DOCKER_HOST of the private dockerd that scripts/stack/dockerd-up starts."""
    stack_dir = Path(os.environ.get("STACK_DIR") or "/tmp/remedyd-stack").resolve()
    return f"unix://{stack_dir}/docker/docker.sock"


def docker_ping(docker_host: str) -> bool:
    """True if dockerd answers GET /_ping on `docker_host` within a few seconds."""

    async def ping() -> bool:
        api = DockerAPI(docker_host, timeout_s=5)
        try:
            await api.call("GET", "/_ping")
            return True
        except (OSError, RuntimeError, aiohttp.ClientError, TimeoutError):
            return False
        finally:
            await api.close()

    try:
        return asyncio.run(ping())
    except ValueError:  # not a unix:// or tcp:// address
        return False


@contextlib.contextmanager
def dockerd() -> Iterator[tuple[str, bool]]:
    """(DOCKER_HOST, started_here): $DOCKER_HOST if it answers, else the stack's dockerd.

    Starts scripts/stack/dockerd-up only when nothing answers, and then stops it
    again (dockerd-down) on the way out; a dockerd that was already up is left alone.
    """
    env_host = os.environ.get("DOCKER_HOST", "")
    if env_host and docker_ping(env_host):
        yield env_host, False
        return
    if docker_ping(stack_docker_host()):
        yield stack_docker_host(), False
        return
    print("no dockerd answers; starting scripts/stack/dockerd-up ...", file=sys.stderr)
    proc = subprocess.run([str(STACK / "dockerd-up")], stdin=subprocess.DEVNULL, text=True,
                          capture_output=True, timeout=600)
    line = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0 or not line.startswith("DOCKER_HOST="):
        raise RuntimeError(f"dockerd-up failed (exit {proc.returncode}):\n{proc.stderr}")
    host = line.partition("=")[2]
    try:
        yield host, True
    finally:
        print("stopping the dockerd this benchmark started (dockerd-down) ...", file=sys.stderr)
        subprocess.run([str(STACK / "dockerd-down")], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=300, check=False)


class DockerAPI:
    """A few Engine API calls over DOCKER_HOST with aiohttp (the same stack remedyd uses)."""

    def __init__(self, docker_host: str, timeout_s: float = 60) -> None:
        if docker_host.startswith("unix://"):
            connector: aiohttp.BaseConnector = aiohttp.UnixConnector(
                path=docker_host.removeprefix("unix://"), limit=32)
            self.base = "http://docker"
        elif docker_host.startswith("tcp://"):
            connector = aiohttp.TCPConnector(limit=32)
            self.base = "http://" + docker_host.removeprefix("tcp://").rstrip("/")
        else:
            raise ValueError(f"unsupported DOCKER_HOST {docker_host!r}")
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                   body: Any = None, ok: tuple[int, ...] = (200, 201, 204, 304)) -> Any:
        async with self.session.request(method, self.base + path, params=params,
                                        json=body) as response:
            data = await response.read()
            if response.status not in ok:
                raise RuntimeError(f"{method} {path}: {response.status} {data[:300]!r}")
            if data and response.content_type == "application/json":
                return json.loads(data)
            return None

    async def version(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/version")
        return result

    async def run(self, name: str, config: dict[str, Any]) -> str:
        created = await self.call("POST", "/containers/create", params={"name": name},
                                  body=config)
        cid = str(created["Id"])
        await self.call("POST", f"/containers/{cid}/start")
        return cid

    async def exec(self, cid: str, cmd: list[str]) -> None:
        created = await self.call("POST", f"/containers/{cid}/exec",
                                  body={"Cmd": cmd, "AttachStdout": False,
                                        "AttachStderr": False})
        await self.call("POST", f"/exec/{created['Id']}/start",
                        body={"Detach": False, "Tty": False})

    async def restart(self, cid: str, grace_s: int = 0) -> None:
        await self.call("POST", f"/containers/{cid}/restart", params={"t": str(grace_s)})

    async def remove(self, cid: str) -> None:
        await self.call("DELETE", f"/containers/{cid}", params={"force": "1", "v": "1"},
                        ok=(200, 204, 404))

    async def list_ids(self, label: str) -> list[str]:
        found = await self.call("GET", "/containers/json",
                                params={"all": "1",
                                        "filters": json.dumps({"label": [label]})})
        return [str(c["Id"]) for c in found or []]

    async def events(self, filters: dict[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        """The /events stream, one decoded event at a time, until cancelled.

        The first item is an empty dict, yielded as soon as the engine has answered
        (it flushes the headers on subscribing): from then on no event is missed.
        """
        async with self.session.get(
            self.base + "/events", params={"filters": json.dumps(filters)},
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        ) as response:
            if response.status != 200:
                raise RuntimeError(f"/events: {response.status}")
            yield {}
            async for line in response.content:
                if line.strip():
                    yield json.loads(line)


def container_config(*, labels: dict[str, str], health_cmd: str, interval_s: float,
                     command: list[str], retries: int = 1) -> dict[str, Any]:
    """`docker run --network none --health-cmd ... IMAGE command` as an API body."""
    ns = 1_000_000_000
    return {
        "Image": IMAGE,
        "Cmd": command,
        "Labels": labels,
        "StopTimeout": 1,
        "Healthcheck": {"Test": ["CMD-SHELL", health_cmd], "Interval": int(interval_s * ns),
                        "Timeout": 5 * ns, "Retries": retries},
        "HostConfig": {"NetworkMode": "none"},
    }


async def remove_all(api: DockerAPI, ids: Sequence[str]) -> list[str]:
    """Force-remove containers, 4 at a time; the ids that could not be removed."""
    results = await gather_limited(4, [api.remove(cid) for cid in ids], return_exceptions=True)
    failed = [cid for cid, result in zip(ids, results, strict=True)
              if isinstance(result, BaseException)]
    if failed:
        print(f"WARNING: could not remove {len(failed)} container(s): "
              f"{' '.join(c[:12] for c in failed)}", file=sys.stderr)
    return failed


async def gather_limited(limit: int, coros: Sequence[Any],
                         return_exceptions: bool = False) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros), return_exceptions=return_exceptions)


async def within_deadline(workers: Sequence[asyncio.Task[None]], deadline_s: float) -> bool:
    """Await the fault phase's workers; past the deadline cancel the rest. False if it was hit."""
    try:
        async with asyncio.timeout(deadline_s):
            await asyncio.gather(*workers)
        return True
    except TimeoutError:
        print(f"fault phase hit its {deadline_s:.0f}s deadline; reporting what finished",
              file=sys.stderr)
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        return False


def fs_type(path: Path) -> str:
    """The filesystem type of the mount that holds `path` (from /proc/mounts)."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and (resolved == parts[1] or resolved.startswith(
                parts[1].rstrip("/") + "/")) and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def busy_share(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of all CPUs' time that was busy between two host_cpu() readings."""
    total = after[1] - before[1]
    return round((after[0] - before[0]) / total, 3) if total else 0.0


def wall_ns() -> int:
    """CLOCK_REALTIME in ns: the clock dockerd stamps timeNano with (same host)."""
    return time.time_ns()
