"""Prototype, not a benchmark target: what pruning the CEL context's attributes would buy.

    .venv/bin/python bench/proto_pruned_context.py [--events 50000] [--runs 5]

Same workload and loop as bench/engine_throughput.py. PrunedEvaluator is
daemon.engine.evaluator.Evaluator with one change, the one proposed for daemon/:
the `event.attributes` map handed to CEL holds only the keys that the event's
candidate rules name literally (`event.attributes.k`, `event.attributes["k"]`,
`"k" in event.attributes`); if any candidate uses the map in another way
(`.exists(...)`, `size(...)`, a computed key), the whole map is passed as today.
Why it matters with cel 0.10: building a Context costs ~1-1.5 us per string
value, and each `event.attributes[...]` lookup costs time linear in the map's size.
It checks that decisions and evaluation problems are identical to the Evaluator's.
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import engine_throughput as bench

from daemon.core.conditions import ConditionError, make_context
from daemon.core.decisions import Decision
from daemon.core.events import Event
from daemon.engine.evaluator import EvaluationProblem, Evaluator, event_variables
from daemon.engine.ruleset import CompiledRule, RuleSet
from daemon.sources.docker import normalise

_ANY = re.compile(r"\bevent\.attributes\b")
_KEY = re.compile(r"""\bevent\.attributes\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()"""
                  r"""|\bevent\.attributes\[\s*"([^"\\]+)"\s*\]"""
                  r"""|"([^"\\]+)"\s+in\s+event\.attributes\b""")


def attribute_keys(source: str) -> frozenset[str] | None:
    """The attribute keys a condition names, or None when it may need the whole map."""
    uses = len(_ANY.findall(source))
    keys = [next(g for g in m.groups() if g) for m in _KEY.finditer(source)]
    return frozenset(keys) if len(keys) == uses else None


class PrunedEvaluator(Evaluator):
    def __init__(self, ruleset: RuleSet) -> None:
        super().__init__(ruleset)
        self._keys: dict[int, tuple[tuple[CompiledRule, ...], frozenset[str] | None]] = {}

    def _keys_for(self, candidates: tuple[CompiledRule, ...]) -> frozenset[str] | None:
        cached = self._keys.get(id(candidates))
        if cached is None or cached[0] is not candidates:
            found: set[str] = set()
            narrowed = True
            for compiled in candidates:
                keys = attribute_keys(compiled.rule.when)
                if keys is None:
                    narrowed = False
                    break
                found |= keys
            cached = (candidates, frozenset(found) if narrowed else None)
            self._keys[id(candidates)] = cached
        return cached[1]

    def evaluate(self, event: Event, now: float) -> list[Decision]:
        candidates = self.ruleset.candidates(event.source, event.kind, event.action)
        if event.action == "destroy":
            self.state.forget_subject(event.subject.key)
        if not candidates:
            return []
        fields = event_variables(event)
        keys = self._keys_for(candidates)
        if keys is not None:
            fields["attributes"] = {k: v for k in keys
                                    if (v := event.attributes.get(k)) is not None}
        variables: dict[str, Any] = {"event": fields}
        if any(rule.uses_object for rule in candidates):
            variables["object"] = dict(event.object or {})
        context = make_context(variables)
        decisions: list[Decision] = []
        for compiled in candidates:
            if compiled.rule.match.kind not in (None, event.kind):
                continue
            try:
                matched = compiled.condition.evaluate(context)
            except ConditionError as exc:
                self.problems.append(EvaluationProblem(compiled.rule.name, str(exc)))
                matched = False
            decision = self._after_match(compiled, event, matched, now)
            if decision is not None:
                decisions.append(decision)
        return decisions


def run(cls: type[Evaluator], ruleset: RuleSet, events: list[dict[str, Any]]
        ) -> tuple[float, int, int]:
    evaluator = cls(ruleset)
    decisions = problems = 0
    gc.collect()
    start = time.perf_counter()
    for raw in events:
        now = raw["timeNano"] / 1e9
        evaluator.next_due()
        event = normalise(raw, now)
        if event is None:
            continue
        decided = evaluator.evaluate(event, now)
        decided += evaluator.due(now)
        decisions += len(decided)
        problems += len(evaluator.take_problems())
    return len(events) / (time.perf_counter() - start), decisions, problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cpu = bench.pin_to_one_core()
    events = bench.make_events(args.events)
    with tempfile.TemporaryDirectory(prefix="remedyd-bench-") as tmp:
        rulesets = {"bench rules": bench.load_rules(Path(tmp)),
                    "all rules narrowable": bench.load_rules(Path(tmp), narrowable=True)}
    gc.freeze()
    out: dict[str, Any] = {}
    for name, ruleset in rulesets.items():
        run(PrunedEvaluator, ruleset, events[:5000])  # warm-up
        today = [run(Evaluator, ruleset, events) for _ in range(args.runs)]
        pruned = [run(PrunedEvaluator, ruleset, events) for _ in range(args.runs)]
        same = {r[1:] for r in today} == {r[1:] for r in pruned}
        out[name] = {"evaluator_median_events_per_s": round(statistics.median(
                         r[0] for r in today)),
                     "pruned_median_events_per_s": round(statistics.median(r[0] for r in pruned)),
                     "same_decisions_and_problems": same}
        print(f"{name:22s} Evaluator {out[name]['evaluator_median_events_per_s']:>7,} events/s"
              f"   pruned context {out[name]['pruned_median_events_per_s']:>7,} events/s"
              f"   (median of {args.runs}; same decisions and problems: {same})")
    path = _common.write_results("proto_pruned_context", {
        "benchmark": "proto_pruned_context", "command": " ".join(
            [".venv/bin/python", *sys.argv]),
        "machine": _common.machine(), "pinned_cpu": cpu, "raw_events_per_run": len(events),
        "runs": args.runs, "results": out})
    print(f"results: {path.relative_to(_common.ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
