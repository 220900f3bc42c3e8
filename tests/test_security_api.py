"""The security API: current findings from the engine's state changes; accepting a change
needs the bearer token and resolves the finding at once."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.core.events import Event
from daemon.engine.evaluator import Evaluator
from daemon.http.server import build_app
from daemon.security.api import CurrentFindings, parse_accept, security_routes
from daemon.security.baseline import Baseline
from daemon.security.tracker import PostureTracker
from daemon.telemetry.metrics import Metrics
from tests.rulekit import ruleset
from tests.webhookkit import View

TOKEN = "s3cret-token-0123456789"
RULES = """
rules:
  - name: security-docker-cap-add
    description: capabilities added
    source: security
    when: size(event.attributes.capAdd) > 0
    security: {id: DOCKER-CAP-ADD, severity: high, control: CIS Docker 5.3,
               remediation: drop the added capabilities}
    actions:
      - notify.webhook: {}
  - name: security-drift
    description: drifted from the baseline
    source: security
    when: event.attributes.baseline == "drifted"
    security: {id: SEC-DRIFT, severity: medium, control: baseline,
               remediation: revert the change or accept it}
    actions:
      - notify.webhook: {}
"""


class Bed:
    """Tracker -> engine -> findings, as the daemon wires them."""

    def __init__(self, tmp_path: Path) -> None:
        self.metrics = Metrics()
        rules = ruleset(tmp_path, RULES)
        self.evaluator = Evaluator(rules)
        self.findings = CurrentFindings(self.metrics)
        self.findings.on_rules(rules)
        self.audit: list[tuple[str, dict[str, Any]]] = []
        self.tracker = PostureTracker(self.handle, Baseline(),
                                      lambda k, r: self.audit.append((k, dict(r))),
                                      self.metrics)

    def handle(self, event: Event) -> None:
        self.evaluator.evaluate(event, event.observed_at)
        for change in self.evaluator.take_changes():
            self.findings.on_state(change)

    def see(self, name: str, caps: list[str], memory: int = 0) -> None:
        self.tracker.seen("docker", {"Id": f"id-{name}", "Name": f"/{name}"}, origin="live",
                          view={"capAdd": caps, "memory": memory})

    def gauge(self, check: str, severity: str) -> float:
        return self.metrics.registry.get_sample_value(
            "remedyd_security_findings", {"check": check, "severity": severity}) or 0.0


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[tuple[Bed, TestClient[Any, Any]]]:
    b = Bed(tmp_path)
    app = build_app(View(), b.metrics, security_routes(b.findings, b.tracker, TOKEN))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield b, client


async def test_findings_list_what_fires_with_its_check(bed: tuple[Bed, TestClient[Any, Any]]
                                                       ) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    b.see("quiet", [])
    answer = await (await client.get("/api/v1/security/findings")).json()
    (finding,) = answer["findings"]
    assert finding["check"] == "DOCKER-CAP-ADD" and finding["severity"] == "high"
    assert finding["control"] == "CIS Docker 5.3"
    assert finding["object"] == "docker/container/web"
    assert finding["remediation"] and finding["incident"] and finding["since"] > 0
    assert b.gauge("DOCKER-CAP-ADD", "high") == 1
    b.see("web", [])  # fixed: the finding ends (and the fix is a drift from the baseline)
    answer = await (await client.get("/api/v1/security/findings")).json()
    assert [f["check"] for f in answer["findings"]] == ["SEC-DRIFT"]
    assert b.gauge("DOCKER-CAP-ADD", "high") == 0


async def test_an_object_gone_has_no_findings_left(bed: tuple[Bed, TestClient[Any, Any]]
                                                    ) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    tracked = b.tracker.tracked("docker/container/web")
    assert tracked is not None
    b.tracker.gone(tracked.subject)
    assert (await (await client.get("/api/v1/security/findings")).json())["findings"] == []
    assert b.gauge("DOCKER-CAP-ADD", "high") == 0


async def test_a_rule_removed_on_reload_leaves_no_finding(
        bed: tuple[Bed, TestClient[Any, Any]], tmp_path: Path) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    b.findings.on_rules(ruleset(tmp_path, RULES.split("  - name: security-drift")[0]
                                .replace("security-docker-cap-add", "renamed")))
    assert (await (await client.get("/api/v1/security/findings")).json())["findings"] == []
    assert b.gauge("DOCKER-CAP-ADD", "high") == 0


async def test_accepting_a_drift_resolves_it_and_is_audited(
        bed: tuple[Bed, TestClient[Any, Any]]) -> None:
    b, client = bed
    b.see("web", [])
    b.see("web", [], memory=64)
    found = (await (await client.get("/api/v1/security/findings")).json())["findings"]
    assert [f["check"] for f in found] == ["SEC-DRIFT"]
    assert found[0]["drift"] == [{"field": "memory", "before": 0, "after": 64}]
    response = await client.post("/api/v1/security/accept",
                                 json={"object": "docker/container/web", "by": "ops",
                                       "reason": "approved"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200, await response.text()
    assert (await response.json())["accepted"]["diff"] == found[0]["drift"]
    assert (await (await client.get("/api/v1/security/findings")).json())["findings"] == []
    assert [r["action"] for k, r in b.audit if k == "baseline"] == ["accepted"]


async def test_accepting_a_check_waives_it_by_bare_container_name(
        bed: tuple[Bed, TestClient[Any, Any]]) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    response = await client.post("/api/v1/security/accept",
                                 json={"object": "web", "checks": ["DOCKER-CAP-ADD"]},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200, await response.text()
    assert (await (await client.get("/api/v1/security/findings")).json())["findings"] == []


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer wrong-token-0123456789"}, 401),
    ({"Authorization": f"Basic {TOKEN}"}, 401)])
async def test_accept_refuses_a_missing_or_wrong_token(
        bed: tuple[Bed, TestClient[Any, Any]], headers: dict[str, str], status: int,
        caplog: pytest.LogCaptureFixture) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    caplog.set_level(logging.DEBUG)
    response = await client.post("/api/v1/security/accept", json={"object": "web"},
                                 headers=headers)
    assert response.status == status
    assert b.audit == [] or all(k != "baseline" for k, _ in b.audit)
    assert TOKEN not in caplog.text


@pytest.mark.parametrize(("body", "field"), [
    (b"{", "body"), (b"[]", "body"), (b'{"checks": []}', "object"),
    (b'{"object": "web", "checks": "X"}', "checks"), (b'{"object": "web", "by": 3}', "by"),
    (b'{"object": "web", "extra": 1}', "extra"), (b"\xff\xfe", "body")])
async def test_malformed_requests_are_400_naming_the_field(
        bed: tuple[Bed, TestClient[Any, Any]], body: bytes, field: str) -> None:
    _, client = bed
    response = await client.post("/api/v1/security/accept", data=body,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 400
    assert (await response.json())["field"] == field


async def test_unknown_object_is_404(bed: tuple[Bed, TestClient[Any, Any]]) -> None:
    _, client = bed
    response = await client.post("/api/v1/security/accept", json={"object": "nope"},
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 404
    assert "nope" in (await response.json())["error"]


async def accept_once(b: Bed, token: str | None) -> tuple[int, dict[str, Any]]:
    app = build_app(View(), b.metrics, security_routes(b.findings, b.tracker, token))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.post("/api/v1/security/accept", json={"object": "web"},
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        return response.status, await response.json()


async def test_no_token_configured_is_403_saying_so(tmp_path: Path) -> None:
    status, answer = await accept_once(Bed(tmp_path), None)
    assert status == 403 and "api_token" in answer["error"]


async def test_an_unusable_baseline_refuses_accepts_with_409(tmp_path: Path) -> None:
    b = Bed(tmp_path)
    b.tracker.baseline = Baseline(error="b.json:1:1: not JSON")
    b.see("web", ["SYS_ADMIN"])
    status, answer = await accept_once(b, TOKEN)
    assert status == 409 and "not JSON" in answer["error"]


async def cli(client: TestClient[Any, Any], tmp_path: Path, token: str | None,
              *argv: str) -> tuple[int, str, str]:
    """`remedyd security ...` against the test server (the CLI blocks: a thread)."""
    import argparse
    import asyncio
    import io

    from daemon.security.client_cli import main

    config = tmp_path / "remedyd.toml"
    config.write_text("[server]\n" + (f'api_token = "{token}"\n' if token else ""))
    url = str(client.make_url("")).rstrip("/")
    command, *rest = argv
    args = argparse.Namespace(security_command=command, config=config, url=url,
                              object=rest[0] if rest else "", checks=[], reason="",
                              by="tester")
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(main, args, out, err)
    return code, out.getvalue(), err.getvalue()


async def test_the_cli_lists_findings_with_their_drift_and_accepts(
        bed: tuple[Bed, TestClient[Any, Any]], tmp_path: Path) -> None:
    b, client = bed
    b.see("web", [])
    b.see("web", [], memory=64)
    code, out, _ = await cli(client, tmp_path, None, "findings")
    assert code == 0
    assert "SEC-DRIFT" in out and "docker/container/web" in out and "memory: 0 -> 64" in out
    code, out, err = await cli(client, tmp_path, TOKEN, "accept", "docker/container/web")
    assert code == 0, err
    assert "memory: 0 -> 64" in out
    code, out, _ = await cli(client, tmp_path, None, "findings")
    assert "no security findings" in out


async def test_the_cli_says_why_the_daemon_refused(
        bed: tuple[Bed, TestClient[Any, Any]], tmp_path: Path) -> None:
    b, client = bed
    b.see("web", ["SYS_ADMIN"])
    code, _, err = await cli(client, tmp_path, "wrong-token-0123456789", "accept", "web")
    assert code == 1 and "not the daemon's [server] api_token" in err
    code, _, err = await cli(client, tmp_path, None, "accept", "web")
    assert code == 1 and "no [server] api_token" in err


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.sampled_from(["object", "checks", "reason", "by", "x"]),
                                       inner, max_size=5), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), _JSON.map(lambda doc: json.dumps(doc).encode())))
def test_any_body_is_taken_or_a_400_naming_a_field(body: bytes) -> None:
    parsed = parse_accept(body)
    if isinstance(parsed, web.Response):
        assert parsed.status == 400
        assert json.loads(parsed.text or "{}")["field"] in (
            "body", "object", "checks", "reason", "by", "x")
    else:
        assert isinstance(parsed["object"], str) and parsed["object"]
        assert all(isinstance(c, str) for c in parsed["checks"])
