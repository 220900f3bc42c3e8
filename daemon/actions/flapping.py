"""The `flapping` guard: a decision the engine made while the rule's state for its
subject was flapping is refused, and so audited as suppressed by flapping.

The engine marks such decisions (Decision.flapping) and, when flapping starts, emits
one unmarked decision with the rule's notifying steps, which this guard lets by. Not
transient: a flapping signal is a "no" for this episode, not a "not yet".
"""

from __future__ import annotations

from daemon.actions.guards import BaseGuard, GuardContext, GuardResult


class FlappingGuard(BaseGuard):
    name = "flapping"
    transient = False

    async def check(self, ctx: GuardContext) -> GuardResult:
        decision = ctx.decision
        if not decision.flapping:
            return self.ok()
        flap = decision.rule.flap
        window = (f" (more than {flap.changes} state changes within {flap.within:g}s)"
                  if flap is not None else "")
        return self.refuse(f"the rule's state for this subject is flapping{window}; "
                           "notified once when it started")
