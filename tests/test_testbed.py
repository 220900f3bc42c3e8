"""The test bed itself works: a real dockerd, the busybox image, health
checks, stopping/starting dockerd without losing containers, two stacks on one
host, and the commands a new user runs (scripts/setup, run, test)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    ROOT,
    ContainerFactory,
    DockerdControl,
    docker_cli,
    docker_inspect,
    docker_ping,
    run_stack,
)
from tests.harness import wait_for


def test_busybox_image_runs_commands(
    containers: ContainerFactory, docker: Callable[..., str]
) -> None:
    cid = containers(command=["sh", "-c", "echo hello; id -u; wget --help 2>&1 | head -1"])
    assert docker("wait", cid) == "0"
    logs = docker("logs", cid).splitlines()
    assert logs[:2] == ["hello", "0"]
    assert "BusyBox" in logs[2]
    assert docker("inspect", "-f", '{{index .Config.Labels "remedyd-test"}}', cid) == "1"


def test_health_check_reaches_unhealthy(containers: ContainerFactory, docker_host: str) -> None:
    cid = containers(
        "--health-cmd", "/bin/false", "--health-interval", "1s", "--health-retries", "1"
    )

    def health() -> str | None:
        status: str = docker_inspect(docker_host, cid)["State"]["Health"]["Status"]
        return status if status == "unhealthy" else None

    assert wait_for(health, 20, "health status unhealthy") == "unhealthy"


def test_dockerd_stop_start_keeps_containers(
    containers: ContainerFactory,
    restart_dockerd: DockerdControl,
    docker_host: str,
) -> None:
    created = containers(start=False)
    always = containers("--restart", "always")
    old_pid = docker_inspect(docker_host, always)["State"]["Pid"]

    restart_dockerd.stop()
    assert not docker_ping(docker_host)
    restart_dockerd.start()
    assert docker_ping(docker_host)

    assert docker_inspect(docker_host, created)["State"]["Status"] == "created"

    def running_again() -> bool:
        state = docker_inspect(docker_host, always)["State"]
        return bool(state["Running"]) and state["Pid"] != old_pid

    wait_for(running_again, 20, "the --restart always container to run again")


# --------------------------------------------------------------------------------------
# The commands a new user runs: scripts/setup, scripts/run, scripts/test
# --------------------------------------------------------------------------------------
# They run for real, in a copy of the checkout whose .venv is a stub: its python asks
# nothing of pip but logs what it was asked to install (and is the real interpreter for
# everything else), and its tools log their arguments. So a test sees what each command
# would install and run, in seconds, without touching the project's own .venv.

STUB_TOOLS = ("remedyd", "ruff", "mypy", "pytest", "lint-imports")


def _write_exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def stub_checkout(tmp: Path) -> Path:
    root = tmp / "checkout"
    shutil.copytree(ROOT / "scripts", root / "scripts")
    for name in ("pyproject.toml", "config.example.toml"):
        shutil.copy(ROOT / name, root / name)
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    log = root / "calls.log"
    _write_exe(
        venv_bin / "python",
        "#!/bin/sh\n"
        f'if [ "$1" = -m ] && [ "$2" = pip ]; then shift 2; echo "pip $*" >>{log}; exit 0; fi\n'
        f'exec {sys.executable} "$@"\n',
    )
    for tool in STUB_TOOLS:
        _write_exe(venv_bin / tool, f'#!/bin/sh\necho "{tool} $*" >>{log}\n')
    return root


def calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def pip_installs(root: Path) -> list[str]:
    """The requirement each `pip install` was given, e.g. '.' or '.[test]'."""
    return [line.split()[-1] for line in calls(root) if line.startswith("pip install")]


def run_script(root: Path, script: str, env: dict[str, str] | None = None,
               timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(root / "scripts" / script)], cwd=root, env=env or dict(os.environ),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def test_run_installs_only_what_running_needs(tmp_path: Path) -> None:
    root = stub_checkout(tmp_path)
    result = run_script(root, "run")
    assert result.returncode == 0, result.stderr
    assert pip_installs(root) == ["."]
    assert calls(root)[-1] == "remedyd run --config config.example.toml"


def test_test_adds_the_extras_and_run_afterwards_reinstalls_nothing(
    tmp_path: Path, docker_host: str
) -> None:
    root = stub_checkout(tmp_path)
    env = dict(os.environ, DOCKER_HOST=docker_host)
    for script in ("run", "test", "run", "test"):
        result = run_script(root, script, env)
        assert result.returncode == 0, f"scripts/{script}: {result.stderr}"
    assert pip_installs(root) == [".", ".[test]"]
    # One engine given: its tests would see each other's containers, so no workers.
    assert "pytest -q -n 0" in calls(root)


def test_a_changed_pyproject_reinstalls_what_was_there(tmp_path: Path, docker_host: str) -> None:
    root = stub_checkout(tmp_path)
    assert run_script(root, "test", dict(os.environ, DOCKER_HOST=docker_host)).returncode == 0
    with (root / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    assert run_script(root, "run").returncode == 0
    assert pip_installs(root) == [".[test]", ".[test]"]


def bare_path(tmp: Path, *extra: str) -> str:
    """A PATH with the basic tools scripts/setup needs, and none of python3, apt-get, sudo."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    tools = ["bash", "env", "dirname", "readlink", "id", "sha256sum", "cut", "tr", "cat", "rm",
             "mktemp", "tail", "printf", *extra]
    for tool in tools:
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_setup_without_python3_says_in_one_line_what_to_install(tmp_path: Path) -> None:
    root = stub_checkout(tmp_path)
    shutil.rmtree(root / ".venv")
    env = {"PATH": bare_path(tmp_path), "HOME": str(tmp_path)}
    result = run_script(root, "setup", env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "apt-get install python3 python3-venv" in lines[0]
    assert "3.11" in lines[0]
    assert not (root / ".venv").exists()


def test_setup_refuses_a_python_older_than_3_11_clearly(tmp_path: Path) -> None:
    root = stub_checkout(tmp_path)
    shutil.rmtree(root / ".venv")
    path = bare_path(tmp_path)
    # Debian 11's python3: a real interpreter that reports itself as 3.9
    _write_exe(
        Path(path) / "python3",
        "#!/bin/sh\n"
        'if [ "$1" = -c ]; then\n'
        f'  code=$2; shift 2; exec {sys.executable} -c "import sys\n'
        "sys.version_info = (3, 9, 2, 'final', 0)\n"
        '$code" "$@"\n'
        "fi\n"
        f'exec {sys.executable} "$@"\n',
    )
    result = run_script(root, "setup", {"PATH": path, "HOME": str(tmp_path)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "3.9" in lines[0] and "3.11" in lines[0] and "PYTHON=" in lines[0]
    assert not (root / ".venv").exists()


# --------------------------------------------------------------------------------------
# Stacks: each STACK_DIR's scripts touch only the processes of that stack
# --------------------------------------------------------------------------------------


def stack_env(stack_dir: Path) -> dict[str, str]:
    return dict(os.environ, STACK_DIR=str(stack_dir))


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ...; [] once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def running(pid: int) -> bool:
    """PID runs; a zombie (nothing here reaps orphans) does not count."""
    return proc_stat(pid)[:1] not in ([], ["Z"], ["X"])


def stack_pid(stack_dir: Path, pidfile: str) -> int | None:
    """The pid in one of the stack's pidfiles if that process runs."""
    try:
        pid = int((stack_dir / "docker" / pidfile).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if running(pid) else None


@pytest.fixture
def stack_base() -> Iterator[Path]:
    """A fresh directory for extra stacks (short: unix socket paths are limited); every
    stack under it is stopped and purged afterwards."""
    base = Path(tempfile.mkdtemp(prefix="rs-", dir="/tmp"))
    yield base
    # longest first: a stack nested in another's path goes down before the outer one
    for made in sorted(base.rglob("docker/daemon.json"), key=lambda p: -len(str(p))):
        run_stack("dockerd-down", "--purge", env=stack_env(made.parent.parent), timeout=120)
    shutil.rmtree(base, ignore_errors=True)


def test_a_second_stack_never_stops_the_first(stack_base: Path) -> None:
    second = stack_base / "s"
    # The first stack's paths end with the second's, so matching command lines by
    # substring would take the first stack's daemons for the second's.
    first = Path(f"{stack_base}/o{second}")
    host = run_stack("dockerd-up", env=stack_env(first)).partition("=")[2]
    cid = docker_cli(host, "run", "-d", "--network", "none", "--stop-timeout", "1",
                     "remedyd-test/busybox:latest", "sleep", "300")
    init_pid = docker_inspect(host, cid)["State"]["Pid"]
    containerd = stack_pid(first, "exec/containerd/containerd.pid")
    assert containerd

    def first_untouched() -> None:
        assert docker_ping(host)
        assert stack_pid(first, "exec/containerd/containerd.pid") == containerd
        state = docker_inspect(host, cid)["State"]
        assert state["Running"] and state["Pid"] == init_pid

    (second / "docker").mkdir(parents=True)
    run_stack("dockerd-down", env=stack_env(second))
    first_untouched()

    run_stack("dockerd-up", env=stack_env(second))
    run_stack("dockerd-down", "--purge", env=stack_env(second))
    first_untouched()


def _ctrl_c_as_from_a_terminal() -> None:
    """SIGINT as an interactive shell hands it to a command: default and unblocked. A
    suite started in the background (`scripts/test &`, nohup) runs with SIGINT ignored,
    which every child inherits and bash cannot trap, so the Ctrl-C below did nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_interrupted_test_run_leaves_no_dockerd_behind(stack_base: Path) -> None:
    root = stub_checkout(stack_base)
    prefix = stack_base / "w"
    worker_stack = Path(f"{prefix}-gw0")
    # The stub pytest starts a worker's dockerd as tests/conftest.py does, then hangs, so
    # the Ctrl-C below lands while the run holds it; no worker teardown ever stops it.
    _write_exe(root / ".venv" / "bin" / "pytest",
               f'#!/bin/sh\necho "pytest $*" >>{root / "calls.log"}\n'
               f'STACK_DIR="$REMEDYD_TEST_STACK_PREFIX-gw0" scripts/stack/dockerd-up >/dev/null\n'
               f'echo started >>{root / "calls.log"}\nexec sleep 60\n')
    env = dict(os.environ, REMEDYD_TEST_STACK_PREFIX=str(prefix))
    env.pop("DOCKER_HOST", None)
    env.pop("STACK_DIR", None)
    proc = subprocess.Popen([str(root / "scripts" / "test")], cwd=root, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_ctrl_c_as_from_a_terminal)
    try:
        wait_for(lambda: "started" in calls(root), 120, "the worker's dockerd to start")
        assert any(line.startswith("pytest -q -n 2 --dist load") for line in calls(root))
        dockerd = stack_pid(worker_stack, "docker.pid")
        assert dockerd, "the stub worker started no dockerd"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the middle of the run
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode != 0, stderr
    wait_for(lambda: stack_pid(worker_stack, "docker.pid") != dockerd, 30,
             f"the interrupted run's worker dockerd (pid {dockerd}) to stop")


def test_a_killed_dockerd_leaves_nothing_after_dockerd_down(stack_base: Path) -> None:
    stack = stack_base / "k"
    host = run_stack("dockerd-up", env=stack_env(stack)).partition("=")[2]
    cid = docker_cli(host, "run", "-d", "--network", "none", "remedyd-test/busybox:latest",
                     "sleep", "300")
    init_pid = docker_inspect(host, cid)["State"]["Pid"]
    shim_pid = int(proc_stat(init_pid)[1])
    dockerd = stack_pid(stack, "docker.pid")
    assert dockerd
    os.kill(dockerd, signal.SIGKILL)
    wait_for(lambda: not docker_ping(host), 10, "the killed dockerd to stop answering")

    run_stack("dockerd-down", env=stack_env(stack))

    assert not running(init_pid), "the container's process survived"
    assert not running(shim_pid), "the container's shim survived"
    assert stack_pid(stack, "exec/containerd/containerd.pid") is None
    assert str(stack) not in Path("/proc/self/mountinfo").read_text()
