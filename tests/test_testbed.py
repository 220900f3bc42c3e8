"""The test bed itself works: a real dockerd, the busybox image, health
checks, and stopping/starting dockerd without losing containers."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import ContainerFactory, DockerdControl, docker_inspect, docker_ping
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
