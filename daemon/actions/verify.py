"""Did a repair hold? One verification waits at most `within` for its recovery signal.

The signal is the rule's own state for the subject resolving (the default), a CEL
`until` matching one of the subject's later events, or a PromQL `query` returning a
sample. A resolved state ends any of them as recovered. Never reading the signal at all
(Prometheus unreachable for the whole window) is `unknown`, not `not_recovered`: the
ladder does not escalate to a repair on a guess.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from daemon.core.conditions import Condition, ConditionError, make_context
from daemon.core.events import Event
from daemon.core.rules import Verify
from daemon.engine.evaluator import event_variables

Outcome = Literal["recovered", "not_recovered", "unknown"]
Signal = Literal["state", "until", "query"]
# A `verify.query` is polled this often (a tenth of the window, within these bounds).
QUERY_EVERY_MIN = 0.5
QUERY_EVERY_MAX = 5.0


class PromQuery(Protocol):
    """An instant PromQL query: the samples it returned (empty: none); raises when the
    answer could not be read (unreachable, a query error)."""

    async def query(self, q: str) -> Sequence[Any]: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    detail: str


def signal_of(verify: Verify) -> Signal:
    if verify.until is not None:
        return "until"
    return "query" if verify.query is not None else "state"


class Verification:
    """One rung's wait: fed the subject's events and its rule's resolution by the ladder."""

    def __init__(self, rule: str, verify: Verify, params: dict[str, Any],
                 until: Condition | None, prometheus: PromQuery | None) -> None:
        self.rule = rule
        self.verify = verify
        self.signal = signal_of(verify)
        self._params = params
        self._until = until
        self._prometheus = prometheus
        self._hit = asyncio.Event()
        self._why = ""

    def resolved(self) -> None:
        """The rule's state for the subject resolved: recovered, whatever the signal."""
        self._set("the rule's state for the subject resolved")

    def observe(self, event: Event) -> None:
        if self._until is None or self._hit.is_set():
            return
        context = make_context({"event": event_variables(event),
                                "object": dict(event.object or {}), "params": self._params})
        try:
            matched = self._until.evaluate(context)
        except ConditionError:
            return  # an event without the field `until` reads is not the one awaited
        if matched:
            self._set(f"until matched event {event.kind} {event.action} ({event.id})")

    def _set(self, why: str) -> None:
        if not self._hit.is_set():
            self._why = why
            self._hit.set()

    async def wait(self) -> Verdict:
        within = self.verify.within
        if self.signal == "query":
            return await self._poll(within)
        try:
            async with asyncio.timeout(within):
                await self._hit.wait()
        except TimeoutError:
            what = "until matched no event" if self.signal == "until" else (
                "the rule's state for the subject did not resolve")
            return Verdict("not_recovered", f"{what} within {within:g}s")
        return Verdict("recovered", self._why)

    async def _poll(self, within: float) -> Verdict:
        assert self.verify.query is not None
        every = min(QUERY_EVERY_MAX, max(QUERY_EVERY_MIN, within / 10))
        answered, error = False, "no Prometheus is configured ([prometheus] url)"
        try:
            async with asyncio.timeout(within):
                while not self._hit.is_set():
                    if self._prometheus is not None:
                        try:
                            samples = await self._prometheus.query(self.verify.query)
                        except Exception as exc:  # unreadable, whatever the client raised
                            error = f"{type(exc).__name__}: {exc}"
                        else:
                            answered = True
                            if samples:
                                return Verdict("recovered",
                                               f"the query returned {len(samples)} sample(s)")
                    try:
                        async with asyncio.timeout(every):
                            await self._hit.wait()
                    except TimeoutError:
                        continue
        except TimeoutError:
            if answered:
                return Verdict("not_recovered", f"the query returned no sample within "
                                                f"{within:g}s")
            return Verdict("unknown", f"the query could not be read within {within:g}s: "
                                      f"{error}")
        return Verdict("recovered", self._why)
