"""The Prometheus client against a real Prometheus, and against small real servers for
the answers a Prometheus gives only when something is wrong (503, a hang, a proxy page)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from daemon.clients.http import HttpClient
from daemon.clients.prometheus import (
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusQueryError,
    PrometheusUnreachable,
)
from tests.conftest import KpiStack
from tests.harness import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    async with HttpClient() as client:
        yield client


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """serve(handler) -> the base URL of a server answering /api/v1/query with it."""
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/api/v1/query", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_a_vector_comes_with_its_labels_and_values(kpi_stack: KpiStack,
                                                         http: HttpClient) -> None:
    client = PrometheusClient(http, kpi_stack.url)
    result = await client.query('label_replace(vector(0.25), "service", "api", "", "")')
    assert result.result_type == "vector"
    (sample,) = result.samples
    assert sample.labels == {"service": "api"}
    assert sample.value == 0.25
    assert sample.at > 0


async def test_nan_and_infinities_are_floats_as_prometheus_encodes_them(
        kpi_stack: KpiStack, http: HttpClient) -> None:
    client = PrometheusClient(http, kpi_stack.url)
    nan = await client.query("vector(0) / 0")
    assert nan.samples[0].is_nan
    inf = await client.query("+Inf")
    assert inf.result_type == "scalar" and inf.samples[0].value == math.inf
    minus = await client.query("vector(-1) / 0")
    assert minus.samples[0].value == -math.inf
    empty = await client.query('up{job="no-such-job"}')
    assert empty.samples == ()


async def test_a_refused_query_is_a_query_error_with_prometheus_reason(
        kpi_stack: KpiStack, http: HttpClient) -> None:
    client = PrometheusClient(http, kpi_stack.url)
    with pytest.raises(PrometheusQueryError) as refused:
        await client.query("sum(rate(")
    assert refused.value.error_type == "bad_data"
    assert "parse error" in str(refused.value)
    assert refused.value.state == "error"
    with pytest.raises(PrometheusQueryError, match="returns a matrix"):
        await client.query("up[1m]")


async def test_unreachable_covers_refused_connections_timeouts_and_5xx(
        http: HttpClient, serve: Callable[[Handler], Awaitable[str]]) -> None:
    with pytest.raises(PrometheusUnreachable, match=r"Prometheus at http://127\.0\.0\.1") as down:
        await PrometheusClient(http, f"http://127.0.0.1:{free_port()}").query("up")
    assert down.value.state == "unreachable"

    async def starting(request: web.Request) -> web.Response:
        return web.Response(status=503, text="Service Unavailable")

    with pytest.raises(PrometheusUnreachable, match="503"):
        await PrometheusClient(http, await serve(starting)).query("up")

    async def hangs(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    with pytest.raises(PrometheusUnreachable, match=r"did not answer within 0\.3s"):
        await PrometheusClient(http, await serve(hangs), timeout=0.3).query("up")


async def test_an_answer_that_is_not_the_api_is_a_bad_response(
        http: HttpClient, serve: Callable[[Handler], Awaitable[str]]) -> None:
    async def proxy_page(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    with pytest.raises(PrometheusBadResponse, match="not Prometheus's JSON"):
        await PrometheusClient(http, await serve(proxy_page)).query("up")

    async def wrong_shape(request: web.Request) -> web.Response:
        return web.json_response({"status": "success", "data": {"resultType": "vector",
                                                                "result": [{"value": 1}]}})

    with pytest.raises(PrometheusBadResponse, match="shape"):
        await PrometheusClient(http, await serve(wrong_shape)).query("up")


async def test_configured_headers_are_sent_and_never_in_a_message(
        http: HttpClient, serve: Callable[[Handler], Awaitable[str]]) -> None:
    seen: list[dict[str, Any]] = []

    async def protected(request: web.Request) -> web.Response:
        seen.append({"auth": request.headers.get("Authorization"),
                     "form": dict(await request.post())})
        return web.json_response({"status": "error", "errorType": "execution",
                                  "error": "boom"}, status=422)

    url = await serve(protected)
    client = PrometheusClient(http, url, {"Authorization": "Bearer s3cret"}, timeout=2)
    with pytest.raises(PrometheusQueryError) as refused:
        await client.query("up", at=1700000000.5)
    assert seen == [{"auth": "Bearer s3cret",
                     "form": {"query": "up", "timeout": "2s", "time": "1700000000.500"}}]
    assert refused.value.error_type == "execution"
    assert "s3cret" not in str(refused.value)
    assert "pw" not in PrometheusClient(http, url.replace("//", "//me:pw@")).peer
