"""The test file: promtool's shape (`rule_files`, `evaluation_interval`, `tests`) with
remedyd's inputs (KPI series, events) and expectations (decisions, state changes).

Loading checks the whole file before anything runs; every problem names the file, the
test (by index and name) and the key, as `remedyd check` names a rule's.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from daemon.core.durations import Duration
from daemon.core.validation import ErrorDetails, error_path
from daemon.testing.notation import Sample, expand
from daemon.testing.series import parse_series

DecisionStatus = Literal["act", "suppressed", "escalate"]
StateName = Literal["pending", "firing", "resolved", "flapping", "flapping_ended"]


class TestFileError(Exception):
    """A test file that cannot be run: exit 2."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputSeries(_Model):
    """What a KPI rule's query returns for one series, evaluation after evaluation."""

    series: str
    # The `source: kpi` rule whose query returns it (remedyd does not evaluate PromQL).
    rule: str
    values: str

    @field_validator("series", "values")
    @classmethod
    def _readable(cls, value: str, info: ValidationInfo) -> str:
        # SeriesError and NotationError are ValueErrors: pydantic reports their message.
        (parse_series if info.field_name == "series" else expand)(value)
        return value

    @property
    def labels(self) -> dict[str, str]:
        return parse_series(self.series)

    @property
    def samples(self) -> list[Sample]:
        return expand(self.values)


class SubjectSpec(_Model):
    name: str
    id: str = ""
    namespace: str = ""
    # Default: the event's own kind (and source).
    kind: str | None = None


class InputEvent(_Model):
    """An event at a time, as a source would hand it to the engine."""

    at: Duration
    source: str
    kind: str | None = None
    action: str
    subject: SubjectSpec
    attributes: dict[str, Any] = Field(default_factory=dict)
    object: dict[str, Any] | None = None
    # Default: what the source itself says the action ends (a probe's `recovered` ends
    # its `failed`, an alert's `resolved` its `firing`).
    resolves: list[str] | None = None
    synthetic: bool = False
    # The same event `repeat` times, `every` apart (a crash loop's deaths).
    repeat: int = Field(default=1, ge=1, le=10_000)
    every: Duration | None = Field(default=None, gt=0)

    @field_validator("subject", mode="before")
    @classmethod
    def _subject_by_name(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _repeat_needs_every(self) -> InputEvent:
        if self.repeat > 1 and self.every is None:
            raise ValueError("`repeat` needs `every` (how far apart the events are)")
        return self


class Expectation(_Model):
    """One decision or one state change, at a time, of one rule."""

    at: Duration
    rule: str
    decision: DecisionStatus | None = None
    # The guard that suppressed it (`decision: suppressed`), e.g. cooldown, budget,
    # flapping, dry_run.
    guard: str | None = None
    # The target or subject: its name, namespace/name, or source/kind/[namespace/]name;
    # for a KPI series its labels, '{service="api"}'. Unset: any.
    target: str | None = None
    actions: list[str] | None = None
    step: int | None = Field(default=None, ge=0)
    state: StateName | None = None
    subject: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Expectation:
        if (self.decision is None) == (self.state is None):
            raise ValueError("an expectation has either `decision:` (act, suppressed, "
                             "escalate) or `state:` (pending, firing, resolved, flapping, "
                             "flapping_ended)")
        if self.state is not None and (self.guard or self.actions is not None
                                       or self.step is not None or self.target):
            raise ValueError("`guard`, `actions`, `step` and `target` belong to decisions; "
                             "a state change names its `subject`")
        if self.decision is not None and self.subject is not None:
            raise ValueError("a decision names its `target`, not its `subject`")
        if self.guard is not None and self.decision != "suppressed":
            raise ValueError("`guard` names what suppressed a `decision: suppressed`")
        return self


class TestGroup(_Model):
    name: str = ""
    # Between two samples of every input series; default: evaluation_interval.
    interval: Duration | None = Field(default=None, gt=0)
    input_series: list[InputSeries] = Field(default_factory=list)
    input_events: list[InputEvent] = Field(default_factory=list)
    expect: list[Expectation] = Field(default_factory=list)
    # Run at least this long (default: to the last input or expectation).
    until: Duration | None = None


class TestFile(_Model):
    rule_files: list[str] = Field(min_length=1)
    # How often KPI rules without their own `interval` are queried ([prometheus] interval).
    evaluation_interval: Duration = Field(default=60.0, gt=0)
    # A remedyd configuration whose [safety] and [notify] limits apply (dry_run, budgets,
    # coalescing); default: the built-in defaults.
    config: str | None = None
    tests: list[TestGroup] = Field(min_length=1)


@dataclass(frozen=True)
class LoadedTestFile:
    path: Path
    spec: TestFile
    rule_paths: list[Path]
    config: Path | None


def load_test_file(path: Path) -> LoadedTestFile:
    """The parsed test file, or TestFileError naming the file, the test and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TestFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise TestFileError(f"{path}: {where}invalid YAML: "
                            f"{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise TestFileError(f"{path}: the top level must be a mapping with `rule_files:` "
                            "and `tests:`")
    try:
        spec = TestFile.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {_describe(error, data)}" for error in exc.errors()]
        raise TestFileError("\n".join(lines)) from None
    base = path.parent
    rule_paths: list[Path] = []
    for index, pattern in enumerate(spec.rule_files):
        matches = sorted(glob.glob(str(base / pattern))) if glob.has_magic(pattern) else [
            str(base / pattern)]
        if not matches or not all(Path(m).exists() for m in matches):
            raise TestFileError(f"{path}: rule_files[{index}]: {pattern!r}: no such file "
                                f"(relative to {base})")
        rule_paths.extend(Path(m) for m in matches)
    config = None
    if spec.config is not None:
        config = base / spec.config
        if not config.is_file():
            raise TestFileError(f"{path}: config: {spec.config!r}: no such file "
                                f"(relative to {base})")
    return LoadedTestFile(path=path, spec=spec, rule_paths=rule_paths, config=config)


def where(data: Any, loc: tuple[str | int, ...]) -> str:
    """`tests[1] ("name").input_series[0].values`: a key as a reader finds it."""
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int) or part.isdigit():
            index = int(part)
            out += f"[{index}]"
            node = node[index] if isinstance(node, list) and index < len(node) else None
            if out.startswith("tests[") and out.count("[") == 1 and isinstance(node, dict) and (
                    node.get("name")):
                out += f" ({node['name']!r})"
        else:
            out += f".{part}" if out else part
            node = node.get(part) if isinstance(node, dict) else None
    return out


def _describe(error: ErrorDetails, data: Any) -> str:
    loc = error_path(error)
    key = where(data, tuple(loc))
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key}: {message}" if key else message
