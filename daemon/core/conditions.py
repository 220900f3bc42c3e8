"""CEL conditions: compiled once at load, evaluated against one shared context per event.

`import cel` also imports the package's command-line front end (about 30 MB of
resident memory); remedyd needs only the compiled extension, so it loads that
module directly and falls back to the package import when the layout differs.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
from functools import cache
from types import ModuleType
from typing import Any


class ConditionError(Exception):
    """A condition failed to compile or evaluate; the message is CEL's own."""


@cache
def cel_module() -> ModuleType:
    spec = importlib.util.find_spec("cel")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        for entry in sorted(os.listdir(location)):
            if entry.startswith("cel.") and entry.endswith(
                tuple(importlib.machinery.EXTENSION_SUFFIXES)
            ):
                path = os.path.join(location, entry)
                loader = importlib.machinery.ExtensionFileLoader("cel.cel", path)
                ext_spec = importlib.util.spec_from_file_location("cel.cel", path, loader=loader)
                if ext_spec is None:
                    break
                module = importlib.util.module_from_spec(ext_spec)
                loader.exec_module(module)
                return module
    import cel  # pragma: no cover - only when the wheel's layout changes

    return cel


def make_context(variables: dict[str, Any]) -> Any:
    """One context per event, shared by every rule it is evaluated against."""
    return cel_module().Context(variables)


class Condition:
    __slots__ = ("_program", "source", "variables")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel_module().compile(source)
        except (ValueError, RuntimeError) as exc:
            raise ConditionError(_first_line_and_caret(str(exc))) from None
        # The iteration variable of a macro (`x` in `list.all(x, x > 0)`) is bound by
        # the macro, but the compiled program lists it among its variables.
        self.variables: frozenset[str] = frozenset(self._program.variables()) - frozenset(
            _MACRO_VARIABLE.findall(source))

    def evaluate(self, context: Any) -> bool:
        try:
            result = self._program.execute(context)
        except Exception as exc:
            # A missing field is the common case: a rule written for an attribute
            # that this event does not carry simply does not match it.
            raise ConditionError(f"{type(exc).__name__}: {exc}") from None
        if not isinstance(result, bool):
            raise ConditionError(f"condition returned {type(result).__name__}, not bool")
        return result


def _first_line_and_caret(message: str) -> str:
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


_MACRO_VARIABLE = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,")
_ATTRIBUTES = re.compile(r"\bevent\.attributes\b")
_EVENT_AS_A_WHOLE = re.compile(r"\bevent\b(?!\s*\.\s*[A-Za-z_])")
_ATTRIBUTE_KEY = re.compile(r"""\bevent\.attributes\.([A-Za-z_][A-Za-z0-9_]*)\b(?!\s*\()"""
                           r"""|\bevent\.attributes\[\s*"([^"\\]+)"\s*\]"""
                           # `"k" in event.attributes`, not `"k" in event.attributes.labels`
                           r"""|"([^"\\]+)"\s+in\s+event\.attributes\b(?!\s*[.\[])""")


def attribute_keys(source: str) -> frozenset[str] | None:
    """The event attributes a condition names, or None if it may need all of them.

    Literal uses only: `event.attributes.k`, `event.attributes["k"]`,
    `"k" in event.attributes`. Any other use of the map (a macro, size(), a
    computed key) means the whole map.
    """
    if _EVENT_AS_A_WHOLE.search(source):
        return None  # `event["attributes"]`, `size(event)`: no telling what it reads
    keys = [next(g for g in m.groups() if g) for m in _ATTRIBUTE_KEY.finditer(source)]
    return frozenset(keys) if len(keys) == len(_ATTRIBUTES.findall(source)) else None


def required_actions(source: str) -> frozenset[str] | None:
    """The event actions a condition can only match, if its top level says so.

    `event.action == "x" && ...` can only match action x: the engine then
    evaluates the rule for those events alone. None means "could match any".
    """
    return required_values(source, "action")


def required_kinds(source: str) -> frozenset[str] | None:
    """The event kinds a condition can only match (`event.kind == "container" && ...`)."""
    return required_values(source, "kind")


@cache
def _equality(field: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    return (re.compile(rf'^\(?\s*event\.{field}\s*==\s*"([^"\\]+)"\s*\)?$'),
            re.compile(rf"^\(?\s*event\.{field}\s+in\s+\[([^\]]*)\]\s*\)?$"))


def required_values(source: str, field: str) -> frozenset[str] | None:
    """The values of `event.<field>` a condition can only match, or None for any.

    Read off a top-level conjunct `event.<field> == "x"` or `event.<field> in [...]`
    outside any `||`.
    """
    conjuncts = _split_top_level(source, "&&")
    if conjuncts is None:
        return None
    equals, within = _equality(field)
    for conjunct in conjuncts:
        if _split_top_level(conjunct, "||") != [conjunct]:
            continue
        text = conjunct.strip()
        if match := equals.match(text):
            return frozenset([match.group(1)])
        if match := within.match(text):
            items = [item.strip() for item in match.group(1).split(",") if item.strip()]
            if items and all(len(i) >= 2 and i[0] == i[-1] == '"' for i in items):
                return frozenset(i[1:-1] for i in items)
    return None


def _split_top_level(source: str, operator: str) -> list[str] | None:
    """Split on an operator outside brackets and strings; None if the text is unbalanced."""
    parts, depth, start, quote, i = [], 0, 0, "", 0
    while i < len(source):
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and source.startswith(operator, i):
            parts.append(source[start:i])
            start = i + len(operator)
            i += len(operator) - 1
        i += 1
    if depth != 0 or quote:
        return None
    parts.append(source[start:])
    return parts
