"""Both webhook endpoints under property-based fuzzing: random bodies, headers, content
types and encodings, sizes, and JSON shaped like (and unlike) what they take. No answer
is a 5xx, nothing is logged as a bug, and a good delivery is served afterwards."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import itertools
import json
import logging
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_http import send
from tests.webhookkit import SECRET, alert, notification, signed, webhook_server

TOKEN = "fuzz-token"
MAX_BODY = 4096
AUTH = "Bearer " + TOKEN
NONCES = itertools.count()
ALERT_KEYS = {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
              "fingerprint", "receiver", "alerts", "groupLabels", "commonLabels",
              "commonAnnotations", "externalURL", "version", "groupKey", "truncatedAlerts"}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=20)


@st.composite
def alert_shapes(draw: st.DrawFn) -> Any:
    """Alertmanager's payload with parts swapped for random JSON, dropped or kept."""
    body: dict[str, Any] = notification(alert(), alert("B", status="resolved"))
    for key in list(body):
        choice = draw(st.integers(0, 5))
        if choice == 0:
            del body[key]
        elif choice == 1:
            body[key] = draw(json_values)
    alerts = body.get("alerts")
    for item in alerts if isinstance(alerts, list) else []:
        if isinstance(item, dict):
            for key in list(item):
                if draw(st.integers(0, 6)) == 0:
                    item[key] = draw(json_values)
    return body


bodies = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    alert_shapes().map(lambda v: json.dumps(v).encode()),
    st.sampled_from([b"[" * 5000, b'{"alerts": [' * 2000, b"1e99999", b"NaN", b'"\\ud800"',
                     b"\xef\xbb\xbf{}", b" " * (MAX_BODY + 1), b"9" * 5000]),
)
header_names = st.sampled_from(["Authorization", "Content-Type", "Content-Encoding",
                                "X-Remedyd-Timestamp", "X-Remedyd-Signature", "Expect",
                                "Transfer-Encoding", "Content-Length", "X-Other"])
header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.sampled_from([AUTH, "Basic " + base64.b64encode(b"a:b").decode(), "application/json",
                     "text/plain; charset=latin-1", "gzip", "deflate", "br", "chunked",
                     "100-continue", "-1", "99999999999", "sha256=" + "0" * 64]))


@st.composite
def deliveries(draw: st.DrawFn) -> bytes:
    """Well-formed deliveries to both endpoints, with unknown extra fields."""
    extra = draw(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ALERT_KEYS),
                                 json_values, max_size=3))
    if draw(st.booleans()):
        shown = alert(draw(st.text(min_size=1, max_size=12)), **{"x": draw(st.text())})
        body = json.dumps({**notification({**shown, **extra}), **extra}).encode()
        headers = {"Authorization": AUTH}
        path = "/webhooks/alertmanager"
    else:
        # A nonce: the same body signed in the same second is a replay (409).
        body = json.dumps({"action": draw(st.text(max_size=10)), **extra,
                           "nonce": next(NONCES)}).encode()
        headers = signed(body)
        path = "/webhooks/generic/ci"
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(request, whether it is a well-formed delivery that must be taken)."""
    if draw(st.integers(0, 4)) == 0:
        return draw(deliveries()), True
    path = draw(st.sampled_from(["/webhooks/alertmanager", "/webhooks/generic/ci",
                                 "/webhooks/generic/other", "/webhooks/generic/%00",
                                 "/webhooks/alertmanager?x=1", "/webhooks/generic/"]))
    method = draw(st.sampled_from(["POST"] * 6 + ["GET", "PUT", "HEAD"]))
    body = draw(bodies)
    headers: dict[str, str] = {}
    if path.startswith("/webhooks/alertmanager") and draw(st.booleans()):
        headers["Authorization"] = AUTH
    if path.startswith("/webhooks/generic/ci") and draw(st.booleans()):
        headers.update(signed(body))
    if draw(st.integers(0, 4)) == 0:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    for name, value in draw(st.lists(st.tuples(header_names, header_values), max_size=4)):
        headers[name] = value
    framing = draw(st.sampled_from(["length", "length", "chunked", "short", "none"]))
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for name, value in headers.items():
        if name.lower() not in ("content-length", "transfer-encoding") or framing == "none":
            head += f"{name}: {value}\r\n"
    if framing == "chunked":
        size = draw(st.integers(1, 700))
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        return head.encode() + b"Transfer-Encoding: chunked\r\n\r\n" + payload, False
    # Shorter than the body (the rest is a second, malformed request); never longer,
    # which only has the server wait, rightly, for bytes that never come.
    declared = len(body) - (draw(st.integers(1, 5)) if framing == "short" else 0)
    if framing != "none":
        head += f"Content-Length: {max(declared, 0)}\r\n"
    return head.encode() + b"\r\n" + body, False


@contextlib.contextmanager
def bug_records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.exc_info or record.levelno >= logging.ERROR:
                records.append(record)

    handler = Keep()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)


def test_no_request_gets_a_5xx_and_the_endpoints_still_serve_after() -> None:
    loop = asyncio.new_event_loop()
    statuses: set[int | None] = set()

    async def fuzz() -> None:
        async with webhook_server(queue_size=100_000, alertmanager=True,
                                  alertmanager_token=TOKEN, max_body_bytes=MAX_BODY,
                                  generic={"ci": {"secret": SECRET}}) as served:
            @settings(max_examples=400, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(requests())
            def check(drawn: tuple[bytes, bool]) -> None:
                request, must_take = drawn
                status = asyncio.run_coroutine_threadsafe(send(served.port, request),
                                                          loop).result(10).status
                statuses.add(status)
                assert status is None or status < 500, request[:300]
                assert status == 200 or not must_take, (status, request[:600])

            with bug_records() as bugs:
                await asyncio.to_thread(check)
            assert not bugs, [r.getMessage() for r in bugs]
            # Still serving, and what it took all made sense as events.
            status, _, _ = await served.post("/webhooks/alertmanager",
                                             notification(alert("After")),
                                             {"Authorization": AUTH})
            assert status == 200
            body = b'{"action": "after"}'
            assert (await served.post("/webhooks/generic/ci", body, signed(body)))[0] == 200
            events = served.events()
            assert events[-1].action == "after" and events[-2].subject.name == "After"

    try:
        loop.run_until_complete(fuzz())
    finally:
        loop.close()
    # The fuzz reached the handlers' every answer, not only the HTTP parser's.
    assert {200, 400, 401, 404, 405, 413} <= statuses, statuses
