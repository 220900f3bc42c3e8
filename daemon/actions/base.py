"""The action contract: parameters checked at load, a pre-flight check per target, run, verify."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel

from daemon.actions.params import NoParams
from daemon.core.decisions import Decision


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
    # Whether it changes the target; notifications don't and so skip cooldowns' spending.
    mutating: ClassVar[bool] = True

    def parse(self, params: dict[str, Any]) -> BaseModel:
        return self.Params.model_validate(params)

    async def preflight(self, decision: Decision, params: BaseModel) -> Refusal | None:
        return None

    @abstractmethod
    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        """Do it; return details for the audit log. Raise TemporaryError to be retried."""

    async def verify(self, decision: Decision, params: BaseModel,
                     details: dict[str, Any]) -> bool | None:
        """Whether the repair took; None when there is nothing to check."""
        return None
