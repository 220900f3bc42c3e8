"""`{{ $labels.name }}` in a rule's `target:`, filled from a series' or an alert's labels.

Prometheus's own spelling, so a rule reads like the alerting rule it sits beside; only
label lookups, no template language: a target is a name, not a program.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_LABEL = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANY_BRACES = re.compile(r"\{\{|\}\}")


class TemplateError(ValueError):
    """A template uses something other than `{{ $labels.name }}`."""


def check(template: str) -> None:
    """Raise TemplateError unless every `{{ ... }}` is a label lookup."""
    if _ANY_BRACES.search(_LABEL.sub("", template)):
        raise TemplateError(f"{template!r}: only {{{{ $labels.<name> }}}} may appear in braces")


def render(template: str, labels: Mapping[str, str]) -> str | None:
    """The template with its labels filled in; None when a label it names is missing
    or empty (no target is guessed)."""
    missing = False

    def value(match: re.Match[str]) -> str:
        nonlocal missing
        found = labels.get(match.group(1), "")
        missing = missing or not found
        return found

    rendered = _LABEL.sub(value, template)
    return None if missing else rendered
