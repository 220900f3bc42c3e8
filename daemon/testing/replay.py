"""`remedyd replay`: a rule set run over recorded events on a fake clock; per rule, what
it would have decided next to what was decided then (from the audit log), so a rule
change's effect shows before it is loaded."""

from __future__ import annotations

import itertools
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from daemon.actions.params import ACTIONS
from daemon.audit.records import record_time
from daemon.core.durations import format_duration
from daemon.core.errors import ConfigError
from daemon.engine.ruleset import RuleSet, compile_rules
from daemon.kube.cache import Cache
from daemon.settings import Settings, load_settings
from daemon.testing.compare import show_ref
from daemon.testing.recorded import History, Recorded, RecordedError, read_audit, read_events
from daemon.testing.sim import Happened, Simulation, executor_settings, ref_of_record

EXIT_OK, EXIT_RULES, EXIT_INPUT = 0, 1, 2
# How far apart a decision then and the same decision in the replay may be in time.
MATCH_WINDOW = 30.0


@dataclass(frozen=True)
class Line:
    """One decision, then or in the replay, as the report shows it."""

    at: float  # wall-clock seconds
    status: str
    guard: str
    target: str
    actions: tuple[str, ...]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.status, self.guard, self.target)

    def text(self) -> str:
        by = f" by {self.guard}" if self.guard else ""
        return f"{self.status}{by} [{', '.join(self.actions)}] on {self.target}"


def main(rule_paths: Sequence[str], config: Path | None, audit: Path | None,
         events: Sequence[Path], out: TextIO, err: TextIO, verbose: bool = False) -> int:
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"config error: {line}", file=err)
        return EXIT_INPUT
    paths = list(rule_paths) or list(settings.rules.paths)
    ruleset, errors = compile_rules(paths, ACTIONS)
    if errors:
        for error in errors:
            print(error, file=err)
        print("replay: the rules do not load; nothing replayed", file=err)
        return EXIT_RULES
    source = str(audit) if audit is not None else ", ".join(map(str, events))
    history = History()
    cache = Cache()
    try:
        if audit is not None:
            history = read_audit(audit)
            stream: Iterable[Recorded] = history.events
        else:
            stream = read_events(events, cache, history)
        replayed, span, count = _replay(ruleset, settings, stream,
                                        cache if audit is None else None)
    except RecordedError as exc:
        print(f"error: {exc}", file=err)
        return EXIT_INPUT
    for problem in history.problems:
        print(f"warning: {problem}", file=err)
    _report(out, source, paths, ruleset, count, span, history, replayed,
            then_known=audit is not None, verbose=verbose)
    return EXIT_OK


def _replay(ruleset: RuleSet, settings: Settings, stream: Iterable[Recorded],
            cache: Cache | None) -> tuple[list[Happened], tuple[float, float], int]:
    iterator = iter(stream)
    first = next(iterator, None)
    if first is None:
        return [], (0.0, 0.0), 0
    start = first.at
    with tempfile.TemporaryDirectory(prefix="remedyd-replay-") as scratch:
        sim = Simulation(ruleset, executor_settings(settings), Path(scratch) / "audit.jsonl",
                         wall_start=start, cache=cache, notify_url=settings.notify.webhook_url)
        counted: list[float] = []

        async def run() -> None:
            for recorded in itertools.chain([first], iterator):
                counted.append(recorded.at)
                await sim.advance(max(recorded.at - start, sim.now))
                await sim.feed([recorded.event])
            # What was pending at the end (a `for` running) as the daemon would go on.
            await sim.advance(sim.now + _tail(ruleset))
            await sim.drain()

        try:
            sim.loop.run_until_complete(run())
        finally:
            sim.close()
        moved = [_at_wall(h, start) for h in sim.happened]
        return moved, (start, counted[-1]), len(counted)


def _tail(ruleset: RuleSet) -> float:
    return max((r.rule.for_ + r.rule.keep_firing_for for r in ruleset.rules), default=0.0) + 1


def _at_wall(happened: Happened, start: float) -> Happened:
    from dataclasses import replace

    return replace(happened, at=start + happened.at)


def _then(records: Iterable[dict[str, Any]]) -> dict[str, list[Line]]:
    by_rule: dict[str, list[Line]] = {}
    for record in records:
        by_rule.setdefault(str(record.get("rule", "")), []).append(Line(
            at=record_time(record), status=str(record.get("decision", "")),
            guard=str(record.get("suppressed_by") or ""),
            target=show_ref(ref_of_record(record.get("target"))),
            actions=tuple(str(a.get("name")) for a in record.get("actions") or []
                          if isinstance(a, dict))))
    return by_rule


def _now(happened: Iterable[Happened]) -> dict[str, list[Line]]:
    by_rule: dict[str, list[Line]] = {}
    for h in happened:
        if h.what == "decision":
            by_rule.setdefault(h.rule, []).append(Line(h.at, h.status, h.guard,
                                                       show_ref(h.target), h.actions))
    return by_rule


def _counts(lines: Sequence[Line]) -> str:
    if not lines:
        return "-"
    counted = Counter(line.status for line in lines)
    return ", ".join(f"{counted[s]} {s}" for s in ("act", "escalate", "suppressed")
                     if counted[s])


def _report(out: TextIO, source: str, paths: Sequence[str], ruleset: RuleSet, count: int,
            span: tuple[float, float], history: History, replayed: list[Happened], *,
            then_known: bool, verbose: bool) -> None:
    then, now = _then(history.decisions), _now(replayed)
    period = (f"{_stamp(span[0])} .. {_stamp(span[1])} ({format_duration(span[1] - span[0])})"
              if count else "no events")
    print(f"replay: {count} event(s) from {source}, {period}; "
          f"{len(ruleset.rules)} rule(s) from {', '.join(paths)}", file=out)
    if history.skipped:
        print(f"replay: {history.skipped} record(s) skipped (not events a source passes on)",
              file=out)
    names = [r.rule.name for r in ruleset.rules]
    names += sorted(set(then) - set(names))
    width = max([len(n) for n in names] + [20]) + 14
    header = f"{'rule':<{width}} {'then':<28} replay" if then_known else (
        f"{'rule':<{width}} replay")
    print(header, file=out)
    details: list[str] = []
    for name in names:
        label = name if ruleset.by_name(name) is not None else f"{name} (not in the rules)"
        was, will = then.get(name, []), now.get(name, [])
        if then_known:
            verdict = "  changed" if changed(was, will) else ""
            print(f"{label:<{width}} {_counts(was):<28} {_counts(will)}{verdict}", file=out)
        else:
            verdict = ""
            print(f"{label:<{width}} {_counts(will)}", file=out)
        if (verdict or verbose) and (was or will):
            details.append(f"{name}:")
            details.extend(f"  {line}" for line in _diff(was, will, then_known))
    states = Counter(h.status for h in replayed if h.what == "state")
    if states:
        print("replay: state changes: " + ", ".join(f"{n} {s}" for s, n in sorted(
            states.items())), file=out)
    if details:
        legend = ("(- then only, + replay only, otherwise both; times then -> replay)"
                  if then_known else "(what the replay decided)")
        print(legend, file=out)
        for line in details:
            print(line, file=out)


def _diff(was: list[Line], will: list[Line], then_known: bool) -> Iterator[str]:
    if not then_known:
        yield from (f"  {_clock(w.at)}  {w.text()}" for w in will)
        return
    pairs = _pair(was, will)
    rows: list[tuple[float, int, str]] = []
    for old, new in pairs:
        when = _clock(old.at) if abs(old.at - new.at) < 0.5 else (
            f"{_clock(old.at)} -> {_clock(new.at)}")
        rows.append((old.at, 0, f"  {when}  {new.text()}"))
    paired_old = {id(old) for old, _ in pairs}
    paired_new = {id(new) for _, new in pairs}
    rows += [(w.at, 1, f"- {_clock(w.at)}  {w.text()}") for w in was if id(w) not in paired_old]
    rows += [(w.at, 2, f"+ {_clock(w.at)}  {w.text()}") for w in will if id(w) not in paired_new]
    yield from (text for _, _, text in sorted(rows, key=lambda r: (r[0], r[1])))


def changed(was: list[Line], will: list[Line]) -> bool:
    return not (len(was) == len(will) == len(_pair(was, will)))


def _pair(was: list[Line], will: list[Line]) -> list[tuple[Line, Line]]:
    """Each decision then with the replay's same decision (status, guard, target) nearest
    in time within MATCH_WINDOW: the replay's times are the events' own, then's the
    records', which lag a little (a watch's delivery, an engine under load)."""
    free = list(will)
    pairs = []
    for old in was:
        near = [w for w in free if w.key == old.key and abs(w.at - old.at) <= MATCH_WINDOW]
        if near:
            new = min(near, key=lambda w: abs(w.at - old.at))
            free.remove(new)
            pairs.append((old, new))
    return pairs


def _stamp(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at, tz=UTC).strftime("%m-%d %H:%M:%S")
