"""Expected against got: which expectations held, what came instead, as a readable diff.

Decisions are checked exhaustively: a decision no expectation names fails the test (two
rules matching one event is what a test should catch). State changes are checked as
named: each expected one must happen; the others are shown, not judged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from daemon.core.durations import format_duration
from daemon.core.events import Ref
from daemon.engine.kpi import series_id
from daemon.testing.series import SeriesError, parse_series
from daemon.testing.sim import Happened
from daemon.testing.spec import Expectation


@dataclass
class Comparison:
    matched: list[tuple[Expectation, Happened]] = field(default_factory=list)
    missing: list[Expectation] = field(default_factory=list)
    unexpected: list[Happened] = field(default_factory=list)
    # Outside what the test checks (state changes of rules it names no state of).
    unchecked: list[Happened] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def compare(expected: list[Expectation], got: list[Happened]) -> Comparison:
    result = Comparison()
    free = list(got)
    for expectation in sorted(expected, key=lambda e: e.at):
        found = next((h for h in free if matches(expectation, h)), None)
        if found is None:
            result.missing.append(expectation)
        else:
            free.remove(found)
            result.matched.append((expectation, found))
    result.unexpected = [h for h in free if h.what == "decision"]
    result.unchecked = [h for h in free if h.what != "decision"]
    return result


def matches(expectation: Expectation, happened: Happened) -> bool:
    if abs(expectation.at - happened.at) > 1e-6 or expectation.rule != happened.rule:
        return False
    if expectation.state is not None:
        return happened.what == "state" and happened.status == expectation.state and (
            expectation.subject is None or names(expectation.subject, happened.target))
    if happened.what != "decision" or happened.status != expectation.decision:
        return False
    if expectation.guard is not None and not _guard_is(expectation.guard, happened.guard):
        return False
    if expectation.actions is not None and tuple(expectation.actions) != happened.actions:
        return False
    if expectation.step is not None and expectation.step != happened.step:
        return False
    return expectation.target is None or names(expectation.target, happened.target)


def _guard_is(expected: str, guard: str) -> bool:
    """`budget` names each budget (budget_target, budget_rule, budget_global)."""
    return guard == expected or guard.startswith(expected + "_")


def names(text: str, ref: Ref | None) -> bool:
    """Whether `text` names `ref`: by name, namespace/name, source/kind/[namespace/]name,
    its key, or (a KPI series) its labels."""
    if ref is None:
        return False
    text = text.strip()
    if "{" in text:
        try:
            wanted = series_id(parse_series(text))
        except SeriesError:
            return False
        return wanted == ref.id
    spelled = {ref.name, ref.id, ref.key, f"{ref.source}/{ref.kind}/{ref.name}"}
    if ref.namespace:
        spelled |= {f"{ref.namespace}/{ref.name}",
                    f"{ref.source}/{ref.kind}/{ref.namespace}/{ref.name}"}
    return text in spelled - {""}


def show_ref(ref: Ref | None) -> str:
    if ref is None:
        return "?"
    if ref.source == "kpi":
        return ref.id or ref.name
    where = f"{ref.namespace}/" if ref.namespace else ""
    return f"{ref.source}/{ref.kind}/{where}{ref.name}"


def show_time(seconds: float) -> str:
    return format_duration(seconds) if seconds == int(seconds) or seconds >= 1 else (
        f"{seconds:g}s")


def describe_expected(e: Expectation) -> str:
    if e.state is not None:
        return _line(e.at, e.rule, f"state {e.state}",
                     f"of {e.subject}" if e.subject else "")
    parts = [f"decision {e.decision}"]
    if e.guard:
        parts.append(f"by {e.guard}")
    if e.actions is not None:
        parts.append("[" + ", ".join(e.actions) + "]")
    if e.step is not None:
        parts.append(f"step {e.step}")
    return _line(e.at, e.rule, " ".join(parts), f"on {e.target}" if e.target else "")


def describe_got(h: Happened) -> str:
    if h.what == "state":
        return _line(h.at, h.rule, f"state {h.status}", f"of {show_ref(h.target)}")
    parts = [f"decision {h.status}"]
    if h.guard:
        parts.append(f"by {h.guard}")
    parts.append("[" + ", ".join(h.actions) + "]")
    if h.step:
        parts.append(f"step {h.step}")
    detail = f"on {show_ref(h.target)}"
    if h.reason and h.status != "act":
        detail += f" ({h.reason})"
    return _line(h.at, h.rule, " ".join(parts), detail)


def _line(at: float, rule: str, what: str, detail: str) -> str:
    return f"at {show_time(at):>7}  {rule}: {what}" + (f" {detail}" if detail else "")


def render(comparison: Comparison, everything: bool = False) -> list[str]:
    """The diff: `-` expected and not got, `+` got and not expected, ` ` as expected
    (and with `everything`, `·` the state changes no expectation names); in time order,
    expected before got at the same time."""
    rows: list[tuple[float, int, str]] = []
    if everything:
        rows += [(h.at, 3, "· " + describe_got(h)) for h in comparison.unchecked]
    rows += [(h.at, 2, "  " + describe_got(h)) for _, h in comparison.matched]
    rows += [(e.at, 0, "- " + describe_expected(e)) for e in comparison.missing]
    rows += [(h.at, 1, "+ " + describe_got(h)) for h in comparison.unexpected]
    return [text for _, _, text in sorted(rows, key=lambda r: (r[0], r[1]))]
