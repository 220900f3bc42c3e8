"""POST /webhooks/generic/{name}: HMAC-SHA256 over "<timestamp>.<body>" with the webhook's
secret, timestamps within the replay window, each signed delivery taken once."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.webhookkit import SECRET, signed, webhook_server

PATH = "/webhooks/generic/ci"
HOOKS = {"ci": {"secret": SECRET}, "deploys": {"secret": "another-secret-of-16+",
                                               "replay_window": "1m"}}


async def test_a_signed_delivery_becomes_an_event() -> None:
    body = json.dumps({"action": "deployed", "subject": "api", "labels": {"env": "prod"},
                       "sha": "abc123"}).encode()
    async with webhook_server(generic=HOOKS) as served:
        status, answer, _ = await served.post(PATH, body, signed(body))
        (event,) = served.events()
    assert (status, answer) == (200, {"accepted": 1})
    assert (event.source, event.kind, event.action) == ("webhook", "generic", "deployed")
    assert event.subject.as_dict() == {"source": "webhook", "kind": "generic", "name": "api",
                                       "id": "", "namespace": ""}
    assert event.attributes == {"webhook": "ci", "payload": json.loads(body),
                                "labels": {"env": "prod"}}


async def test_without_action_subject_or_string_labels_the_defaults_apply() -> None:
    body = json.dumps({"action": 3, "subject": ["x"], "labels": {"n": 1}}).encode()
    async with webhook_server(generic=HOOKS) as served:
        assert (await served.post(PATH, body, signed(body)))[0] == 200
        (event,) = served.events()
    assert (event.action, event.subject.name, event.attributes["labels"]) == (
        "received", "ci", {})


async def test_a_wrong_or_missing_signature_is_a_401() -> None:
    body = b'{"action": "deployed"}'
    good = signed(body)
    cases = [
        {},
        {"X-Remedyd-Timestamp": good["X-Remedyd-Timestamp"]},
        {**good, "X-Remedyd-Signature": good["X-Remedyd-Signature"][7:]},  # no sha256=
        {**good, "X-Remedyd-Signature": "sha256=" + "0" * 64},
        {**good, "X-Remedyd-Timestamp": str(int(good["X-Remedyd-Timestamp"]) + 1)},
        {**good, "X-Remedyd-Timestamp": "1e9"},
        signed(body, secret="not-the-secret-at-all"),
        signed(body, secret=HOOKS["deploys"]["secret"]),  # another webhook's key
    ]
    async with webhook_server(generic=HOOKS) as served:
        for headers in cases:
            status, answer, _ = await served.post(PATH, body, headers)
            assert status == 401, (headers, answer)
        status, answer, _ = await served.post(PATH, body + b" ", good)  # body changed
        assert status == 401 and "bad signature" in answer["error"]
        assert served.events() == []
        # Upper-case hex is the same signature.
        upper = {**good, "X-Remedyd-Signature": "sha256=" + good["X-Remedyd-Signature"][7:]
                 .upper()}
        assert (await served.post(PATH, body, upper))[0] == 200


@pytest.mark.parametrize("offset,ok", [(-299, True), (-301, False), (299, True),
                                       (301, False), (-10**9, False)])
async def test_timestamps_outside_the_replay_window_are_a_401(offset: int, ok: bool) -> None:
    body = b"{}"
    async with webhook_server(generic=HOOKS) as served:
        status, answer, _ = await served.post(PATH, body, signed(body, at=time.time() + offset))
    assert status == (200 if ok else 401), answer
    if not ok:
        assert "replay window is 300s" in answer["error"]


async def test_a_repeated_delivery_is_a_409_per_webhook_window() -> None:
    body = b'{"action": "deployed"}'
    async with webhook_server(generic=HOOKS) as served:
        headers = signed(body)
        assert (await served.post(PATH, body, headers))[0] == 200
        status, answer, _ = await served.post(PATH, body, headers)
        assert status == 409 and "accepted already" in answer["error"]
        # The same body sent again with a fresh timestamp is a new delivery.
        assert (await served.post(PATH, body, signed(body, at=time.time() + 1)))[0] == 200
        # The other webhook's own window: 1m.
        other = "/webhooks/generic/deploys"
        old = signed(body, HOOKS["deploys"]["secret"], time.time() - 90)
        assert (await served.post(other, body, old))[0] == 401
        assert len(served.events()) == 2


async def test_a_full_queue_is_a_503_and_the_same_delivery_retried_goes_in() -> None:
    body = b'{"action": "deployed"}'
    async with webhook_server(queue_size=10, generic=HOOKS) as served:
        served.fill_bus()
        headers = signed(body)
        status, _, response_headers = await served.post(PATH, body, headers)
        assert status == 503 and response_headers["Retry-After"] == "1"
        served.drain_fillers()
        assert (await served.post(PATH, body, headers))[0] == 200
        assert len(served.events()) == 1


async def test_an_unknown_webhook_is_a_404_and_bad_bodies_are_a_400() -> None:
    async with webhook_server(generic=HOOKS) as served:
        status, answer, _ = await served.post("/webhooks/generic/nope", b"{}", signed(b"{}"))
        assert status == 404 and "nope" in answer["error"]
        for body, says in ((b"[1]", "JSON object"), (b"{", "not JSON"),
                           (b'{"a": NaN}', "not a number")):
            status, answer, _ = await served.post(PATH, body, signed(body))
            assert status == 400 and says in answer["error"], answer
        assert served.metric("remedyd_webhook_requests_total", endpoint="generic",
                             code="404") == 1
        assert served.metric("remedyd_webhook_requests_total", endpoint="generic/ci",
                             code="400") == 3


@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("curl")),
                    reason="needs openssl and curl")
async def test_the_documented_openssl_and_curl_commands_are_accepted() -> None:
    async with webhook_server(generic=HOOKS) as served:
        # docs/webhooks.md's example, as a user copies it (the URL and secret filled in).
        docs = (Path(__file__).parents[1] / "docs" / "webhooks.md").read_text()
        (example,) = [block for block in re.findall(r"```sh\n(.*?)```", docs, re.S)
                      if "openssl dgst" in block]
        script = "set -eu\n" + re.sub(r"^URL=.*$", f"URL='{served.url}{PATH}'", re.sub(
            r"^SECRET=.*$", f"SECRET='{SECRET}'", example, flags=re.M), flags=re.M)
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert json.loads(out) == {"accepted": 1}
        (event,) = served.events()
    assert (event.action, event.subject.name) == ("deployed", "api")
