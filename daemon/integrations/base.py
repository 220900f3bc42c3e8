"""The contract every integration (Docker, notify; Kubernetes, KPIs, probes next) meets.

An integration reads its settings group, says whether it is on and why, and when on
builds its sources, actions and guards. Client libraries are imported inside
`build`, so a daemon with an integration off never loads them. Resources it opens
are handed to the daemon's AsyncExitStack, which closes them in reverse order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from daemon.actions.base import Action
from daemon.actions.executor import Executor
from daemon.actions.guards import Guard
from daemon.clients.http import HttpClient
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.changes import StateChange
from daemon.engine.ruleset import RuleSet
from daemon.settings import Settings
from daemon.telemetry.metrics import Metrics

if TYPE_CHECKING:
    from aiohttp.web import AbstractRouteDef


class Source(Protocol):
    """A long-running producer of events; `run` returns only when cancelled."""

    name: str

    async def run(self) -> None: ...

    def status(self) -> dict[str, Any]:
        """At least {"synced": bool}: readiness waits for every source to have synced."""
        ...


@dataclass(frozen=True, slots=True)
class Switch:
    """Whether an integration is on here, and the sentence logged at start saying why."""

    on: bool
    why: str
    # Off, but the operator probably expected it on ("auto" found nothing): a warning.
    surprising: bool = False


def tri_state(name: str, setting: bool | str, on: bool, where: str, looked_for: str,
              *, surprising: bool) -> Switch:
    """The Switch of an integration set true, false or "auto" (`on`: what "auto" or true
    found usable; `where`: what it will talk to; `looked_for`: what "auto" did not find)."""
    if on:
        return Switch(True, f"{name} source on: {where}")
    if setting == "auto":
        return Switch(False, f'{name} source off: [{name}] enabled = "auto" found '
                      f"{looked_for}; set enabled = true to insist", surprising=surprising)
    return Switch(False, f"{name} source off ([{name}] enabled = false)")


@dataclass
class BuildContext:
    emit: Callable[[Event], object]
    metrics: Metrics
    http: HttpClient
    stack: AsyncExitStack
    # Hands the executor again a decision a guard held back (a partition guard, once the
    # cache has re-synced); None where nothing executes (remedyd check).
    resubmit: Callable[[Decision], object] | None = None
    # The executor (its decision and outcome hooks), and how records read elsewhere (the
    # Kubernetes shared state) are restored into it with the loaded rules; None where
    # nothing executes.
    executor: Executor | None = None
    restore: Callable[[Sequence[Mapping[str, Any]]], int] | None = None
    # What an integration built that a later one reads (the security integration taps
    # the Docker source and the Kubernetes source): "docker.client", "docker.source",
    # "kubernetes.source", "kubernetes.client".
    provided: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plugged:
    sources: list[Source] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    # (guard, the name of the guard it goes before)
    guards: list[tuple[Guard, str]] = field(default_factory=list)
    # Awaited once on start, before the executor takes a decision (restore shared state).
    before_acting: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Called with each rule set the daemon loads (first and on every reload), so a source
    # that polls per rule (KPI queries) follows the rules.
    on_rules: list[Callable[[RuleSet], None]] = field(default_factory=list)
    # Endpoints served on the daemon's HTTP server (inbound webhooks, the security API),
    # and their OpenAPI path items by path (the served /api/v1/openapi.json joins them).
    routes: list[AbstractRouteDef] = field(default_factory=list)
    api: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Called with every rule state change the engine reports (pending, firing, resolved):
    # what is firing now (current security findings) is read off these.
    on_state: list[Callable[[StateChange], None]] = field(default_factory=list)


class Integration(ABC):
    name: ClassVar[str]
    # The rule `source:` values this integration's sources produce.
    event_sources: ClassVar[tuple[str, ...]] = ()
    # The action names it provides (parameter models live in daemon/actions/params.py).
    action_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def enabled(self) -> Switch:
        """Whether it is on here, and why."""

    @abstractmethod
    def build(self, ctx: BuildContext) -> Plugged:
        """Sources, actions and guards; register what must be closed on ctx.stack."""
