"""The one place a pydantic ValidationError becomes messages that name the dotted key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

# pydantic_core.ErrorDetails, read as a mapping: that keeps pydantic_core out of daemon's
# imports (tests/test_layering.py lists every third-party package daemon uses).
ErrorDetails = Mapping[str, Any]


def error_path(error: ErrorDetails) -> tuple[str, ...]:
    """The error's location as field names, without pydantic's validator-function steps."""
    return tuple(str(p) for p in error["loc"] if not str(p).startswith("function-"))


def describe(error: ErrorDetails, *, empty_key: str = "", show_input: bool = False,
             name_unknown_keys: bool = False) -> str:
    """`key: message` for one error.

    `empty_key` stands in for an error on the whole value; `show_input` adds what was
    given when the message does not already quote it; `name_unknown_keys` words an
    extra key as `unknown key 'a.b'`, which reads better where keys are typed by hand.
    """
    key = ".".join(error_path(error)) or empty_key
    if name_unknown_keys and error["type"] == "extra_forbidden":
        return f"unknown key {key!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    if show_input:
        shown = repr(error.get("input"))
        if shown not in message:
            message += f" (got {shown})"
    return f"{key}: {message}" if key else message


def describe_all(exc: ValidationError, *, empty_key: str = "", show_input: bool = False,
                 name_unknown_keys: bool = False) -> list[str]:
    """One line per error, in pydantic's order."""
    return [describe(error, empty_key=empty_key, show_input=show_input,
                     name_unknown_keys=name_unknown_keys) for error in exc.errors()]
