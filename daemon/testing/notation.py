"""promtool's expanding notation for a series' values: `1 2 3`, `a+bxn`, `a-bxn`, `axn`,
`_`, `_xn`, `stale`, NaN and Inf.

As promtool reads it: `a+bxn` is a and then n further values, each b more than the one
before (added up step by step, as Prometheus does, not a + i*b); `axn` is a n+1 times;
`_xn` is n missing samples (a missing sample cannot increment).
"""

from __future__ import annotations

import enum
import math
import re


class Gap(enum.Enum):
    MISSING = "_"
    STALE = "stale"


Sample = float | Gap

# PromQL's number literals: decimal (with exponent), hexadecimal, Inf and NaN.
_NUMBER = (r"(?:0[xX][0-9a-fA-F]+|(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
           r"|[iI][nN][fF]|[nN][aA][nN])")
_VALUE = re.compile(rf"[+-]?{_NUMBER}")
_EXPANSION = re.compile(rf"(?P<a>[+-]?{_NUMBER})(?:(?P<sign>[+-])(?P<b>{_NUMBER}))?"
                        r"x(?P<n>[0-9]+)")
_MISSING_TIMES = re.compile(r"_x(?P<n>[0-9]+)")
# More samples than any test needs: a typo such as `1x1000000000` fails instead of
# filling the memory.
MAX_SAMPLES = 1_000_000


class NotationError(ValueError):
    """A `values` string promtool would not read either."""


def number(text: str) -> float:
    """A PromQL number literal's value."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body[:2].lower() == "0x":
        return sign * float(int(body, 16))
    if body.lower() == "inf":
        return sign * math.inf
    return sign * float(body)  # float() reads NaN and exponents as PromQL does


def expand(values: str) -> list[Sample]:
    """The samples a `values` string stands for, in order."""
    samples: list[Sample] = []
    for position, token in enumerate(values.split(), start=1):
        samples.extend(_token(token, position))
        if len(samples) > MAX_SAMPLES:
            raise NotationError(f"more than {MAX_SAMPLES:,} samples")
    return samples


def _token(token: str, position: int) -> list[Sample]:
    if token == "_":
        return [Gap.MISSING]
    if token == "stale":
        return [Gap.STALE]
    if _VALUE.fullmatch(token):
        return [number(token)]
    if match := _MISSING_TIMES.fullmatch(token):
        return [Gap.MISSING] * _count(match.group("n"), token)
    if match := _EXPANSION.fullmatch(token):
        value = number(match.group("a"))
        step = 0.0
        if match.group("b") is not None:
            step = number(match.group("b")) * (-1.0 if match.group("sign") == "-" else 1.0)
        out: list[Sample] = []
        for _ in range(_count(match.group("n"), token) + 1):
            out.append(value)
            value += step
        return out
    raise NotationError(
        f"{token!r} (value {position}) is not a number, `_`, `stale`, `_xN`, `axN`, "
        "`a+bxN` or `a-bxN` (e.g. '1 1 0', '0+10x5', '1x3 _x2 stale')")


def _count(text: str, token: str) -> int:
    count = int(text)
    if count > MAX_SAMPLES:
        raise NotationError(f"{token!r}: more than {MAX_SAMPLES:,} samples")
    return count


def render(samples: list[Sample]) -> str:
    """Samples back as a plain `values` string (for messages)."""
    return " ".join(s.value if isinstance(s, Gap) else f"{s:g}" for s in samples)
