"""The `silence` guard: a decision whose labels an active Alertmanager silence matches is
not acted on, audited with the silence; matchers as Alertmanager matches them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.guards import GuardContext, GuardResult
from daemon.actions.silences import SilenceGuard, decision_labels
from daemon.clients.alertmanager import AlertmanagerClient, parse_silences
from daemon.clients.http import HttpClient
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref
from daemon.core.rules import ActionSpec, Rule
from daemon.telemetry.metrics import Metrics
from tests.harness import free_port


class Fix(Action):
    name = "test.fix"

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        return {}


class Page(Fix):
    name = "test.page"
    mutating = False


ACTIONS: dict[str, Action] = {"test.fix": Fix(), "test.page": Page()}


def decision(rule: str = "heal", action: str = "test.fix", silences: bool = True,
             namespace: str = "", rule_labels: dict[str, str] | None = None,
             **labels: str) -> Decision:
    spec = ActionSpec.model_validate({action: {}})
    the_rule = Rule.model_validate({"name": rule, "source": "webhook", "actions": [{action: {}}],
                                    "silences": silences, "labels": rule_labels or {}})
    subject = Ref("webhook", "alert", labels.get("alertname", rule), id="f00")
    event = Event("webhook", "alert", "firing", subject, "e1", 0.0, 0.0,
                  attributes={"labels": dict(labels)})
    target = Ref("kubernetes", "deployment", "api", namespace=namespace) if namespace else subject
    return Decision("i1", the_rule, event, target, (spec,), 0.0)


def context(d: Decision) -> GuardContext:
    return GuardContext(decision=d, now=0.0, actions=ACTIONS, plan=d.actions)


def silence(*matchers: dict[str, Any], state: str = "active", ends: str = "2999-01-01T00:00:00Z",
            **extra: Any) -> dict[str, Any]:
    return {"id": "s1", "status": {"state": state}, "createdBy": "alice",
            "comment": "maintenance", "startsAt": "2020-01-01T00:00:00Z", "endsAt": ends,
            "updatedAt": "2020-01-01T00:00:00Z", "matchers": list(matchers), **extra}


def m(name: str, value: str, regex: bool = False, equal: bool | None = True) -> dict[str, Any]:
    matcher: dict[str, Any] = {"name": name, "value": value, "isRegex": regex}
    if equal is not None:
        matcher["isEqual"] = equal
    return matcher


@pytest.mark.parametrize("matchers,labels,silenced", [
    ([m("service", "api")], {"service": "api"}, True),
    ([m("service", "api")], {"service": "web"}, False),
    ([m("service", "api"), m("env", "prod")], {"service": "api"}, False),  # all must hold
    ([m("service", "api|web", regex=True)], {"service": "web"}, True),
    ([m("service", "ap", regex=True)], {"service": "api"}, False),  # anchored both ends
    ([m("service", "pi", regex=True)], {"service": "api"}, False),
    ([m("service", "a.*", regex=True)], {"service": "api\n"}, False),  # no $ before \n
    ([m("env", "prod", equal=False)], {"env": "dev"}, True),
    ([m("env", "prod", equal=False)], {"env": "prod"}, False),
    ([m("env", "prod", equal=False)], {}, True),  # missing is "", which is not prod
    ([m("env", "prod.*", regex=True, equal=False)], {"env": "production"}, False),
    ([m("env", "", regex=False)], {}, True),  # env="" matches a missing label
    ([m("env", ".+", regex=True)], {}, False),
    ([m("env", "prod", equal=None)], {"env": "prod"}, True),  # before isEqual existed
    ([m("d", "\\d+", regex=True)], {"d": "\u0661\u0662"}, False),  # RE2's \d is ASCII
    ([m("alertname", "heal")], {}, True),  # the rule's name is the alertname
])
def test_matchers_as_alertmanager_matches_them(matchers: list[dict[str, Any]],
                                               labels: dict[str, str], silenced: bool) -> None:
    (parsed,) = parse_silences([silence(*matchers)])
    assert parsed.matches(decision_labels(decision(**labels))) is silenced


def test_the_label_set_is_rule_then_rule_labels_then_event_labels_then_namespace() -> None:
    d = decision(rule_labels={"team": "core", "env": "rule"}, namespace="shop", env="alert",
                 alertname="HighErrorRate")
    assert decision_labels(d) == {"alertname": "HighErrorRate", "team": "core", "env": "alert",
                                  "namespace": "shop"}


def test_expired_silences_are_dropped_and_pending_ones_kept_for_their_start() -> None:
    parsed = parse_silences([silence(m("a", "b"), state="expired"),
                             silence(m("a", "b"), state="pending", startsAt="2999-01-01T00:00:00Z",
                                     ends="2999-01-02T00:00:00Z")])
    assert len(parsed) == 1 and not parsed[0].active(1e9)


class FakeAlertmanager:
    """Only for what a real Alertmanager will not do: answer with RE2-only syntax, which
    this machine's Alertmanager accepts as any other regex but Python cannot read."""

    def __init__(self, silences: list[dict[str, Any]]) -> None:
        self.silences = silences
        self.requests = 0

    async def __aenter__(self) -> str:
        from aiohttp import web

        async def handler(request: web.Request) -> web.Response:
            self.requests += 1
            return web.json_response(self.silences)

        app = web.Application()
        app.router.add_get("/api/v2/silences", handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()


async def check(url: str, d: Decision, **kwargs: Any) -> GuardResult:
    async with HttpClient() as http:
        guard = SilenceGuard(AlertmanagerClient(http, url, {}, 2.0), Metrics(), **kwargs)
        return await guard.check(context(d))


async def test_alertmanager_unreachable_refuses_changes_and_lets_notifications_through(
        caplog: pytest.LogCaptureFixture) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    refused = await check(down, decision())
    assert refused.verdict == "refuse" and "cannot be read" in refused.reason
    assert "changes something" in refused.reason
    let_through = await check(down, decision(action="test.page"))
    assert let_through.verdict == "ok" and "notification-only" in let_through.reason
    assert "notifying anyway" in caplog.text


async def test_a_regex_python_cannot_read_counts_as_unknown() -> None:
    async with FakeAlertmanager([silence(m("service", "\\p{Greek}+", regex=True))]) as url:
        result = await check(url, decision(service="api"))
    assert result.verdict == "refuse" and "RE2 syntax" in result.reason


async def test_rules_with_silences_false_are_not_checked() -> None:
    fake = FakeAlertmanager([silence(m("alertname", "heal"))])
    async with fake as url:
        assert (await check(url, decision(silences=False))).verdict == "ok"
        assert (await check(url, decision())).verdict == "refuse"
    assert fake.requests == 1


async def test_silences_are_read_once_per_ttl_however_many_decisions_wait() -> None:
    now = [0.0]
    fake = FakeAlertmanager([silence(m("alertname", "heal"))])
    async with fake as url, HttpClient() as http:
        metrics = Metrics()
        guard = SilenceGuard(AlertmanagerClient(http, url, {}, 2.0), metrics, ttl=5.0,
                             clock=lambda: now[0])
        results = await asyncio.gather(*(guard.check(context(decision())) for _ in range(20)))
        assert {r.verdict for r in results} == {"refuse"} and fake.requests == 1
        fake.silences = []
        now[0] = 4.9
        assert (await guard.check(context(decision()))).verdict == "refuse"
        now[0] = 5.1
        assert (await guard.check(context(decision()))).verdict == "ok"
    assert fake.requests == 2
    assert metrics.registry.get_sample_value("remedyd_alertmanager_silence_fetches_total",
                                             {"outcome": "ok"}) == 2


async def test_silences_made_with_amtool_on_a_real_alertmanager(alertmanager: Any) -> None:
    am = alertmanager.start("http://127.0.0.1:1/unused")
    sid = am.amtool("silence", "add", "alertname=heal", "service=~api|web", "env!=dev",
                    "--comment=deploy freeze", "--author=alice", "--duration=1h")
    other = am.amtool("silence", "add", "alertname=other", "--comment=x", "--author=bob")
    assert sid and other
    silenced = await check(am.url, decision(service="web", env="prod"))
    assert silenced.verdict == "refuse"
    assert silenced.reason == f"silence {sid} by alice: 'deploy freeze'"
    for labels in ({"service": "webby", "env": "prod"}, {"service": "api", "env": "dev"}):
        assert (await check(am.url, decision(**labels))).verdict == "ok", labels
    am.amtool("silence", "expire", sid)
    assert (await check(am.url, decision(service="web", env="prod"))).verdict == "ok"
