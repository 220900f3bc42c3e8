"""The action contract: parameters checked at load, state observed and checked per target,
one attempt per `run` (the executor owns retries), then verify."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.params import NoParams
from daemon.core.decisions import Decision
from daemon.core.events import Event, Ref


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a pre-flight check will not let an action touch its target."""

    guard: str
    reason: str


class Action(ABC):
    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]] = NoParams
    # Target kinds this action can act on ("docker/container"); empty means any.
    applies_to: ClassVar[tuple[str, ...]] = ()
    # Whether it changes the target. Only changing actions spend budgets and hold the
    # target's lock; the others (notifications) have their own rate limit.
    mutating: ClassVar[bool] = True
    # What the action needs from its peer, for `remedyd check` and least-privilege setups.
    permissions: ClassVar[tuple[str, ...]] = ()
    # Actions that read the same state share one observation per decision.
    observe_key: ClassVar[str] = ""

    def resolve_target(self, event: Event) -> Ref | str:
        """What this action acts on for `event` (a crash-looping Pod's rollback acts on its
        Deployment), or why nothing can be: incidents, cooldowns and budgets are keyed by
        the answer."""
        return event.subject

    def parse(self, params: Mapping[str, Any]) -> BaseModel:
        return self.Params.model_validate(dict(params))

    def attempts(self, params: BaseModel) -> int | None:
        """How many attempts this action's parameters ask for; None: the executor's default."""
        return None

    async def observe(self, target: Ref) -> Mapping[str, Any] | None:
        """The target's current state (None: gone, or nothing to observe).

        Raise ActionError when it cannot be read right now.
        """
        return None

    def superseded(self, decision: Decision, state: Mapping[str, Any] | None) -> str | None:
        """Why the event that led to `decision` no longer describes the target, or None."""
        return None

    async def preflight(self, decision: Decision, params: BaseModel,
                        state: Mapping[str, Any] | None) -> Refusal | None:
        return None

    @abstractmethod
    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        """One attempt; return details for the audit log.

        Raise TemporaryError when another attempt may succeed, PermanentError when not.
        """

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        """Whether the repair took; None when there is nothing to check."""
        return None

    def remember(self, step: Mapping[str, Any], at: float) -> None:
        """A successful step of this action (its audited `details`), done at wall-clock time
        `at`: now, or by an earlier run of the daemon, restored from the audit log on
        start. An action that must not repeat itself keeps what it needs from it."""
        return None

    def intent(self, decision: Decision, params: BaseModel,
               state: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """What this action is about to do, from the state its guards just read, for the
        decision record written before it runs: if the daemon dies mid-action, the next
        start hands it back to `remember` as an interrupted step."""
        return None

    def describe_state(self, state: Mapping[str, Any] | None) -> dict[str, Any]:
        """A short summary of an observed state for the audit log."""
        return {"exists": state is not None}
