"""Two replicas with leader election on the test bed: a webhook the Service happened to
deliver to the follower is handed to the leader, which alone acts, and the sender gets the
leader's answer; without a leader address the follower says to retry."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from tests.harness import DaemonProcess, WebhookSink
from tests.kube.server import KubeApiServer
from tests.test_kube_leader import FAST, one_leader
from tests.test_kube_rollback import until
from tests.webhookkit import SECRET, alert, notification, signed

TOKEN = "handover-token-0123456789"
RULES = """
rules:
  - name: page-on-alert
    source: webhook
    match: {kind: alert, action: [firing]}
    actions:
      - notify.webhook: {message: "an alert fired"}
  - name: page-on-ci
    source: webhook
    match: {kind: generic}
    actions:
      - notify.webhook: {message: "CI said so"}
"""


def replica(tmp_path: Path, kubeconfig: Path, name: str, sink: WebhookSink,
            advertise: bool = True) -> DaemonProcess:
    # POD_IP, as the downward API sets it: the leader's address is POD_IP:<its port>.
    return DaemonProcess(tmp_path / name, RULES, webhook_url=sink.url,
                         env={"POD_IP": "127.0.0.1"} if advertise else {}, extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig), "kinds": ["pods"]},
        "kubernetes.leader_election": {**FAST, "identity": name},
        "webhooks": {"alertmanager": True, "alertmanager_token": TOKEN},
        "webhooks.generic.ci": {"secret": SECRET}})


def post(daemon: DaemonProcess, path: str, body: bytes, headers: dict[str, str]
         ) -> tuple[int, dict[str, Any], dict[str, str]]:
    request = urllib.request.Request(daemon.url + path, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read()), dict(refused.headers)


def holder_seen_by(daemon: DaemonProcess) -> str | None:
    checks = (daemon.readiness() or {}).get("checks", {})
    return next((c.get("holder") for c in checks.values() if "holder" in c), None)


async def leader_known(pair: list[DaemonProcess]) -> tuple[DaemonProcess, DaemonProcess]:
    """The leader, and the follower once it has read the Lease the leader holds."""
    leader, follower = await one_leader(*pair)
    identity = "a" if leader is pair[0] else "b"
    await until(lambda: holder_seen_by(follower) == identity, "the follower to read the "
                "leader's Lease", 10)
    return leader, follower


@pytest_asyncio.fixture
async def pair(kube: KubeApiServer) -> AsyncIterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    await asyncio.gather(*(asyncio.to_thread(d.stop) for d in started))


async def test_a_webhook_the_follower_gets_is_handled_by_the_leader_alone(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        pair: list[DaemonProcess]) -> None:
    kube.bed.add_node("node-1")
    with WebhookSink() as sink:
        pair.extend(replica(tmp_path, kubeconfig, name, sink) for name in ("a", "b"))
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in pair))
        leader, follower = await leader_known(pair)

        body = json.dumps(notification(alert("DiskFull"))).encode()
        status, answer, _ = await asyncio.to_thread(
            post, follower, "/webhooks/alertmanager", body, {"Authorization": f"Bearer {TOKEN}"})
        assert (status, answer["accepted"]) == (200, 1), answer
        await until(lambda: [b for b in sink.bodies if b["rule"] == "page-on-alert"],
                    "the leader's page", 10)
        assert [d["decision"] for d in leader.audit("decision")] == ["act"]
        assert follower.audit("decision") == []
        assert follower.metric("remedyd_webhook_handovers_total", result="handed_over") == 1

        # Signed by the sender, judged by the leader: the signature travels with the body.
        ci = json.dumps({"build": 42, "result": "failed"}).encode()
        delivery = signed(ci)
        status, answer, _ = await asyncio.to_thread(
            post, follower, "/webhooks/generic/ci", ci, delivery)
        assert (status, answer) == (200, {"accepted": 1})
        await until(lambda: [b for b in sink.bodies if b["rule"] == "page-on-ci"],
                    "the leader's page for CI", 10)

        # The leader's refusals reach the sender as they are, with their headers.
        status, answer, headers = await asyncio.to_thread(
            post, follower, "/webhooks/alertmanager", body, {"Authorization": "Bearer wrong"})
        assert status == 401 and "credentials" in answer["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, answer, _ = await asyncio.to_thread(
            post, follower, "/webhooks/generic/ci", ci, delivery)
        assert status == 409, answer  # the same delivery again: the leader took it already
        assert [b["rule"] for b in sink.bodies] == ["page-on-alert", "page-on-ci"]
        assert follower.audit("decision") == []


async def test_without_the_leaders_address_the_follower_says_retry(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        pair: list[DaemonProcess]) -> None:
    kube.bed.add_node("node-1")
    with WebhookSink() as sink:
        pair.extend(replica(tmp_path, kubeconfig, name, sink, advertise=False)
                    for name in ("a", "b"))
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in pair))
        leader, follower = await leader_known(pair)
        body = json.dumps(notification(alert("DiskFull"))).encode()
        status, answer, headers = await asyncio.to_thread(
            post, follower, "/webhooks/alertmanager", body, {"Authorization": f"Bearer {TOKEN}"})
        assert status == 503 and headers["Retry-After"] == "1"
        holder = "a" if leader is pair[0] else "b"
        assert f"{holder} holds the lease but wrote no address" in answer["error"]
        assert follower.audit("decision") == [] and sink.bodies == []
        # Straight to the leader it is taken, as from a lone replica.
        status, answer, _ = await asyncio.to_thread(
            post, leader, "/webhooks/alertmanager", body, {"Authorization": f"Bearer {TOKEN}"})
        assert (status, answer["accepted"]) == (200, 1)
