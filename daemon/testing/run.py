"""`remedyd test FILE...`: run test files, print what failed as a diff; exit 0, 1 or 2."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from daemon.actions.params import ACTIONS
from daemon.core.errors import ConfigError
from daemon.core.rules import SOURCES
from daemon.engine.ruleset import RuleSet, compile_rules
from daemon.settings import load_settings
from daemon.testing.compare import Comparison, compare, render
from daemon.testing.sim import executor_settings
from daemon.testing.spec import LoadedTestFile, TestFileError, load_test_file, where

EXIT_OK, EXIT_FAILED, EXIT_BAD_FILE = 0, 1, 2


@dataclass
class GroupResult:
    index: int
    name: str
    comparison: Comparison

    @property
    def label(self) -> str:
        return f"tests[{self.index}]" + (f" ({self.name!r})" if self.name else "")


@dataclass
class FileResult:
    path: Path
    groups: list[GroupResult] = field(default_factory=list)
    # The rules under test do not load: every test of the file fails.
    rule_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rule_errors and all(g.comparison.ok for g in self.groups)


def main(paths: Sequence[Path], out: TextIO, err: TextIO, verbose: bool = False) -> int:
    # The executor's and ladders' log lines (an escalation is a warning) are the
    # daemon's; the test's report says what happened.
    logging.getLogger("remedyd").addHandler(logging.NullHandler())
    code = EXIT_OK
    for path in paths:
        try:
            result = run_file(path)
        except TestFileError as exc:
            for line in str(exc).splitlines():
                print(f"error: {line}", file=err)
            code = EXIT_BAD_FILE
            continue
        report(result, out, verbose)
        if not result.ok and code == EXIT_OK:
            code = EXIT_FAILED
    return code


def run_file(path: Path) -> FileResult:
    from daemon.testing.runner import run_group

    loaded = load_test_file(path)
    ruleset, errors = compile_rules(loaded.rule_paths, ACTIONS)
    result = FileResult(path)
    if errors:
        result.rule_errors = [str(e) for e in errors]
        return result
    check_references(loaded, ruleset)
    try:
        config = load_settings(loaded.config) if loaded.config else None
    except ConfigError as exc:
        raise TestFileError(f"{path}: config: {exc}") from None
    settings = executor_settings(config)
    notify_url = config.notify.webhook_url if config is not None else None
    for index, group in enumerate(loaded.spec.tests):
        got = run_group(group, ruleset, settings, loaded.spec.evaluation_interval, notify_url)
        result.groups.append(GroupResult(index, group.name, compare(list(group.expect), got)))
    return result


def check_references(loaded: LoadedTestFile, ruleset: RuleSet) -> None:
    """Rule names and sources the test file uses exist in the rule files."""
    problems: list[str] = []
    data = loaded.spec.model_dump(by_alias=True)
    known = ", ".join(sorted(r.rule.name for r in ruleset.rules)) or "none"
    for t, group in enumerate(loaded.spec.tests):
        for i, series in enumerate(group.input_series):
            compiled = ruleset.by_name(series.rule)
            key = where(data, ("tests", t, "input_series", i, "rule"))
            if compiled is None:
                problems.append(f"{key}: no rule {series.rule!r} in the rule files "
                                f"(rules: {known})")
            elif compiled.rule.source != "kpi":
                problems.append(f"{key}: rule {series.rule!r} is a `source: "
                                f"{compiled.rule.source}` rule; series feed `source: kpi` "
                                "rules (give events to the others: input_events)")
        for i, event in enumerate(group.input_events):
            if event.source not in SOURCES:
                problems.append(f"{where(data, ('tests', t, 'input_events', i, 'source'))}: "
                                f"unknown source {event.source!r}; one of {', '.join(SOURCES)}")
        for i, expectation in enumerate(group.expect):
            if ruleset.by_name(expectation.rule) is None:
                problems.append(f"{where(data, ('tests', t, 'expect', i, 'rule'))}: no rule "
                                f"{expectation.rule!r} in the rule files (rules: {known})")
    if problems:
        raise TestFileError("\n".join(f"{loaded.path}: {p}" for p in problems))


def report(result: FileResult, out: TextIO, verbose: bool) -> None:
    if result.rule_errors:
        print(f"FAILED {result.path}: the rules under test do not load:", file=out)
        for line in result.rule_errors:
            print(f"  {line}", file=out)
        return
    for group in result.groups:
        comparison = group.comparison
        if comparison.ok and not verbose:
            continue
        status = "ok" if comparison.ok else "FAILED"
        print(f"{status} {result.path}: {group.label}", file=out)
        if not comparison.ok:
            print("  (- expected, not got; + got, not expected)", file=out)
        for line in render(comparison, verbose):
            print(f"  {line}", file=out)
    passed = sum(g.comparison.ok for g in result.groups)
    verdict = "ok" if result.ok else "FAILED"
    print(f"{verdict}: {result.path}: {passed} of {len(result.groups)} test(s) passed",
          file=out)
