"""The HTTP API answers every input with a status below 500 and logs abuse briefly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.http.openapi import SPEC
from daemon.http.server import build_app, serve
from daemon.telemetry.metrics import Metrics
from tests.harness import free_port


class View:
    """A daemon as the HTTP layer sees it: ready, one rule, as many records as asked."""

    def readiness(self) -> dict[str, Any]:
        return {"ready": True, "checks": {}}

    def rules_view(self) -> list[dict[str, Any]]:
        return [{"name": "heal", "actions": []}]

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        return [{"seq": seq} for seq in range(1, limit + 1)]


class Answer:
    def __init__(self, head: bytes = b"", body: bytes = b"") -> None:
        lines = head.decode("latin-1").split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3})", lines[0])
        self.status = int(match.group(1)) if match else None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in
                        (line.partition(":") for line in lines[1:] if line)}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


async def send(port: int, request: bytes) -> Answer:
    """One raw request on its own connection; the first final answer, read by its length.

    Not read to EOF: after answering, the server may linger for a body never sent.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(5):
            while True:
                answer = Answer(await reader.readuntil(b"\r\n\r\n"))
                if answer.status != 100:
                    break
            if not request.startswith(b"HEAD "):
                answer.body = await reader.readexactly(int(answer.headers["content-length"]))
            return answer
    except (asyncio.IncompleteReadError, ConnectionError):
        return Answer()  # closed without (a whole) answer: not a 5xx
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def get(target: str, method: str = "GET") -> bytes:
    return f"{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()


@asynccontextmanager
async def server(app: Any = None) -> AsyncIterator[int]:
    port = free_port()
    stop = await serve(app or build_app(View(), Metrics()), "127.0.0.1", port)
    try:
        yield port
    finally:
        await stop()


# -- the API's own answers -------------------------------------------------------------------


@pytest.mark.parametrize("limit", [
    "%C2%B2",             # '²': str.isdigit() says yes, int() says no
    "%D9%A1%D9%A2",       # Arabic-Indic '١٢': not ASCII digits
    "9" * 5000,           # beyond int()'s digit limit
    "99999999999999999999", "0", "1001", "-1", "+5", "1.0", "", "%00", "%20%201",
    "1&limit=2",          # given twice: which one is meant?
])
async def test_a_bad_limit_is_a_400_naming_limit(limit: str) -> None:
    async with server() as port:
        answer = await send(port, get(f"/api/v1/audit?limit={limit}"))
    assert answer.status == 400, answer.body[:300]
    assert "limit" in answer.json()["error"]
    assert len(answer.body) < 300  # the input is not echoed back in full


@pytest.mark.parametrize(("limit", "records"), [("1", 1), ("1000", 1000), ("0007", 7)])
async def test_a_good_limit_returns_that_many_records(limit: str, records: int) -> None:
    async with server() as port:
        answer = await send(port, get(f"/api/v1/audit?limit={limit}&other=ignored"))
    assert answer.status == 200
    assert len(answer.json()["records"]) == records


async def test_unknown_path_is_a_404_with_a_json_body() -> None:
    async with server() as port:
        answer = await send(port, get("/api/v1/nope"))
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"error": "not found", "path": "/api/v1/nope"}


async def test_wrong_method_is_a_405_with_a_json_body() -> None:
    async with server() as port:
        answer = await send(port, get("/healthz", "DELETE"))
    assert answer.status == 405
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"error": "method not allowed", "method": "DELETE",
                             "allowed": ["GET", "HEAD"]}
    assert answer.headers["allow"] == "GET,HEAD"


async def test_openapi_document_describes_every_route() -> None:
    async with server() as port:
        answer = await send(port, get("/api/v1/openapi.json"))
    assert answer.status == 200
    assert answer.json() == SPEC
    app = build_app(View(), Metrics())
    served = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert served == set(SPEC["paths"])


async def test_with_every_integration_on_the_document_describes_exactly_what_is_served(
        tmp_path: Any) -> None:
    from daemon.app import Daemon
    from daemon.settings import Settings

    settings = Settings(
        docker={"enabled": True, "url": f"unix://{tmp_path}/no-engine.sock"},
        kubernetes={"enabled": False}, security={"enabled": True},
        audit={"path": str(tmp_path / "audit.jsonl")},
        webhooks={"alertmanager": True,
                  "generic": {"ci": {"secret": "a-secret-of-enough-length"}}})
    daemon = Daemon(settings)
    try:
        app = build_app(daemon, daemon.metrics, daemon.routes, daemon.api)
        served = {(r.resource.canonical, r.method) for r in app.router.routes()
                  if r.resource is not None and r.method != "HEAD"}
        async with server(app) as port:
            answer = await send(port, get("/api/v1/openapi.json"))
    finally:
        await daemon._stack.aclose()
    document = answer.json()
    described = {(path, method.upper()) for path, item in document["paths"].items()
                 for method in item}
    assert described == served
    assert {"/webhooks/alertmanager", "/webhooks/generic/{name}",
            "/api/v1/security/accept"} <= set(document["paths"])
    # The endpoint that changes something says which credentials it takes.
    accept = document["paths"]["/api/v1/security/accept"]["post"]
    assert accept["security"] == [{"bearer": []}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


class Broken(View):
    def rules_view(self) -> list[dict[str, Any]]:
        raise KeyError("a bug")


async def test_a_bug_is_a_json_500_logged_with_its_traceback() -> None:
    port = free_port()
    stop = await serve(build_app(Broken(), Metrics()), "127.0.0.1", port)
    try:
        with log_records() as records:
            answer = await send(port, get("/api/v1/rules"))
    finally:
        await stop()
    assert answer.status == 500
    assert "bug" in answer.json()["error"]
    [logged] = [r for r in records if r.exc_info]
    assert "GET /api/v1/rules" in logged.getMessage()


# -- malformed requests: one short line each, at most a few per minute ----------------------

MALFORMED = [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32 + b"\r\n\r\n",  # TLS hello
    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 20_000 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
]


@contextmanager
def log_records() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def lines(records: list[logging.LogRecord], word: str) -> list[logging.LogRecord]:
    return [r for r in records if word in r.getMessage()]


@pytest.mark.looptime
async def test_malformed_requests_are_logged_briefly_and_rate_limited() -> None:
    with log_records() as records:
        async with server() as port:
            for _ in range(5):
                for request in MALFORMED:
                    answer = await send(port, request)
                    assert answer.status in (400, 413, 431, 505, None), answer.body[:200]
            assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
            logged = lines(records, "malformed request from 127.0.0.1")
            assert len(logged) == 10
            assert all("\n" not in r.getMessage() and len(r.getMessage()) < 300
                       for r in logged)
            assert not lines(records, "suppressed")
            await asyncio.sleep(61)  # fake time: the minute ends
            [summary] = lines(records, "suppressed")
            assert "25 more malformed request(s)" in summary.getMessage()
            await send(port, MALFORMED[3])  # a new minute logs again
            assert len(lines(records, "malformed request from 127.0.0.1")) == 11


# -- fuzz: no input reaches a 5xx or a traceback ---------------------------------------------

KNOWN_PATHS = [*SPEC["paths"], "/", "/api", "/api/v1", "/api/v1/", "//metrics", "/metrics/",
               "/api/v1/audit/", "/API/V1/AUDIT", "/healthz/../readyz", "/%2e%2e/healthz"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
           "PROPFIND", "get", "FOO", "G\x00T", ""]
LIMITS = ["1", "1000", "1001", "0", "-0", "²", "١٢", "1e3", "0x10", " 5", "5 ", "9" * 5000,
          "%", "%zz", "%00", "%ff%fe", "\u202e"]


def _quoted(text: str) -> str:
    return quote(text, safe="")


_value = st.one_of(st.sampled_from(LIMITS), st.text(max_size=40))
_query = st.lists(st.tuples(st.sampled_from(["limit", "LIMIT", "x", ""]) | st.text(max_size=8),
                            _value, st.booleans()), max_size=4)
_header = st.tuples(st.sampled_from(["Content-Length", "Transfer-Encoding", "Content-Type",
                                     "Accept", "Expect", "Connection", "X-Fuzz"]),
                    st.sampled_from(["0", "5", "-1", "zz", "chunked", "100-continue",
                                     "text/html", "close", "a" * 9000]) | st.text(max_size=30))


@st.composite
def requests(draw: Callable[..., Any]) -> bytes:
    method = draw(st.sampled_from(METHODS) | st.text(max_size=10))
    path = draw(st.sampled_from(KNOWN_PATHS) | st.text(max_size=30).map(lambda t: "/" + t))
    pairs = []
    for key, value, encode in draw(_query):
        pairs.append(f"{_quoted(key)}={_quoted(value)}" if encode else f"{key}={value}")
    target = path + ("?" + "&".join(pairs) if pairs else "")
    headers = "".join(f"{name}: {value}\r\n" for name, value in draw(st.lists(_header,
                                                                               max_size=3)))
    body = draw(st.binary(max_size=64))
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n"
    return head.encode("utf-8", "surrogateescape") + body


async def cancel_lingering() -> None:
    """Connections the server still lingers on, waiting for a body never sent."""
    pending = asyncio.all_tasks() - {asyncio.current_task()}
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


def test_no_input_gives_a_5xx_or_a_traceback() -> None:
    loop = asyncio.new_event_loop()
    port = free_port()
    stop = loop.run_until_complete(serve(build_app(View(), Metrics()), "127.0.0.1", port))
    statuses: set[int | None] = set()
    try:
        with log_records() as records:
            @settings(max_examples=400, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.too_slow])
            @given(requests())
            def check(request: bytes) -> None:
                answer = loop.run_until_complete(send(port, request))
                statuses.add(answer.status)
                assert answer.status is None or answer.status < 500, (request[:300],
                                                                      answer.body[:500])

            check()
            assert not [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
    finally:
        loop.run_until_complete(stop())
        loop.run_until_complete(cancel_lingering())
        loop.close()
    assert {200, 400, 404, 405} <= statuses  # the fuzz reached handlers, not only the parser
