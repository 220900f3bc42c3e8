"""Series in Prometheus's notation: `metric{label="value", ...}`, `{label="value"}`, `metric`."""

from __future__ import annotations

import re

_METRIC = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}


class SeriesError(ValueError):
    """Not a series selector as promtool's `series:` takes it."""


def parse_series(text: str) -> dict[str, str]:
    """The label set (with `__name__` for a metric name) of a series."""
    reader = _Reader(text.strip())
    labels: dict[str, str] = {}
    if name := reader.take(_METRIC):
        labels["__name__"] = name
    reader.skip_space()
    if reader.at_end():
        if not labels:
            raise SeriesError(f"{text!r}: empty series (write e.g. 'up{{job=\"api\"}}')")
        return labels
    reader.expect("{")
    while True:
        reader.skip_space()
        if reader.peek() == "}":
            reader.pos += 1
            break
        label = reader.take(_LABEL)
        if not label:
            raise reader.error("a label name")
        reader.skip_space()
        reader.expect("=")
        reader.skip_space()
        value = reader.quoted()
        if label in labels:
            raise SeriesError(f"{text!r}: label {label!r} given twice")
        labels[label] = value
        reader.skip_space()
        if reader.peek() == ",":
            reader.pos += 1
            continue
        reader.skip_space()
        reader.expect("}")
        break
    reader.skip_space()
    if not reader.at_end():
        raise reader.error("the end after '}'")
    return labels


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if not self.at_end() else ""

    def skip_space(self) -> None:
        while self.peek().isspace():
            self.pos += 1

    def take(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self.text, self.pos)
        if match is None:
            return ""
        self.pos = match.end()
        return match.group()

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise self.error(repr(char))
        self.pos += 1

    def quoted(self) -> str:
        quote = self.peek()
        if quote not in ('"', "'", "`"):
            raise self.error("a quoted label value")
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char == "\\" and quote != "`" and not self.at_end():
                escaped = self.text[self.pos]
                self.pos += 1
                out.append(_ESCAPES.get(escaped, "\\" + escaped))
                continue
            out.append(char)
        raise SeriesError(f"{self.text!r}: unterminated label value")

    def error(self, wanted: str) -> SeriesError:
        found = repr(self.peek()) if not self.at_end() else "the end"
        return SeriesError(f"{self.text!r}: expected {wanted} at column {self.pos + 1}, "
                           f"found {found}")
