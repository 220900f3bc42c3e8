"""Rule files: the model and the loader. Errors name the file, the rule and the line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daemon.core.durations import Duration
from daemon.core.errors import RuleError
from daemon.core.templates import TemplateError, check
from daemon.core.validation import describe_all

SOURCES = ("docker", "kubernetes", "kpi", "probe", "webhook", "security")
# The event kinds each source emits (the Docker source asks the engine for container
# events only); a source missing here has not said yet, so its rules can name any kind.
SOURCE_KINDS: dict[str, tuple[str, ...]] = {"docker": ("container",),
                                             "kubernetes": ("pod", "deployment", "node")}
# What security (posture) events are about: a Docker container, or a Kubernetes object
# of a kind that has a pod template or grants, isolates or binds something.
SECURITY_KINDS: tuple[str, ...] = (
    "container", "pod", "deployment", "statefulset", "daemonset", "replicaset", "job",
    "cronjob", "namespace", "networkpolicy", "role", "clusterrole", "rolebinding",
    "clusterrolebinding", "serviceaccount")
Severity = Literal["low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$")


class Verify(BaseModel):
    """After a step succeeded: did the repair hold? Recovered when, within `within`,
    `until` (CEL, over the subject's later events, as `when`) matches, or `query`
    (PromQL, instant) returns a sample; with neither, when the rule's own state for the
    subject stops firing (its `clear_when`, or `when` no longer holding)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    within: Duration = Field(gt=0)
    until: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_signal(self) -> Verify:
        if self.until is not None and self.query is not None:
            raise ValueError("give `until` (CEL) or `query` (PromQL), not both")
        return self


class ActionSpec(BaseModel):
    """One step of a rule: `- docker.restart: {timeout: 10s}`, optionally with
    `verify: {within: 2m}` beside the action's name."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    verify: Verify | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_single_key_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value, "params": {}}
        if isinstance(value, dict) and "name" not in value:
            names = [key for key in value if key != "verify"]
            if len(names) != 1:
                raise ValueError(
                    "an action is a mapping with exactly one key, the action's name "
                    f"(e.g. `- docker.restart: {{timeout: 10s}}`), plus `verify:` if it "
                    f"is verified; got keys {sorted(map(str, value))}"
                )
            name = names[0]
            params = value[name]
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ValueError(f"parameters of {name} must be a mapping")
            spec: dict[str, Any] = {"name": name, "params": params}
            if "verify" in value:
                spec["verify"] = value["verify"]
            return spec
        return value


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    # At most `max` actions per target, and `rule_max` across all targets, per window.
    max: int = Field(ge=1)
    per: Duration
    rule_max: int | None = Field(default=None, ge=1)
    # What to do, once per exhausted window, instead of acting again.
    then: list[ActionSpec] = Field(default_factory=list)


class BlastRadius(BaseModel):
    """A rule's own limits on how many pods its actions touch ([kubernetes.blast_radius]
    gives the rest): a share of a workload's pods and a number of a namespace's, per window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_workload_share: float | None = Field(default=None, gt=0, le=1)
    max_namespace_pods: int | None = Field(default=None, ge=1)
    window: Duration | None = Field(default=None, gt=0)


class Occurrences(BaseModel):
    """Fire only when the condition matched `count` times within `within` for one subject."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    count: int = Field(ge=2)
    within: Duration


class Flap(BaseModel):
    """More than `changes` changes of the rule's state for one subject within `within`:
    the subject is flapping; its actions are suppressed (audited), and `notify` (default:
    the rule's steps that change nothing) runs once when flapping starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    changes: int = Field(ge=2)
    within: Duration = Field(gt=0)
    notify: list[ActionSpec] = Field(default_factory=list)


OnMissing = Literal["hold", "breach", "ok"]
_TARGET_KIND = re.compile(r"^(docker|kubernetes)/[a-z]+$")


class Target(BaseModel):
    """What a KPI series or an alert is about, from its labels: `kind` is a target kind
    (`docker/container`, `kubernetes/deployment`, ...), `name` and `namespace` templates
    such as `{{ $labels.deployment }}`. A series missing a named label has no target."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str
    name: str
    namespace: str = ""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if not _TARGET_KIND.match(value):
            raise ValueError(f"expected docker/<kind> or kubernetes/<kind>, got {value!r}")
        return value

    @field_validator("name", "namespace")
    @classmethod
    def _label_templates(cls, value: str) -> str:
        try:
            check(value)
        except TemplateError as exc:
            raise ValueError(str(exc)) from None
        return value


class SecurityCheck(BaseModel):
    """What a `source: security` rule checks, as scanners report it: a stable id (SARIF's
    ruleId), how bad a finding is, the control it maps to, and the fix in one line."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)+$")
    severity: Severity
    control: str = Field(min_length=1)
    remediation: str = Field(min_length=1)

    @field_validator("remediation")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\n" in value.strip():
            raise ValueError("one line: a hint, not a runbook")
        return value.strip()


class Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str | None = None
    action: list[str] | None = None


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: str
    description: str = ""
    source: str
    match: Match = Field(default_factory=Match)
    when: str = "true"
    for_: Duration = Field(default=0.0, alias="for")
    occurrences: Occurrences | None = None
    cooldown: Duration = 0.0
    budget: Budget | None = None
    blast_radius: BlastRadius | None = None
    dry_run: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    # Constants conditions read as `params.<name>` (thresholds), so a pack's numbers
    # are set in one place.
    params: dict[str, float | int | str | bool | list[str]] = Field(default_factory=dict)
    # source: kpi: the PromQL instant query polled every `interval` (default: [prometheus]
    # interval); each returned series is one subject. An empty result or NaN counts as
    # neither breach nor healthy unless `on_missing` says so.
    query: str | None = None
    interval: Duration | None = Field(default=None, gt=0)
    on_missing: OnMissing = "hold"
    # Time semantics, as in Prometheus alerting rules: once firing, stay firing this long
    # after the condition stopped holding; `clear_when` (hysteresis): once firing, stay
    # firing until this holds, not merely until `when` stops holding.
    keep_firing_for: Duration = 0.0
    clear_when: str | None = None
    flap: Flap | None = None
    # Gates: PromQL queries, any non-empty result blocks acting (as kured's blocking
    # alerts); and whether an active Alertmanager silence matching the decision's labels
    # blocks it (where [alertmanager] url is set).
    unless: list[str] = Field(default_factory=list)
    silences: bool = True
    # KPI and webhook rules: the object the actions act on, from the labels.
    target: Target | None = None
    actions: list[ActionSpec] = Field(min_length=1)
    # The ladder: when a step's `verify` says the repair did not hold, the next of these
    # runs, under the same incident; the last one failing ends in a notification and the
    # rule paused for that subject.
    escalate: list[ActionSpec] = Field(default_factory=list)
    # source: security: the check this rule is (required there, refused elsewhere).
    security: SecurityCheck | None = None

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lower-case letters, digits, '.', '_' and '-'")
        return value

    @field_validator("source")
    @classmethod
    def _known_source(cls, value: str) -> str:
        if value not in SOURCES:
            raise ValueError(f"unknown source {value!r}; one of {', '.join(SOURCES)}")
        return value

    @model_validator(mode="after")
    def _query_for_kpi_rules(self) -> Rule:
        if self.source == "kpi" and not self.query:
            raise ValueError("a `source: kpi` rule needs a `query` (PromQL)")
        if self.source != "kpi" and (self.query is not None or self.interval is not None):
            raise ValueError("`query` and `interval` belong to `source: kpi` rules")
        if self.source == "security" and self.security is None:
            raise ValueError("a `source: security` rule needs `security: {id, severity, "
                             "control, remediation}`")
        if self.source != "security" and self.security is not None:
            raise ValueError("`security` belongs to `source: security` rules")
        return self


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rules: list[Any]


@dataclass(frozen=True)
class LoadedRule:
    rule: Rule
    file: str
    line: int


def discover(paths: Iterable[str | Path]) -> list[Path]:
    """Rule files under the given paths: files as named, directories' *.yaml/*.yml sorted,
    but `remedyd test` files beside them (*.test.yaml, *.test.yml; subdirectories such
    as rules/tests/ are not read either)."""
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")
                                and not p.stem.endswith(".test")))
        else:
            found.append(path)
    return found


NO_RULES = "no rules (write `rules: []` for a file that has none on purpose)"


def load_file(path: Path) -> tuple[list[LoadedRule], list[RuleError]]:
    """Parse one file into its valid rules and every problem found in it.

    A file that parses to no rules at all (empty, only comments, a bare `rules:`) is
    an error: that is what a truncated or half-written file looks like, and loading
    it would silently switch remediation off. `rules: []` says "none" on purpose.
    """
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return [], [RuleError(name, f"cannot read: {exc.strerror or exc}")]
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [RuleError(name, f"{where}invalid YAML: {problem}")]
    if data is not None and not isinstance(data, dict):
        return [], [RuleError(name, "the top level must be a mapping with a `rules:` list")]
    if not data or data.get("rules") is None:
        return [], [RuleError(name, NO_RULES)]
    try:
        document = RuleFile.model_validate(data)
    except ValidationError as exc:
        return [], [RuleError(name, _describe(exc))]
    return _load_rules(name, document.rules, _rule_lines(node))


def _load_rules(name: str, raws: list[Any],
                lines: list[int]) -> tuple[list[LoadedRule], list[RuleError]]:
    loaded: list[LoadedRule] = []
    errors: list[RuleError] = []
    seen: set[str] = set()
    for index, raw in enumerate(raws):
        line = lines[index] if index < len(lines) else 0
        label = raw.get("name") if isinstance(raw, dict) else None
        rule_name = str(label) if label else f"#{index + 1}"
        try:
            rule = Rule.model_validate(raw)
        except ValidationError as exc:
            errors.append(RuleError(f"{name}:{line}", _describe(exc), rule_name))
            continue
        if rule.name in seen:
            errors.append(RuleError(f"{name}:{line}", "duplicate rule name", rule.name))
            continue
        seen.add(rule.name)
        loaded.append(LoadedRule(rule=rule, file=name, line=line))
    return loaded, errors


def _rule_lines(node: yaml.Node | None) -> list[int]:
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if getattr(key, "value", None) == "rules" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _describe(exc: ValidationError) -> str:
    return "; ".join(describe_all(exc))
