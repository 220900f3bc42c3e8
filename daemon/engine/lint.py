"""Warnings for rules that load but cannot work with what this configuration enables.

A pure function of the rule set and of what is available, so the daemon (from what it
built) and `remedyd check` (from the configuration) say the same thing; a new
integration only adds its source and action names to `Available`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from daemon.core.rules import Rule
from daemon.engine.ruleset import RuleSet, steps_of

# The setting that turns an integration on, named in warnings so the fix is obvious.
SWITCHES = {"docker": "[docker] enabled", "kubernetes": "[kubernetes] enabled",
            "kpi": "[prometheus] url", "probe": "[[probes]]",
            "webhook": "[webhooks] alertmanager or [webhooks.generic.<name>]"}


@dataclass(frozen=True, slots=True)
class Available:
    sources: frozenset[str]
    actions: frozenset[str]
    # [notify] webhook_url: where notify.webhook posts when the rule names no url.
    webhook_url: str | None = None
    # [prometheus] url is set: `unless:` gates and `verify.query` can be asked.
    prometheus: bool = False
    # [alertmanager] url is set: where notify.alertmanager posts when the rule names none.
    alertmanager: bool = False


@dataclass(frozen=True, slots=True)
class RuleWarning:
    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: rule {self.rule!r}: warning: {self.message}"


def lint(ruleset: RuleSet, available: Available) -> list[RuleWarning]:
    """Every reason a loaded rule cannot fire or act here, in file order."""
    return [RuleWarning(c.file, c.line, c.rule.name, message)
            for c in ruleset.rules for message in _problems(c.rule, available)]


def summarise(warnings: list[RuleWarning], keep: int = 3) -> list[str]:
    """The warnings as log lines: one each, except a message more than `keep` rules share,
    which is one line naming the first of them. The bundled rules on bundled defaults (no
    webhook url) would otherwise open the log with dozens of lines saying one thing."""
    by_message: dict[str, list[RuleWarning]] = {}
    for warning in warnings:
        by_message.setdefault(warning.message, []).append(warning)
    lines = []
    for message, group in by_message.items():
        if len(group) <= keep:
            lines += [str(warning) for warning in group]
            continue
        names = ", ".join(repr(warning.rule) for warning in group[:keep])
        lines.append(f"{len(group)} rules ({names} and {len(group) - keep} more): warning: "
                     f"{message} (`remedyd check` lists each with its file and line)")
    return lines


def _problems(rule: Rule, available: Available) -> Iterator[str]:
    if rule.source not in available.sources:
        yield (f"source {rule.source!r} is not enabled in this configuration"
               f"{_switch(rule.source)}; the rule never fires")
    if rule.unless and not available.prometheus:
        yield ("unless: needs [prometheus] url; without it these gates are not checked "
               "and the rule acts as if none blocked it")
    for label, spec in steps_of(rule):
        if spec.verify is not None and spec.verify.query and not available.prometheus:
            yield (f"{label}: {spec.name}: verify.query needs [prometheus] url; without it "
                   "the verification comes out unknown and the ladder stops there")
        if spec.name not in available.actions:
            integration = spec.name.partition(".")[0]
            yield (f"action {spec.name} is not available: its integration is off"
                   f"{_switch(integration)}")
        elif spec.name == "notify.webhook" and not spec.params.get("url") and (
                not available.webhook_url):
            yield ("notify.webhook has no url and [notify] webhook_url is not set; "
                   "the notification cannot be sent")
        elif spec.name == "notify.alertmanager" and not spec.params.get("url") and (
                not available.alertmanager):
            yield ("notify.alertmanager has no url and [alertmanager] url is not set; "
                   "the alert cannot be sent")


def _switch(integration: str) -> str:
    switch = SWITCHES.get(integration)
    return f" ({switch})" if switch else ""
