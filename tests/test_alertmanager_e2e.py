"""Alertmanager -> remedyd, both real: Debian's Alertmanager routes alerts posted to its
API v2 to remedyd's webhook with credentials from its http_config; remedyd acts on a
firing alert, closes the incident on the resolved one, and leaves alone what an
operator silenced with amtool. A 5xx from remedyd makes Alertmanager retry, and the
retry takes only what the first delivery missed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from tests.conftest import AlertmanagerInstance, AlertmanagerStack
from tests.harness import DaemonProcess, WebhookSink, free_port, wait_for
from tests.webhookkit import rfc3339, until, webhook_server

TOKEN = "e2e-token-0123456789"
RULES = """
rules:
  - name: page-on-alert
    source: webhook
    match: {kind: alert, action: [firing]}
    when: event.attributes.labels.remedyd_test == "e2e"
    labels: {team: core}
    actions:
      - notify.webhook: {message: "an alert fired"}
"""


def am_alert(name: str, ended: bool = False, **labels: str) -> dict[str, Any]:
    """An alert as Prometheus posts it to /api/v2/alerts (resolved: endsAt in the past)."""
    now = time.time()
    posted: dict[str, Any] = {"labels": {"alertname": name, "remedyd_test": "e2e", **labels},
                              "annotations": {"summary": f"{name} fired"},
                              "startsAt": rfc3339(now - 60),
                              "generatorURL": "http://prometheus.invalid/graph"}
    posted["endsAt"] = rfc3339(now - 1 if ended else now + 300)
    return posted


def daemon_with(tmp_path: Path, sink: WebhookSink, am_port: int,
                **webhooks: Any) -> DaemonProcess:
    return DaemonProcess(tmp_path / "remedyd", RULES, webhook_url=sink.url, extra={
        "webhooks": {"alertmanager": True, **webhooks},
        "alertmanager": {"url": f"http://127.0.0.1:{am_port}"},
        # One notification per incident is not what is measured here.
        "notify": {"max_notifications": 100},
    })


def decisions(daemon: DaemonProcess, alertname: str) -> list[dict[str, Any]]:
    return [r for r in daemon.audit("decision")
            if r["event"]["subject"]["name"] == alertname]


def start_pair(tmp_path: Path, alertmanager: AlertmanagerStack,
               sink: WebhookSink) -> tuple[DaemonProcess, AlertmanagerInstance]:
    am_port = free_port()
    daemon = daemon_with(tmp_path, sink, am_port, alertmanager_token=TOKEN)
    daemon.start()
    am = alertmanager.start(f"{daemon.url}/webhooks/alertmanager", port=am_port,
                            http_config=f"{{authorization: {{credentials: {TOKEN}}}}}")
    return daemon, am


def test_a_firing_alert_is_acted_on_and_the_resolved_one_closes_it(
        tmp_path: Path, alertmanager: AlertmanagerStack) -> None:
    with WebhookSink() as sink:
        daemon, am = start_pair(tmp_path, alertmanager, sink)
        try:
            am.post_alerts([am_alert("DiskFull", severity="critical")])
            wait_for(lambda: sink.bodies, 20, "the notification for the firing alert")
            (page,) = sink.bodies
            assert page["rule"] == "page-on-alert"
            assert page["event"]["subject"]["name"] == "DiskFull"
            assert page["event"]["attributes"]["labels"]["severity"] == "critical"
            (decided,) = decisions(daemon, "DiskFull")
            assert decided["decision"] == "act"
            assert {"guard": "silence", "verdict": "ok"} in decided["guards"]

            am.post_alerts([am_alert("DiskFull", ended=True, severity="critical")])
            resolved = wait_for(lambda: [
                r for r in daemon.audit("state") if r["rule"] == "page-on-alert"
                and r["change"] == "resolved"], 20, "the incident to be resolved")
            assert resolved[0]["incident"] == decided["incident"]
            assert resolved[0]["event"]["action"] == "resolved"
            assert len(sink.bodies) == 1 and len(decisions(daemon, "DiskFull")) == 1
        finally:
            daemon.stop()


def test_a_silence_made_with_amtool_stops_the_action(
        tmp_path: Path, alertmanager: AlertmanagerStack) -> None:
    with WebhookSink() as sink:
        daemon, am = start_pair(tmp_path, alertmanager, sink)
        try:
            # `team` is the rule's label, not the alerts': Alertmanager still routes them
            # (its silences match alerts), and remedyd's decision on checkout is silenced.
            sid = am.amtool("silence", "add", "team=core", "service=checkout",
                            "--author=ops@example", "--comment=planned reboot",
                            "--duration=10m")
            am.post_alerts([am_alert("Overload", service="checkout")])
            wait_for(lambda: decisions(daemon, "Overload"), 20, "the decision on checkout")
            am.post_alerts([am_alert("Overload2", service="cart")])
            wait_for(lambda: sink.bodies, 20, "the notification for cart")
            assert [b["event"]["subject"]["name"] for b in sink.bodies] == ["Overload2"]
            (suppressed,) = decisions(daemon, "Overload")
            assert suppressed["decision"] == "suppressed"
            assert suppressed["suppressed_by"] == "silence"
            assert suppressed["reason"] == f"silence {sid} by ops@example: 'planned reboot'"
            assert daemon.metric("remedyd_decisions_suppressed_total", rule="page-on-alert",
                                 guard="silence") == 1
        finally:
            daemon.stop()


async def test_a_5xx_makes_alertmanager_retry_and_the_retry_is_de_duplicated(
        alertmanager: AlertmanagerStack) -> None:
    # In-process, to fill the engine's queue: room for one alert of the two.
    async with webhook_server(queue_size=10, alertmanager=True) as served:
        served.fill_bus(leave=1)
        am = await asyncio.to_thread(alertmanager.start, f"{served.url}/webhooks/alertmanager")
        await asyncio.to_thread(am.post_alerts, [am_alert("Retried", n="1"),
                                                 am_alert("Retried", n="2")])

        def answered(code: str) -> float:
            return served.metric("remedyd_webhook_requests_total", endpoint="alertmanager",
                                 code=code)

        await until(lambda: answered("503"), 20, "remedyd's 503")
        taken = served.drain_fillers()
        await until(lambda: answered("200"), 20, "Alertmanager's retry to be taken")
        taken += served.events()
        assert sorted(str(e.attributes["labels"]["n"]) for e in taken  # type: ignore[index]
                      ) == ["1", "2"]
        assert served.metric("remedyd_webhook_alerts_total", status="firing",
                             outcome="duplicate") >= 1
        # Alertmanager's own count: a request failed, and it tried again.
        requests = {name: await asyncio.to_thread(am.metric, name, integration="webhook")
                    for name in ("alertmanager_notification_requests_failed_total",
                                 "alertmanager_notification_requests_total")}
        assert requests["alertmanager_notification_requests_failed_total"] >= 1
        assert requests["alertmanager_notification_requests_total"] >= 2


def test_wrong_credentials_get_a_401(tmp_path: Path, alertmanager: AlertmanagerStack) -> None:
    with WebhookSink() as sink:
        am_port = free_port()
        daemon = daemon_with(tmp_path, sink, am_port, alertmanager_username="am",
                             alertmanager_password="right-password")
        daemon.start()
        try:
            am = alertmanager.start(
                f"{daemon.url}/webhooks/alertmanager", port=am_port,
                http_config="{basic_auth: {username: am, password: wrong-password}}")
            am.post_alerts([am_alert("Unauthorised")])
            wait_for(lambda: daemon.metric("remedyd_webhook_requests_total",
                                           endpoint="alertmanager", code="401"), 20,
                     "remedyd to refuse Alertmanager's credentials")
            wait_for(lambda: am.metric("alertmanager_notifications_failed_total",
                                       integration="webhook"), 20,
                     "Alertmanager to count the failed notification")
            # The right password, as Alertmanager sends it (config reloaded in place).
            alertmanager.start(f"{daemon.url}/webhooks/alertmanager", port=am_port,
                               http_config="{basic_auth: {username: am, "
                                           "password: right-password}}")
            wait_for(lambda: sink.bodies, 20, "the notification once the credentials match")
            assert daemon.metric("remedyd_webhook_alerts_total", outcome="accepted") == 1
        finally:
            daemon.stop()


async def test_alerts_left_out_by_max_alerts_are_counted(
        alertmanager: AlertmanagerStack) -> None:
    async with webhook_server(alertmanager=True) as served:
        am = await asyncio.to_thread(alertmanager.start, f"{served.url}/webhooks/alertmanager",
                                     max_alerts=1)
        await asyncio.to_thread(am.post_alerts, [am_alert("Many", n=str(i)) for i in range(3)])
        # Two of three left out of the group's notification (one more may come first,
        # should Alertmanager flush the group before it holds all three).
        await until(lambda: served.metric("remedyd_webhook_truncated_alerts_total",
                                          receiver="webhook") >= 2, 20, "truncatedAlerts")
