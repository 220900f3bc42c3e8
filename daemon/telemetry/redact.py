"""Secrets out of everything the daemon says: logs, audit records, API answers.

Two rules, applied by every writer: the password of a URL's userinfo is masked wherever
a URL appears in text (https://user:pass@host -> https://user:***@host), and every
secret the configuration holds (registered once from the settings: API and webhook
tokens, basic-auth passwords, HMAC secrets, header values) is replaced by ***. The
second catches what the first cannot: a token echoed in an error, a header in a repr.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from daemon.settings import Settings

MASK = "***"
# scheme://user:password@ — the password may hold anything but '@', '/' and blanks.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@")
# Shorter strings would mask ordinary words; the settings refuse tokens that short.
MIN_SECRET = 6

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None

T = TypeVar("T")


def register(values: Iterable[str | None]) -> None:
    """Remember secrets to mask from now on (idempotent)."""
    global _pattern
    fresh = {v for v in values if v and len(v) >= MIN_SECRET} - _secrets
    if not fresh:
        return
    _secrets.update(fresh)
    # Longest first, so a secret containing another is masked whole.
    _pattern = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len,
                                                                 reverse=True)))


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold, as it could appear in text."""
    found: list[str | None] = [settings.server.api_token]
    hooks = settings.webhooks
    found += [hooks.alertmanager_token, hooks.alertmanager_password]
    found += [generic.secret for generic in hooks.generic.values()]
    for headers in (settings.prometheus.headers, settings.alertmanager.headers):
        for value in headers.values():
            found.append(value)
            # "Bearer abc", "Basic xyz": the credential alone may be echoed too.
            _, _, credential = value.partition(" ")
            if credential:
                found.append(credential.strip())
    for url in _urls(settings):
        found.append(_password(url))
    return [s for s in found if s]


def _urls(settings: Settings) -> list[str]:
    urls = [settings.prometheus.url, settings.alertmanager.url, settings.notify.webhook_url]
    return [u for u in urls if u]


def _password(url: str) -> str | None:
    match = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@", url)
    return match.group(1) if match else None


def scrub(text: str) -> str:
    """`text` with URL passwords and registered secrets masked."""
    if "@" in text:
        text = _USERINFO.sub(rf"\g<head>:{MASK}@", text)
    if _pattern is not None:
        text = _pattern.sub(MASK, text)
    return text


def scrub_value(value: T) -> T:
    """A JSON-shaped value (dicts, lists, strings) with every string scrubbed; keys too."""
    return _scrub(value)  # type: ignore[no-any-return]


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(k) if isinstance(k, str) else k: _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value


def clear() -> None:
    """Forget every registered secret (tests running several configurations)."""
    global _pattern
    _secrets.clear()
    _pattern = None
