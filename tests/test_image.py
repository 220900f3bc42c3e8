"""The container image, built for real from the Dockerfile on the test dockerd (the
`remedyd_image` fixture: no registry, see tests/conftest.py). Run read-only as its non-root
user with the engine's socket, on its bundled configuration and rules, it heals an unhealthy
container."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from tests.conftest import ContainerFactory, DockerCLIError, docker_cli, docker_inspect
from tests.harness import wait_for
from tests.test_docker_e2e import HEALTH_FILE

USER = "10001:10001"
STATE = "/var/lib/remedyd"
# What the image adds to its base: the venv with every extra, the rules, the config. The
# bytecode pip compiles is half of it, kept so that a read-only container starts without
# compiling kubernetes_asyncio's models on every start.
MAX_ADDED_MB = 160


def run_in(docker_host: str, image: str, *command: str, entrypoint: str = "") -> str:
    options = ["--entrypoint", entrypoint] if entrypoint else []
    return docker_cli(docker_host, "run", "--rm", "--network", "none", "--read-only",
                      *options, image, *command, timeout=120)


def test_the_image_is_configured_as_the_readme_says(docker_host: str, remedyd_image: str,
                                                    base_image: str) -> None:
    inspected = docker_inspect(docker_host, remedyd_image)
    config = inspected["Config"]
    assert config["User"] == USER
    assert config["Entrypoint"] == ["remedyd"] and config["Cmd"] == ["run"]
    assert config["Healthcheck"]["Test"] == ["CMD", "remedyd", "health"]
    assert STATE in config["Volumes"]
    assert "REMEDYD_CONFIG=/etc/remedyd/config.toml" in config["Env"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.title"] == "remedyd"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert len(labels["org.opencontainers.image.revision"]) == 40
    # The bundled configuration and rules load, from where the README says they are.
    checked = run_in(docker_host, remedyd_image, "check")
    assert checked.splitlines()[-1].startswith("ok: "), checked
    # Multi-stage: neither the build's sources nor pip reach the final image.
    run_in(docker_host, remedyd_image,
           "-c", "test ! -e /src && test ! -e /opt/remedyd/bin/pip "
           "&& test ! -e /opt/remedyd/lib/python3.11/site-packages/pip", entrypoint="sh")
    added = (inspected["Size"] - docker_inspect(docker_host, base_image)["Size"]) / 1e6
    assert added < MAX_ADDED_MB, f"the image adds {added:.0f} MB to its base"


def audit_records(docker_host: str, container: str) -> list[dict[str, Any]]:
    try:
        lines = docker_cli(docker_host, "exec", container, "cat", f"{STATE}/audit.jsonl")
    except DockerCLIError:
        return []  # not written yet
    return [json.loads(line) for line in lines.splitlines() if line.strip()]


def test_the_image_heals_an_unhealthy_container_read_only_as_its_user(
        docker_host: str, remedyd_image: str, containers: ContainerFactory) -> None:
    if not docker_host.startswith("unix://"):
        pytest.skip(f"the engine's socket must be mounted into the image; {docker_host} is "
                    "not a unix socket")
    socket = docker_host.removeprefix("unix://")
    # The bundled scope is "labelled": the container's owner opted in.
    sick = containers(*HEALTH_FILE, "--label", "remedyd.enable=true")
    wait_for(lambda: docker_inspect(docker_host, sick)["State"]["Health"]["Status"]
             == "healthy", 30, "the container to be healthy")
    started = docker_inspect(docker_host, sick)["State"]["StartedAt"]
    # As README "As a container" runs it: read-only, its own user, the socket and its group.
    # The image's own check command, asked every second rather than every 30 s.
    remedyd = containers("--read-only", "-v", f"{socket}:/var/run/docker.sock",
                         "--group-add", str(os.stat(socket).st_gid), "--health-interval", "1s",
                         image=remedyd_image, command=())

    # Its own HEALTHCHECK, `remedyd health` on /healthz, says it is up.
    wait_for(lambda: docker_inspect(docker_host, remedyd)["State"].get("Health", {})
             .get("Status") == "healthy", 60, "remedyd's HEALTHCHECK to pass")
    status = docker_cli(docker_host, "exec", remedyd, "cat", "/proc/1/status")
    assert any(line.split()[:2] == ["Uid:", "10001"] for line in status.splitlines()), status
    with pytest.raises(DockerCLIError, match="Read-only file system"):
        docker_cli(docker_host, "exec", remedyd, "touch", "/tmp/written")

    docker_cli(docker_host, "exec", sick, "touch", "/tmp/sick")
    wait_for(lambda: docker_inspect(docker_host, sick)["State"]["StartedAt"] != started, 60,
             "remedyd in the image to restart the unhealthy container")
    outcomes = wait_for(lambda: [r for r in audit_records(docker_host, remedyd)
                                 if r["kind"] == "outcome" and r["target"]["id"] == sick], 30,
                        "the restart's outcome in the audit log on the state volume")
    assert outcomes[0]["rule"] == "docker-restart-unhealthy"
    assert [(step["action"], step["outcome"]) for step in outcomes[0]["steps"]] == [
        ("docker.restart", "success")]
    verified = docker_cli(docker_host, "exec", remedyd, "remedyd", "audit", "verify",
                          f"{STATE}/audit.jsonl")
    assert "chain intact" in verified, verified
