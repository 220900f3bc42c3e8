"""deploy/compose's remedyd service run for real on the test dockerd, with the settings
the Compose file gives it: its user, the socket's group, a read-only root with its tmpfs,
no capabilities, no new privileges, the socket bind-mounted :ro, its config and the
bundled rules mounted where it reads them, and its health check.

No Compose plugin here, so the service's keys are turned into `docker run` options, on the
image the suite builds from the Dockerfile (the `remedyd_image` fixture)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ContainerFactory, docker_inspect
from tests.harness import wait_for

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy/compose/docker-compose.yml"
SOCKET = "/var/run/docker.sock"
# Unhealthy at once, and quick to restart (busybox as PID 1 ignores SIGTERM otherwise).
SICK = ("--health-cmd", "/bin/false", "--health-interval", "1s", "--health-retries", "1")
STOPS_ON_TERM = ("sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${NAME:-default}, the one form the file uses."""
    if value.startswith("${") and value.endswith("}") and ":-" in value:
        name, _, default = value[2:-1].partition(":-")
        return env.get(name) or default
    return value


def run_options(service: dict[str, Any], socket: str, state: Path) -> list[str]:
    """The service's keys as `docker run` options, the socket and state from the test."""
    env = {"DOCKER_GID": str(os.stat(socket).st_gid)}
    opts = ["--user", service["user"], *(["--read-only"] if service["read_only"] else [])]
    opts += [arg for gid in service["group_add"] for arg in ("--group-add",
                                                             interpolate(gid, env))]
    opts += [arg for path in service["tmpfs"] for arg in ("--tmpfs", path)]
    opts += [arg for cap in service["cap_drop"] for arg in ("--cap-drop", cap)]
    opts += [arg for opt in service["security_opt"] for arg in ("--security-opt", opt)]
    opts += ["--memory", service["mem_limit"], "--pids-limit", str(service["pids_limit"])]
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        if source == SOCKET:
            source = socket.removeprefix("unix://")
        elif source.startswith("."):
            source = str((COMPOSE.parent / source).resolve())
        else:  # the named state volume: a directory the image would own as its user
            source = str(state)
        opts += ["-v", ":".join([source, target, *mode])]
    opts += [arg for key, value in service["environment"].items()
             for arg in ("-e", f"{key}={value}")]
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD"
    # The file's check as it is; only its 30 s interval is shortened.
    opts += ["--health-cmd", shlex.join(check[1:]), "--health-interval", "1s"]
    return opts


def audit(state: Path, kind: str) -> list[dict[str, Any]]:
    path = state / "audit.jsonl"
    if not path.exists():
        return []
    records = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return [r for r in records if r.get("kind") == kind]


def test_the_compose_service_runs_hardened_and_heals_only_labelled_containers(
        docker_host: str, containers: ContainerFactory, remedyd_image: str,
        tmp_path: Path) -> None:
    if not docker_host.startswith("unix://") or os.geteuid() != 0:
        # The socket is bind-mounted, and the state directory is chowned to the image's user.
        pytest.skip("needs a local engine on a unix socket, and root")
    service = yaml.safe_load(COMPOSE.read_text())["services"]["remedyd"]
    assert service["image"] == "remedyd:local" and service["build"] == "../.."
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, int(service["user"]), -1)
    remedyd = containers(*run_options(service, docker_host.removeprefix("unix://"), state),
                         image=remedyd_image, command=service.get("command", ()))

    def health() -> str:
        found: str = docker_inspect(docker_host, remedyd)["State"]["Health"]["Status"]
        assert found != "unhealthy", found
        return found

    wait_for(lambda: health() == "healthy", 60, "remedyd's Compose health check to pass")
    ours = containers(*SICK, "--label", "remedyd.enable=true", command=STOPS_ON_TERM)
    theirs = containers(*SICK, command=STOPS_ON_TERM)
    before = docker_inspect(docker_host, theirs)["State"]["StartedAt"]

    wait_for(lambda: [r for r in audit(state, "outcome") if r["target"]["id"] == ours
                      and any(s["outcome"] == "success" for s in r["steps"])], 60,
             "the bundled rule to restart the labelled container")
    [refused] = wait_for(lambda: [r for r in audit(state, "decision")
                                  if r["target"]["id"] == theirs
                                  and r["rule"] == "docker-restart-unhealthy"], 30,
                         "the unlabelled container's decision")
    assert refused["suppressed_by"] == "scope", refused
    assert docker_inspect(docker_host, theirs)["State"]["StartedAt"] == before
    running = docker_inspect(docker_host, remedyd)
    assert running["State"]["Running"] and running["HostConfig"]["ReadonlyRootfs"]
    assert running["Config"]["User"] == "10001"
    # remedyd's own Docker checks find in its container only what it needs (the socket and
    # its mounted configuration): its hardening holds.
    wait_for(lambda: [r for r in audit(state, "decision") if r["target"]["id"] == remedyd
                      and r["rule"] == "docker-socket-mounted"], 30,
             "the socket finding on remedyd's own container")
    findings = {r["rule"] for r in audit(state, "decision") if r["target"]["id"] == remedyd}
    assert findings.isdisjoint({
        "docker-no-memory-limit", "docker-no-pids-limit", "docker-root-user",
        "docker-writable-rootfs", "docker-no-new-privileges-unset",
        "docker-capabilities-added", "docker-privileged"}), findings
