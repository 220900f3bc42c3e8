"""A ladder in a real daemon on a real dockerd: a container that stays unhealthy whatever
is done to it; the audit log tells the whole story under one incident id."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.conftest import ContainerFactory, docker_cli
from tests.harness import DaemonProcess, WebhookSink, wait_for
from tests.test_docker_e2e import HEALTH_FAILS

CASE = f"case-{uuid.uuid4().hex[:12]}"
HEALTHY = 'event.action == "health_status" && event.attributes.health == "healthy"'
LADDER = f"""
rules:
  - name: heal-ladder
    source: docker
    when: >-
      event.action == "health_status" && event.attributes.health == "unhealthy"
      && event.attributes["remedyd-case"] == "{CASE}"
    # A restarted container reports health "starting" first: that is not a recovery.
    clear_when: event.attributes.health == "healthy"
    cooldown: 1h
    actions:
      - docker.restart: {{timeout: 1s}}
        verify: {{within: 4s}}
    escalate:
      - docker.restart: {{timeout: 1s}}
        verify: {{within: 4s, until: '{HEALTHY}'}}
"""


def story(daemon: DaemonProcess, incident: str) -> list[tuple[str, int, str]]:
    """What the incident did, in order; the engine's repeats of the first decision while
    the container stays unhealthy (refused, each audited) left out."""
    kinds = ("decision", "outcome", "verification", "pause")
    return [(r["kind"], r.get("step", 0),
             r["outcome"] if r["kind"] in ("outcome", "verification")
             else str(r.get("decision", r.get("paused"))))
            for r in daemon.audit() if r.get("incident") == incident and r["kind"] in kinds
            and r.get("decision") != "suppressed"]


def test_the_audit_log_tells_a_failed_ladder_under_one_incident(
        tmp_path: Path, docker_host: str, containers: ContainerFactory) -> None:
    with WebhookSink() as sink:
        # No coalescing: each unhealthy report is judged, so each refusal is audited.
        daemon = DaemonProcess(tmp_path / "d", LADDER, docker_url=docker_host,
                               webhook_url=sink.url,
                               extra={"safety": {"coalesce_window": "0s"}}).start()
        try:
            cid = containers(*HEALTH_FAILS, "--label", f"remedyd-case={CASE}")
            wait_for(lambda: sink.bodies, 60, "the ladder's closing notification")
            [first, *_] = [r for r in daemon.audit("decision") if r["target"]["id"] == cid]
            incident = first["incident"]
            wait_for(lambda: story(daemon, incident)[-1][0] == "outcome", 10,
                     "the notification's outcome")
            assert story(daemon, incident) == [
                ("decision", 0, "act"), ("outcome", 0, "success"),
                ("verification", 0, "not_recovered"),
                ("decision", 1, "act"), ("outcome", 1, "success"),
                ("verification", 1, "not_recovered"),
                ("pause", 0, "True"),
                ("decision", 2, "act"), ("outcome", 2, "success")]
            [body] = sink.bodies
            assert body["incident"] == incident and "paused" in body["message"]
            [notify] = [r for r in daemon.audit("decision")
                        if r["incident"] == incident and r.get("step") == 2]
            # An operator restarts it by hand: unhealthy again, and the rule stays paused.
            docker_cli(docker_host, "restart", "-t", "0", cid)
            later = wait_for(lambda: [r for r in daemon.audit("decision")
                                      if r["target"]["id"] == cid and r["seq"] > notify["seq"]],
                             30, "the decision on its next unhealthy report")
            assert later[0]["suppressed_by"] == "paused" and incident in later[0]["reason"]
            assert notify["actions"][0]["name"] == "notify.webhook"
            assert daemon.metric("remedyd_verifications_total", rule="heal-ladder",
                                 outcome="not_recovered") == 2
        finally:
            daemon.stop()
    assert daemon.verify_audit().returncode == 0
