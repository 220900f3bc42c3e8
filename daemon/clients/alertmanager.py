"""Alertmanager's API v2, the part remedyd reads: its silences (GET /api/v2/silences).

A silence's regex matchers are compiled here as Alertmanager compiles them: fully
anchored (`^(?:...)$`). Alertmanager speaks RE2; Python's `re` reads the common
subset the same way (with re.ASCII, as RE2's \\d, \\w and \\s are ASCII). A pattern
using RE2-only syntax (Unicode classes \\p, POSIX classes [[:alpha:]], \\z, \\Q...\\E)
cannot be judged here: it is kept as `unreadable`, and the guard treats such a silence
as one it cannot rule out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from daemon.clients.http import HttpClient, HttpError
from daemon.core import rfc3339

_RE2_ONLY = re.compile(r"\\[pPzCQE]|\[:\^?[a-z]+:\]")


class AlertmanagerError(Exception):
    """Alertmanager could not be reached or answered something else than silences."""


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    value: str
    is_regex: bool
    is_equal: bool
    pattern: re.Pattern[str] | None = None
    # Why the regex cannot be evaluated here (empty: it can).
    unreadable: str = ""

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A missing label is the empty string, as in Alertmanager.
        value = labels.get(self.name, "")
        if self.is_regex:
            found = self.pattern is not None and self.pattern.fullmatch(value) is not None
        else:
            found = value == self.value
        return found == self.is_equal


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    created_by: str
    comment: str
    starts_at: float
    ends_at: float
    matchers: tuple[Matcher, ...]

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    @property
    def unreadable(self) -> str:
        return next((m.unreadable for m in self.matchers if m.unreadable), "")

    def matches(self, labels: Mapping[str, str]) -> bool:
        return bool(self.matchers) and all(m.matches(labels) for m in self.matchers)


def _matcher(raw: Any) -> Matcher:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) \
            or not isinstance(raw.get("value"), str):
        raise ValueError(f"a matcher without a name and value: {raw!r:.80}")
    is_regex = raw.get("isRegex") is True
    # isEqual came with Alertmanager 0.22; before it every matcher was positive.
    is_equal = raw.get("isEqual", True) is not False
    value: str = raw["value"]
    if not is_regex:
        return Matcher(raw["name"], value, False, is_equal)
    if _RE2_ONLY.search(value):
        return Matcher(raw["name"], value, True, is_equal,
                       unreadable=f"RE2 syntax Python cannot evaluate in {value!r:.60}")
    try:
        pattern = re.compile(f"(?:{value})", re.ASCII)
    except (re.error, RecursionError, OverflowError) as exc:
        return Matcher(raw["name"], value, True, is_equal,
                       unreadable=f"regex {value!r:.60}: {exc}")
    return Matcher(raw["name"], value, True, is_equal, pattern)


def parse_silences(body: Any) -> list[Silence]:
    """The silences in a GET /api/v2/silences answer that are active or pending (a
    pending one may start before the cached list is read again); expired ones go."""
    if not isinstance(body, list):
        raise ValueError("expected a list of silences")
    silences = []
    for raw in body:
        if not isinstance(raw, dict):
            raise ValueError(f"expected a silence object, got {raw!r:.80}")
        state = (raw.get("status") or {}).get("state")
        if state == "expired":
            continue
        try:
            starts = rfc3339.parse(str(raw.get("startsAt", "")))
            ends = rfc3339.parse(str(raw.get("endsAt", "")))
        except ValueError as exc:
            raise ValueError(f"silence {raw.get('id')!r}: {exc}") from None
        matchers = raw.get("matchers")
        if not isinstance(matchers, list):
            raise ValueError(f"silence {raw.get('id')!r} has no matchers list")
        silences.append(Silence(str(raw.get("id", "")), str(raw.get("createdBy", "")),
                                str(raw.get("comment", "")), starts, ends,
                                tuple(_matcher(m) for m in matchers)))
    return silences


class AlertmanagerClient:
    def __init__(self, http: HttpClient, url: str, headers: Mapping[str, str],
                 timeout: float) -> None:
        self._http = http
        self.url = url.rstrip("/")
        self._headers = dict(headers)
        self._timeout = timeout

    async def silences(self) -> list[Silence]:
        """Active and pending silences; AlertmanagerError naming the peer otherwise."""
        where = f"{self.url}/api/v2/silences"
        try:
            async with self._http.session.get(
                    where, headers=self._headers,
                    timeout=aiohttp.ClientTimeout(total=self._timeout)) as response:
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:200]
                    raise AlertmanagerError(f"{where}: HTTP {response.status}: {text}")
                body = await response.json(content_type=None)
        except AlertmanagerError:
            raise
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, HttpError) as exc:
            raise AlertmanagerError(f"{where}: {type(exc).__name__}: {exc}") from exc
        try:
            return parse_silences(body)
        except ValueError as exc:
            raise AlertmanagerError(f"{where}: unexpected answer: {exc}") from None
