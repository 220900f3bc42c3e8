"""POST /webhooks/alertmanager: Alertmanager's payload (version 4) -> one event per alert,
re-deliveries recognised, credentials checked in constant time, bodies bounded, and no
input a 5xx but a full engine queue (503, so Alertmanager retries)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
from pathlib import Path

import pytest

from daemon.core.errors import ConfigError
from daemon.settings import load_settings
from tests.webhookkit import alert, notification, webhook_server

PATH = "/webhooks/alertmanager"


async def test_each_alert_becomes_an_event_firing_and_resolved() -> None:
    async with webhook_server(alertmanager=True) as served:
        firing = alert("HighErrorRate", service="api", namespace="shop")
        status, answer, _ = await served.post(PATH, notification(firing))
        assert (status, answer) == (200, {"accepted": 1, "duplicates": 0, "dropped": 0})
        resolved = {**firing, "status": "resolved", "endsAt": "2026-01-02T03:09:05.5Z"}
        status, _, _ = await served.post(PATH, notification(resolved))
        assert status == 200
        first, second = served.events()
    assert (first.source, first.kind, first.action) == ("webhook", "alert", "firing")
    assert first.subject.as_dict() == {"source": "webhook", "kind": "alert",
                                       "name": "HighErrorRate", "id": firing["fingerprint"],
                                       "namespace": ""}
    assert first.attributes == {
        "labels": firing["labels"], "annotations": firing["annotations"], "status": "firing",
        "fingerprint": firing["fingerprint"], "startsAt": firing["startsAt"],
        "endsAt": firing["endsAt"], "generatorURL": firing["generatorURL"],
        "receiver": "remedyd", "groupKey": '{}:{alertname="HighErrorRate"}'}
    assert first.resolves == ()
    assert first.occurred_at == pytest.approx(1767323045.123457)  # startsAt, to the us
    # The resolved alert ends the firing one: the engine closes its incident.
    assert (second.action, second.resolves) == ("resolved", ("firing",))
    assert second.subject == first.subject
    assert second.occurred_at == pytest.approx(1767323345.5)  # endsAt
    assert second.id != first.id


async def test_re_deliveries_are_recognised_by_fingerprint_starts_at_and_status() -> None:
    async with webhook_server(alertmanager=True) as served:
        one, two = alert("A"), alert("B")
        assert (await served.post(PATH, notification(one)))[0] == 200
        # A retry, the HA peer's copy, and the group re-sent with one more alert.
        for body in (notification(one), notification(one), notification(one, two)):
            status, _, _ = await served.post(PATH, body)
            assert status == 200
        _, answer, _ = await served.post(PATH, notification(one, two))
        assert answer == {"accepted": 0, "duplicates": 2, "dropped": 0}
        # Fired again later (a new startsAt), and resolved: each a new occurrence.
        again = {**one, "startsAt": "2026-01-02T04:00:00Z"}
        done = {**one, "status": "resolved"}
        _, answer, _ = await served.post(PATH, notification(again, done))
        assert answer["accepted"] == 2
        events = served.events()
        assert served.metric("remedyd_webhook_alerts_total", status="firing",
                             outcome="duplicate") == 5
    assert [(e.subject.name, e.action) for e in events] == [
        ("A", "firing"), ("B", "firing"), ("A", "firing"), ("A", "resolved")]


async def test_a_full_queue_is_a_503_and_the_retry_takes_only_what_was_missed() -> None:
    async with webhook_server(queue_size=10, alertmanager=True) as served:
        served.fill_bus(leave=1)
        body = notification(alert("A"), alert("B"))
        status, answer, headers = await served.post(PATH, body)
        assert status == 503
        assert answer["accepted"] == 1 and answer["dropped"] == 1
        assert headers["Retry-After"] == "1"
        taken = served.drain_fillers()
        status, answer, _ = await served.post(PATH, body)  # Alertmanager's retry
        assert (status, answer) == (200, {"accepted": 1, "duplicates": 1, "dropped": 0})
        taken += served.events()
    assert sorted(e.subject.name for e in taken) == ["A", "B"]


@pytest.mark.parametrize("config,header", [
    ({"alertmanager_token": "tok3n"}, "Bearer tok3n"),
    ({"alertmanager_username": "am", "alertmanager_password": "pw:1"},
     "Basic " + base64.b64encode(b"am:pw:1").decode()),
])
async def test_configured_credentials_are_required(config: dict[str, str], header: str) -> None:
    body = notification(alert())
    async with webhook_server(alertmanager=True, **config) as served:
        status, answer, headers = await served.post(PATH, body)
        assert status == 401 and "credentials" in answer["error"]
        scheme = header.split()[0]
        assert headers.getall("WWW-Authenticate")[0].startswith(scheme)
        wrong = [header[:-1] + ("x" if header[-1] != "x" else "y"), scheme, f"{scheme} ",
                 "Bearer " + header.split()[1] if scheme == "Basic" else "Basic dG9rM24=",
                 "Basic !!!", "Basic " + base64.b64encode(b"am").decode(), "\u00e9"]
        for value in wrong:
            status, _, _ = await served.post(PATH, body, {"Authorization": value})
            assert status == 401, value
        assert served.events() == []
        status, _, _ = await served.post(PATH, body, {"Authorization": header})
        assert status == 200
        status, _, _ = await served.post(PATH, body, {"Authorization": header.lower()[:6]
                                                      + header[6:]})
        assert status == 200  # the scheme is case-insensitive (RFC 9110)
        assert served.metric("remedyd_webhook_requests_total", endpoint="alertmanager",
                             code="401") == 1 + len(wrong)


async def test_both_kinds_of_credentials_may_be_configured() -> None:
    async with webhook_server(alertmanager=True, alertmanager_token="t0ken",
                              alertmanager_username="u", alertmanager_password="p") as served:
        status, _, headers = await served.post(PATH, notification(alert()))
        assert status == 401
        assert headers.getall("WWW-Authenticate") == [
            'Bearer realm="remedyd"', 'Basic realm="remedyd", charset="UTF-8"']
        for header in ("Bearer t0ken", "Basic " + base64.b64encode(b"u:p").decode()):
            assert (await served.post(PATH, notification(alert()), {"Authorization": header})
                    )[0] == 200


async def test_without_configured_credentials_none_are_needed() -> None:
    async with webhook_server(alertmanager=True) as served:
        assert (await served.post(PATH, notification(alert())))[0] == 200
        assert (await served.post(PATH, notification(alert()),
                                  {"Authorization": "Bearer anything"}))[0] == 200


async def test_a_body_over_the_limit_is_a_413_before_it_is_read() -> None:
    async with webhook_server(alertmanager=True, max_body_bytes=2048) as served:
        # Only the head is sent: the answer cannot have waited for the body.
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(f"POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     "Content-Length: 5000000\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.close()
        assert head.startswith(b"HTTP/1.1 413")

        # A chunked body has no length to read: it is cut off when it passes the limit.
        async def chunks():  # type: ignore[no-untyped-def]
            for _ in range(100):
                yield b" " * 1000

        async with served.session.post(served.url + PATH, data=chunks()) as answer:
            assert answer.status == 413
            assert "2048 bytes" in (await answer.json())["error"]
        body = json.dumps(notification(alert())).encode()
        assert (await served.post(PATH, body + b" " * (2048 - len(body))))[0] == 200


@pytest.mark.parametrize("body,field,says", [
    (b"{", "", "not JSON"),
    (b"\xff\xfe", "", "not UTF-8"),
    (b"[" * 100_000, "", "nested deeper"),
    (b'{"alerts": [], "x": NaN}', "", "not a number"),
    (b'{"alerts": [], "x": 1e999}', "", "overflows"),
    (b'{"alerts": ["\\ud800"]}', "$.alerts[0]", "surrogate"),
    (b"[]", "$", "expected an object, got array"),
    (b"{}", "$.alerts", "missing"),
    (b'{"alerts": {}}', "$.alerts", "expected an array"),
    (b'{"version": "3", "alerts": []}', "$.version", 'expected "4"'),
    (b'{"alerts": [], "truncatedAlerts": -1}', "$.truncatedAlerts", "count"),
    (b'{"alerts": [], "truncatedAlerts": true}', "$.truncatedAlerts", "count"),
    (b'{"alerts": [], "commonLabels": {"a": 1}}', "$.commonLabels.a", "expected a string"),
    (b'{"alerts": [], "status": "odd"}', "$.status", "firing"),
    (b'{"alerts": [7]}', "$.alerts[0]", "expected an object, got number"),
])
async def test_a_malformed_body_is_a_400_naming_the_field(body: bytes, field: str,
                                                          says: str) -> None:
    async with webhook_server(alertmanager=True) as served:
        status, answer, _ = await served.post(PATH, body)
    assert status == 400, answer
    assert answer["field"] == field and says in answer["error"], answer


@pytest.mark.parametrize("change,field", [
    ({"status": "pending"}, "$.alerts[0].status"),
    ({"status": None}, "$.alerts[0].status"),
    ({"fingerprint": ""}, "$.alerts[0].fingerprint"),
    ({"fingerprint": 12}, "$.alerts[0].fingerprint"),
    ({"labels": None}, "$.alerts[0].labels"),
    ({"labels": {"alertname": ["x"]}}, "$.alerts[0].labels.alertname"),
    ({"annotations": "x"}, "$.alerts[0].annotations"),
    ({"startsAt": "yesterday"}, "$.alerts[0].startsAt"),
    ({"startsAt": "2026-02-30T00:00:00Z"}, "$.alerts[0].startsAt"),
    ({"endsAt": 5}, "$.alerts[0].endsAt"),
    ({"generatorURL": {}}, "$.alerts[0].generatorURL"),
])
async def test_a_wrong_alert_is_a_400_naming_its_field(change: dict[str, object],
                                                       field: str) -> None:
    bad = {**alert(), **change}
    if change.get("status") is None and "status" in change:
        del bad["status"]
    async with webhook_server(alertmanager=True) as served:
        status, answer, _ = await served.post(PATH, notification(alert("ok"), bad))
        assert served.events() == []  # all or nothing: a 400 takes no alert
    assert status == 400 and answer["field"] == field.replace("[0]", "[1]"), answer


async def test_unknown_fields_are_accepted_and_optional_ones_may_be_missing() -> None:
    minimal = {"status": "firing", "labels": {}, "startsAt": "2026-01-02T03:04:05+02:00",
               "fingerprint": "abc", "future": {"x": [1]}}
    async with webhook_server(alertmanager=True) as served:
        status, answer, _ = await served.post(PATH, {"alerts": [minimal], "new": True})
        (event,) = served.events()
    assert status == 200, answer
    # No alertname (an alert posted by hand): its fingerprint names it.
    assert event.subject.name == "abc"
    assert event.occurred_at == 1767315845.0


async def test_truncated_alerts_are_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    async with webhook_server(alertmanager=True) as served:
        with caplog.at_level(logging.WARNING, "remedyd.source.webhook"):
            status, _, _ = await served.post(PATH, notification(alert(), truncated=7))
        assert status == 200
        assert served.metric("remedyd_webhook_truncated_alerts_total", receiver="remedyd") == 7
    assert "left 7 alert(s) out" in caplog.text and "max_alerts" in caplog.text


async def test_other_methods_and_paths_are_not_served() -> None:
    async with webhook_server(alertmanager=True) as served:
        async with served.session.get(served.url + PATH) as answer:
            assert answer.status == 405
        assert (await served.post("/webhooks/generic/ci", {}))[0] == 404
    async with webhook_server(generic={"ci": {"secret": "x" * 16}}) as served:
        assert (await served.post(PATH, notification(alert())))[0] == 404


@pytest.mark.parametrize("toml,says", [
    ('[webhooks]\nalertmanager_username = "am"\n', "go together"),
    ('[webhooks]\nalertmanager_token = ""\n', "alertmanager_token"),
    ('[webhooks.generic."Bad Name"]\nsecret = "0123456789abcdef"\n', "Bad Name"),
    ('[webhooks.generic.ci]\nsecret = "short"\n', "secret"),
])
def test_bad_webhook_settings_name_the_key(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "remedyd.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(path)


async def test_truncation_is_labelled_by_a_bounded_set_of_receivers() -> None:
    async with webhook_server(alertmanager=True) as served:
        for i in range(40):
            body = {**notification(alert(), truncated=1), "receiver": f"r{i}"}
            assert (await served.post(PATH, body))[0] == 200
        assert served.metric("remedyd_webhook_truncated_alerts_total", receiver="r0") == 1
        assert served.metric("remedyd_webhook_truncated_alerts_total", receiver="other") == 8
