"""[docker] scope against a real Docker engine: with "labelled", remedyd changes only the
containers labelled remedyd.enable=true and still notifies about every one; Compose's
project and service labels reach rules as event attributes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ContainerFactory, docker_inspect
from tests.harness import DaemonProcess, WebhookSink, wait_for

HEALTH_FAILS = ("--health-cmd", "/bin/false", "--health-interval", "1s", "--health-retries", "1")
OPTED_IN = ("--label", "remedyd.enable=true")
UNHEALTHY = 'event.action == "health_status" && event.attributes.health == "unhealthy"'

RULES = f"""
rules:
  - name: restart-unhealthy
    source: docker
    when: {UNHEALTHY}
    cooldown: 1m
    actions:
      - docker.restart: {{timeout: 1s}}
  - name: tell-unhealthy
    source: docker
    when: {UNHEALTHY}
    cooldown: 1m
    actions:
      - notify.webhook: {{}}
"""


def decisions(daemon: DaemonProcess, cid: str, rule: str) -> list[dict[str, Any]]:
    return [r for r in daemon.audit("decision")
            if r["target"]["id"] == cid and r["rule"] == rule]


def restarted(daemon: DaemonProcess, cid: str) -> list[dict[str, Any]]:
    return [step for r in daemon.audit("outcome") if r["target"]["id"] == cid
            for step in r["steps"]
            if step["action"] == "docker.restart" and step["outcome"] == "success"]


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Any:
    started: list[DaemonProcess] = []

    def make(rules: str, scope: str, **kwargs: Any) -> DaemonProcess:
        daemon = DaemonProcess(tmp_path / f"d{len(started)}", rules,
                               extra={"docker": {"scope": scope}}, **kwargs)
        started.append(daemon)
        return daemon.start()

    yield make
    for daemon in started:
        daemon.stop()


def test_labelled_scope_restarts_only_opted_in_containers_and_notifies_about_all(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    with WebhookSink() as sink:
        daemon = daemon_factory(RULES, "labelled", docker_url=docker_host,
                                webhook_url=sink.url)
        theirs = containers(*HEALTH_FAILS)
        ours = containers(*HEALTH_FAILS, *OPTED_IN)
        before = docker_inspect(docker_host, theirs)["State"]["StartedAt"]

        wait_for(lambda: restarted(daemon, ours), 30, "the labelled container's restart")
        [refused] = wait_for(lambda: decisions(daemon, theirs, "restart-unhealthy"), 30,
                             "the unlabelled container's refused decision")
        wait_for(lambda: [b for b in sink.bodies if b["target"]["id"] == theirs], 30,
                 "a notification about the unlabelled container")

    assert ("[docker] scope = labelled: only containers labelled remedyd.enable=true are "
            "restarted") in daemon.log()
    assert refused["decision"] == "suppressed"
    assert refused["suppressed_by"] == "scope"
    name = docker_inspect(docker_host, theirs)["Name"].lstrip("/")
    assert refused["reason"] == (f"out of scope: container {name} is not labelled "
                                 "remedyd.enable=true ([docker] scope = labelled)")
    # The refusal is the restart rule's one decision for this incident: nothing ran.
    assert restarted(daemon, theirs) == []
    assert docker_inspect(docker_host, theirs)["State"]["StartedAt"] == before
    assert daemon.metric("remedyd_decisions_suppressed_total", rule="restart-unhealthy",
                         guard="scope") == 1
    assert daemon.verify_audit().returncode == 0


def test_scope_all_restarts_an_unlabelled_container(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    daemon = daemon_factory(RULES, "all", docker_url=docker_host)
    theirs = containers(*HEALTH_FAILS)
    wait_for(lambda: restarted(daemon, theirs), 30, "the unlabelled container's restart")
    assert all(g["guard"] != "scope" for g in decisions(daemon, theirs,
                                                         "restart-unhealthy")[0]["guards"])


def test_a_rule_matching_the_compose_service_acts_on_that_service(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:
    rules = f"""
rules:
  - name: restart-minio
    source: docker
    when: >-
      {UNHEALTHY} && event.attributes.compose_project == "lake"
      && event.attributes.compose_service == "minio"
    actions:
      - docker.restart: {{timeout: 1s}}
"""
    daemon = daemon_factory(rules, "labelled", docker_url=docker_host)
    # As `docker compose up` labels a service's container.
    minio = containers(*HEALTH_FAILS, *OPTED_IN, "--label", "com.docker.compose.project=lake",
                       "--label", "com.docker.compose.service=minio")
    wait_for(lambda: restarted(daemon, minio), 30, "the minio service's restart")
    decision = decisions(daemon, minio, "restart-minio")[0]
    assert decision["event"]["attributes"]["com.docker.compose.service"] == "minio"
    assert decision["event"]["attributes"]["compose_service"] == "minio"
