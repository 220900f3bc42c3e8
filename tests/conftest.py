"""Shared pytest fixtures for the remedyd test suite."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["tests.kube.plugin"]

# ==========================================================================
# Test bed: a real Docker daemon for integration tests
# ==========================================================================
#
# `docker_host` uses $DOCKER_HOST when it answers; otherwise it starts the
# project's private dockerd (scripts/stack/dockerd-up, state under
# $STACK_DIR, default /tmp/remedyd-stack) and stops it at the end of the
# session. It also sets os.environ["DOCKER_HOST"] for the session, so code
# under test that reads the environment finds the same daemon.
#
# The daemon has no bridge network: containers get `--network none`
# (loopback only) or `--network host` (shares 127.0.0.1 with the tests).
# There is no registry access; use the local image `busybox_image`.
#
# Fixtures:
#   docker_host      (session) "unix:///.../docker.sock"
#   busybox_image    (session) "remedyd-test/busybox:latest", present on it
#   docker           bound helper: docker("ps", "-a") -> stdout
#   containers       factory creating labelled containers, removed afterwards
#   restart_dockerd  DockerdControl: restart_dockerd() = stop + start,
#                    .stop() / .start() separately (private dockerd only)
#   stop_dockerd, start_dockerd   the same object's .stop / .start
#
# Helpers: docker_cli(docker_host, *args), docker_inspect(docker_host, ref),
# docker_ping(docker_host).

ROOT = Path(__file__).resolve().parents[1]
STACK_SCRIPTS = ROOT / "scripts" / "stack"
BUSYBOX_IMAGE = "remedyd-test/busybox:latest"
TEST_LABEL = "remedyd-test"
DOCKERD_START_TIMEOUT = 60.0


class DockerCLIError(RuntimeError):
    """A `docker` command failed; `stderr` holds its message."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        super().__init__(f"docker {' '.join(args)} failed (exit {returncode}):\n{stderr.strip()}")
        self.returncode = returncode
        self.stderr = stderr


def stack_docker_host() -> str:
    """DOCKER_HOST of the private dockerd that scripts/stack/dockerd-up starts."""
    stack_dir = Path(os.environ.get("STACK_DIR") or "/tmp/remedyd-stack").resolve()
    return f"unix://{stack_dir}/docker/docker.sock"


def docker_ping(docker_host: str, timeout: float = 3.0) -> bool:
    """True if GET /_ping on `docker_host` (unix:// or tcp://) answers 200."""
    sock: socket.socket
    try:
        if docker_host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(docker_host.removeprefix("unix://"))
        elif docker_host.startswith("tcp://"):
            host, _, port = docker_host.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status_line = sock.recv(64).split(b"\r\n", 1)[0]
    except (OSError, ValueError):
        return False
    return status_line.split(b" ")[1:2] == [b"200"]


def run_stack(
    script: str, *args: str, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    """Run scripts/stack/SCRIPT; return its last stdout line ('' if none).

    Raises RuntimeError with the script's stderr on failure, so the test
    errors instead of being skipped.
    """
    cmd = [str(STACK_SCRIPTS / script), *args]
    try:
        proc = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(f"{' '.join(cmd)} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n{proc.stderr}")
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def _docker_env(docker_host: str) -> dict[str, str]:
    env = dict(os.environ, DOCKER_HOST=docker_host, DOCKER_CLI_HINTS="false")
    env.pop("DOCKER_CONTEXT", None)
    return env


def docker_cli(docker_host: str, *args: str, timeout: float = 60) -> str:
    """Run the `docker` CLI against `docker_host`; return stdout, stripped.

    Raises DockerCLIError (with stderr) on a non-zero exit or a timeout.
    """
    exe = shutil.which("docker") or "/usr/bin/docker"
    try:
        proc = subprocess.run(
            [exe, *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_docker_env(docker_host),
        )
    except subprocess.TimeoutExpired as exc:
        raise DockerCLIError(args, -1, f"timed out after {timeout}s") from exc
    except FileNotFoundError as exc:
        raise DockerCLIError(args, -1, f"docker CLI not found ({exe})") from exc
    if proc.returncode != 0:
        raise DockerCLIError(args, proc.returncode, proc.stderr)
    return proc.stdout.strip()


def docker_inspect(docker_host: str, ref: str) -> dict[str, Any]:
    """`docker inspect REF` as a dict (container, image, ...)."""
    result: list[dict[str, Any]] = json.loads(docker_cli(docker_host, "inspect", ref))
    return result[0]


def _remove_labelled_containers(docker_host: str) -> None:
    """Remove containers left by an earlier, interrupted test run."""
    ids = docker_cli(docker_host, "ps", "-aq", "--filter", f"label={TEST_LABEL}").split()
    if ids:
        docker_cli(docker_host, "rm", "-f", "-v", *ids, timeout=120)


@dataclass
class _DockerBed:
    host: str
    started: bool  # this session started the daemon and stops it at the end
    private: bool  # it is scripts/stack's dockerd (stop/start allowed)


@pytest.fixture(scope="session")
def _docker_bed() -> Iterator[_DockerBed]:
    env_host = os.environ.get("DOCKER_HOST", "")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if env_host and docker_ping(env_host):
        # private, but possibly shared with other xdist workers: then no restarts
        bed = _DockerBed(
            env_host, started=False, private=env_host == stack_docker_host() and not worker
        )
    else:
        # under xdist each worker gets its own dockerd, unless STACK_DIR is forced
        own_stack = not worker or "STACK_DIR" not in os.environ
        if worker and own_stack:
            # scripts/test stops these if a worker dies before its teardown does.
            prefix = os.environ.get("REMEDYD_TEST_STACK_PREFIX", "/tmp/remedyd-stack")
            os.environ["STACK_DIR"] = f"{prefix}-{worker}"
        already_up = docker_ping(stack_docker_host())
        line = run_stack("dockerd-up")
        if not line.startswith("DOCKER_HOST="):
            raise RuntimeError(f"dockerd-up printed {line!r}, not DOCKER_HOST=...")
        bed = _DockerBed(line.partition("=")[2], started=not already_up, private=own_stack)
    mp = pytest.MonkeyPatch()
    mp.setenv("DOCKER_HOST", bed.host)
    try:
        _remove_labelled_containers(bed.host)
        yield bed
    finally:
        mp.undo()
        if bed.started:
            run_stack("dockerd-down")


@pytest.fixture(scope="session")
def docker_host(_docker_bed: _DockerBed) -> str:
    """DOCKER_HOST of a live Docker daemon, e.g. 'unix:///tmp/remedyd-stack/docker/docker.sock'."""
    return _docker_bed.host


@pytest.fixture(scope="session")
def busybox_image(docker_host: str) -> str:
    """Name of the local static-busybox test image (imported if missing)."""
    try:
        docker_cli(docker_host, "image", "inspect", BUSYBOX_IMAGE)
    except DockerCLIError:
        run_stack("busybox-image", env=_docker_env(docker_host))
    return BUSYBOX_IMAGE


# The base tests build remedyd's image on (scripts/stack/python-base-image), unless
# REMEDYD_TEST_BASE_IMAGE names another one already on the engine (python:3.11-slim-bookworm,
# say, where mmdebstrap cannot run).
BUILT_BASE_IMAGE = "remedyd-test/python:3.11-bookworm"
REMEDYD_IMAGE = "remedyd-test/remedyd:under-test"
# Not the build context: the checkout's own state, and a wheelhouse a developer left, which
# would silently make the test install stale wheels.
_NOT_CONTEXT = shutil.ignore_patterns(".git", ".venv", "var", "build", "wheelhouse",
                                      "__pycache__", ".mypy_cache", ".ruff_cache",
                                      ".pytest_cache", "*.egg-info")


@pytest.fixture(scope="session")
def base_image(docker_host: str) -> str:
    given = os.environ.get("REMEDYD_TEST_BASE_IMAGE")
    if given:
        return given
    run_stack("python-base-image", env=_docker_env(docker_host), timeout=900)
    return BUILT_BASE_IMAGE


@pytest.fixture(scope="session")
def remedyd_image(docker_host: str, base_image: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """remedyd's image, from this checkout's Dockerfile with no registry: remedyd and its
    dependencies as wheels built on this host (scripts/wheelhouse), which the build
    installs with `pip install --no-index`, on `base_image`."""
    context = tmp_path_factory.mktemp("image") / "context"
    shutil.copytree(ROOT, context, ignore=_NOT_CONTEXT, symlinks=True)
    subprocess.run([str(ROOT / "scripts/wheelhouse"), str(context / "wheelhouse")],
                   check=True, capture_output=True, timeout=600)
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                              capture_output=True, text=True, timeout=60).stdout.strip()
    docker_cli(docker_host, "build", "--quiet", "--build-arg", f"BASE_IMAGE={base_image}",
               "--build-arg", f"REVISION={revision or 'unknown'}", "--tag", REMEDYD_IMAGE,
               str(context), timeout=900)
    yield REMEDYD_IMAGE
    docker_cli(docker_host, "image", "rm", "--force", REMEDYD_IMAGE, timeout=120)


@pytest.fixture
def docker(docker_host: str) -> Callable[..., str]:
    """docker("ps", "-a", timeout=60) -> stdout; raises DockerCLIError."""

    def run(*args: str, timeout: float = 60) -> str:
        return docker_cli(docker_host, *args, timeout=timeout)

    return run


class ContainerFactory:
    """containers(*docker_args, command=("sleep", "300"), start=True) -> id.

    `docker run -d` (or `docker create` with start=False) with the label
    remedyd-test=1, plus `--network none` and `--stop-timeout 1` unless
    docker_args give their own. Every container it made is removed at the
    end of the test.
    """

    def __init__(self, docker_host: str, image: str) -> None:
        self.docker_host = docker_host
        self.image = image
        self.ids: list[str] = []

    def __call__(
        self,
        *args: str,
        command: Sequence[str] = ("sleep", "300"),
        image: str | None = None,
        start: bool = True,
    ) -> str:
        opts = ["--label", f"{TEST_LABEL}=1"]
        if not any(a.split("=")[0] in ("--network", "--net") for a in args):
            opts += ["--network", "none"]
        if not any(a.split("=")[0] == "--stop-timeout" for a in args):
            # busybox as PID 1 ignores SIGTERM; don't wait 10 s on every stop
            opts += ["--stop-timeout", "1"]
        verb = ["run", "-d"] if start else ["create"]
        out = docker_cli(self.docker_host, *verb, *opts, *args, image or self.image, *command)
        cid = out.splitlines()[-1]
        self.ids.append(cid)
        return cid

    def remove_all(self) -> None:
        if not self.ids:
            return
        try:
            docker_cli(self.docker_host, "rm", "-f", "-v", *self.ids, timeout=120)
        except DockerCLIError as exc:
            # containers a test removed itself are fine
            errors = [
                line
                for line in exc.stderr.splitlines()
                if line.strip() and "No such container" not in line
            ]
            if errors:
                raise
        self.ids.clear()


@pytest.fixture
def containers(docker_host: str, busybox_image: str) -> Iterator[ContainerFactory]:
    """Factory for test containers; see ContainerFactory."""
    factory = ContainerFactory(docker_host, busybox_image)
    yield factory
    factory.remove_all()


class DockerdControl:
    """Stop/start the private dockerd. Containers stay defined (running ones
    are stopped with the daemon; restart policies apply when it comes back).

    restart_dockerd() stops and starts; .stop() and .start() do one half.
    If a test leaves the daemon stopped, the fixture starts it again.
    """

    def __init__(self, bed: _DockerBed) -> None:
        self.bed = bed
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True
        run_stack("dockerd-down", "--keep")

    def start(self) -> None:
        """Start dockerd; return once it answers /_ping."""
        run_stack("dockerd-up")
        deadline = time.monotonic() + DOCKERD_START_TIMEOUT
        while not docker_ping(self.bed.host):
            if time.monotonic() > deadline:
                raise RuntimeError(f"dockerd does not answer on {self.bed.host}")
            time.sleep(0.2)
        self.stopped = False

    def __call__(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def restart_dockerd(
    _docker_bed: _DockerBed, containers: ContainerFactory
) -> Iterator[DockerdControl]:
    """DockerdControl for the private dockerd; skips the test otherwise.

    (Depends on `containers` so that their removal runs after dockerd is back.)
    """
    if not _docker_bed.private:
        pytest.skip(
            "stopping dockerd needs the suite's private dockerd "
            "(scripts/stack/dockerd-up, not shared with xdist workers); "
            f"DOCKER_HOST is {_docker_bed.host}"
        )
    control = DockerdControl(_docker_bed)
    yield control
    if control.stopped:
        control.start()


@pytest.fixture
def stop_dockerd(restart_dockerd: DockerdControl) -> Callable[[], None]:
    """Stop the private dockerd, keeping its containers."""
    return restart_dockerd.stop


@pytest.fixture
def start_dockerd(restart_dockerd: DockerdControl) -> Callable[[], None]:
    """Start the private dockerd again; returns once it answers."""
    return restart_dockerd.start


# ==========================================================================
# (end of test bed)
# ==========================================================================


# ==========================================================================
# A failed test shows what the remedyd processes it started logged and audited
# ==========================================================================


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from tests import harness

    harness.STARTED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    from tests import harness

    report = yield
    if report.failed and call.when in ("call", "teardown"):
        for daemon in harness.STARTED:
            report.sections.append((f"remedyd {daemon.workdir.name}", daemon.post_mortem()))
    return report


# ==========================================================================
# asyncio hygiene: a test must not leave tasks running behind it
# ==========================================================================


@pytest.fixture(autouse=True)
async def no_leftover_tasks() -> Any:
    import asyncio

    yield
    current = asyncio.current_task()
    await asyncio.sleep(0)  # let tasks that were just cancelled finish
    leftover = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for task in leftover:
        task.cancel()
    assert not leftover, f"test left asyncio tasks running: {leftover}"


# ==========================================================================
# A small real filesystem, for a real ENOSPC without filling the machine's disk
# ==========================================================================


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """tmpfs("64k") -> a freshly mounted tmpfs of that size (skips unless root may mount)."""
    mounted: list[Path] = []
    mount = shutil.which("mount")

    def make(size: str) -> Path:
        if os.geteuid() != 0 or mount is None:
            pytest.skip("mounting a tmpfs needs root and mount(8)")
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(where)
        return where

    yield make
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], check=False)


# ==========================================================================
# Alertmanager: Debian's prometheus-alertmanager on loopback
# ==========================================================================
#
# `alertmanager` (function): start(webhook_url, http_config=..., max_alerts=...) runs a
# fresh Alertmanager (scripts/stack/alertmanager-up: group_wait 0s, group_interval 1s,
# one webhook receiver with send_resolved) on a free port and returns an
# AlertmanagerInstance; every one started is stopped at the end of the test.
# `alertmanager_stack` (session) stops any left at the end of the session.
# AlertmanagerInstance.post_alerts() writes alerts through API v2 as Prometheus does;
# .amtool(...) runs amtool against it; .metric() reads its own /metrics.


@dataclass
class AlertmanagerInstance:
    url: str
    port: int

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        import urllib.request

        request = urllib.request.Request(f"{self.url}/api/v2/alerts",
                                         json.dumps(alerts).encode(),
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def amtool(self, *args: str) -> str:
        exe = shutil.which("amtool") or "/usr/bin/amtool"
        done = subprocess.run([exe, f"--alertmanager.url={self.url}", *args],
                              capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"amtool {' '.join(args)} failed: {done.stderr}")
        return done.stdout.strip()

    def metric(self, name: str, **labels: str) -> float:
        import urllib.request

        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == name
                   and all(sample.labels.get(k) == v for k, v in labels.items()))


class AlertmanagerStack:
    def __init__(self) -> None:
        self.running: set[int] = set()

    def start(self, webhook_url: str, *, http_config: str = "", max_alerts: int = 0,
              port: int | None = None) -> AlertmanagerInstance:
        from tests.harness import free_port

        port = port or free_port()
        env = {**os.environ, "AM_WEBHOOK_HTTP_CONFIG": http_config,
               "AM_WEBHOOK_MAX_ALERTS": str(max_alerts)}
        url = run_stack("alertmanager-up", str(port), webhook_url, env=env)
        self.running.add(port)
        return AlertmanagerInstance(url, port)

    def stop(self, port: int) -> None:
        run_stack("alertmanager-down", str(port))
        self.running.discard(port)


@pytest.fixture(scope="session")
def alertmanager_stack() -> Iterator[AlertmanagerStack]:
    stack = AlertmanagerStack()
    try:
        yield stack
    finally:
        for port in list(stack.running):
            stack.stop(port)


@pytest.fixture
def alertmanager(alertmanager_stack: AlertmanagerStack) -> Iterator[AlertmanagerStack]:
    before = set(alertmanager_stack.running)
    yield alertmanager_stack
    for port in alertmanager_stack.running - before:
        alertmanager_stack.stop(port)


# ==========================================================================
# KPIs: a real Prometheus scraping a small test service
# ==========================================================================
#
# `kpi_stack` (session): tests/kpi_service.py's service on 127.0.0.1 (one knob per
# `service` label: error ratio, latency) and Debian's Prometheus
# (scripts/stack/prometheus-up, scrape and evaluation every 1 s) scraping it, both
# stopped at the end. KpiStack.stop_prometheus()/start_prometheus() stop and start
# that Prometheus mid-test (its data kept); KpiStack.query() asks it directly.


@dataclass
class KpiStack:
    url: str
    port: int
    service: Any  # tests.kpi_service.KpiService

    def stop_prometheus(self) -> None:
        run_stack("prometheus-down", str(self.port))

    def start_prometheus(self) -> None:
        run_stack("prometheus-up", str(self.port), self.service.address,
                  env={**os.environ, "PROM_KEEP_DATA": "1"})

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector's samples (`metric`, `value`), [] when Prometheus is down."""
        import urllib.error
        import urllib.parse
        import urllib.request

        body = urllib.parse.urlencode({"query": promql}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", body, timeout=5) as answer:
                result: list[dict[str, Any]] = json.loads(answer.read())["data"]["result"]
                return result
        except (urllib.error.URLError, OSError):
            return []


@pytest.fixture(scope="session")
def kpi_stack() -> Iterator[KpiStack]:
    from tests.harness import free_port
    from tests.kpi_service import KpiService

    service = KpiService(port=free_port()).start()
    port = free_port()
    try:
        url = run_stack("prometheus-up", str(port), service.address,
                        env={**os.environ, "PROM_WAIT_SCRAPE": "1"})
        yield KpiStack(url, port, service)
    finally:
        run_stack("prometheus-down", str(port))
        service.stop()
