"""The scope guard on its own: where it reads a container's labels from, and which plans
it lets by (the real-engine behaviour is in test_docker_scope.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.base import Action
from daemon.actions.guards import GuardContext
from daemon.actions.params import NoParams
from daemon.actions.scope import ScopeGuard
from daemon.core.decisions import Decision
from daemon.core.errors import TemporaryError
from daemon.core.events import Event, Ref
from daemon.core.rules import ActionSpec, Rule
from tests.rulekit import docker_event

CID = "c1" * 32


class FakeRestart(Action):
    name = "docker.restart"
    Params = NoParams
    applies_to: ClassVar[tuple[str, ...]] = ("docker/container",)
    observe_key: ClassVar[str] = "docker/container"

    def __init__(self, state: Mapping[str, Any] | Exception | None) -> None:
        self.state = state
        self.observed = 0

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        self.observed += 1
        if isinstance(self.state, Exception):
            raise self.state
        return self.state

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        raise AssertionError("a guard never runs an action")


class FakeNotify(FakeRestart):
    name = "notify.webhook"
    mutating: ClassVar[bool] = False
    applies_to: ClassVar[tuple[str, ...]] = ()


def inspect(labels: dict[str, str]) -> dict[str, Any]:
    return {"Id": CID, "Config": {"Labels": labels}, "State": {"Running": True}}


def context(event: Event, *actions: Action) -> GuardContext:
    plan = tuple(ActionSpec(name=a.name, params={}) for a in actions)
    rule = Rule(name="heal", source="docker", when="true", actions=list(plan))
    target = Ref(source="docker", kind="container", name="web", id=CID)
    decision = Decision("i1", rule, event, target, plan, 0.0)
    return GuardContext(decision=decision, now=0.0, actions={a.name: a for a in actions},
                        plan=plan)


async def verdict(event: Event, *actions: Action) -> tuple[str, str]:
    result = await ScopeGuard().check(context(event, *actions))
    return result.verdict, result.reason


async def test_the_inspected_labels_decide_and_the_inspect_is_shared() -> None:
    restart = FakeRestart(inspect({"remedyd.enable": "true"}))
    ctx = context(docker_event("health_status: unhealthy"), restart)
    assert (await ScopeGuard().check(ctx)).as_record() == {
        "guard": "scope", "verdict": "ok", "reason": "container web is labelled "
                                                     "remedyd.enable=true"}
    await ctx.observe(restart)  # what superseded and preflight ask next
    assert restart.observed == 1
    assert await verdict(docker_event("health_status: unhealthy"),
                         FakeRestart(inspect({"remedyd.enable": "false"}))) == (
        "refuse", "out of scope: container web is not labelled remedyd.enable=true "
                  "([docker] scope = labelled)")


async def test_an_engine_that_cannot_answer_leaves_the_events_labels() -> None:
    down = TemporaryError("inspect web: connection refused", 1.0)
    labelled = docker_event("health_status: unhealthy", **{"remedyd.enable": "true"})
    assert (await verdict(labelled, FakeRestart(down)))[0] == "ok"
    assert (await verdict(docker_event("health_status: unhealthy"),
                          FakeRestart(down)))[0] == "refuse"


async def test_attributes_not_from_the_engine_about_this_container_opt_nothing_in() -> None:
    claimed = docker_event("health_status: unhealthy", **{"remedyd.enable": "true"})
    # A webhook alert that names the container and carries the label as its own.
    alert = dataclasses.replace(claimed, source="webhook")
    about_another = dataclasses.replace(
        claimed, subject=Ref(source="docker", kind="container", name="db", id="d" * 64))
    for event in (alert, about_another):
        verdict_, reason = await verdict(event, FakeRestart(None))
        assert verdict_ == "refuse"
        assert "could not be read (the container no longer exists)" in reason


async def test_notifications_are_not_scoped_but_a_plan_that_also_changes_is() -> None:
    unlabelled = FakeRestart(inspect({}))
    event = docker_event("health_status: unhealthy")
    assert await verdict(event, FakeNotify(None)) == ("ok", "")
    assert (await verdict(event, unlabelled, FakeNotify(None)))[0] == "refuse"


async def test_the_chain_has_the_guard_only_with_docker_on_and_scope_labelled(
        tmp_path: Path) -> None:
    from daemon.app import Daemon
    from daemon.settings import Settings

    def guards(docker: bool, scope: str) -> list[str]:
        daemon = Daemon(Settings(
            docker={"enabled": docker, "url": "unix:///nonexistent.sock", "scope": scope},
            audit={"path": str(tmp_path / "audit.jsonl")}))
        return [g.name for g in daemon.executor.guards]

    labelled = guards(True, "labelled")
    assert labelled.index("scope") == labelled.index("dry_run") - 1
    assert "scope" not in guards(True, "all")
    # A Kubernetes-only daemon's records carry no Docker guard.
    assert "scope" not in guards(False, "labelled")
