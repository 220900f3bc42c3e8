"""Action parameters as they may be audited, logged or served on /api: a URL keeps its
scheme, host and path, never its credentials.

An http(s) URL loses its userinfo and its query values (tokens ride there). Any other
scheme is a notification service's URL (Apprise's slack://, pagerduty://, mailto://...),
whose host and path are often the tokens themselves: only the scheme is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparseable url>"
    if parts.scheme not in ("http", "https"):
        return f"{parts.scheme}://***"
    netloc = ("***@" if parts.username or parts.password else "") + host + port
    query = "&".join(f"{pair.split('=', 1)[0]}=***" for pair in parts.query.split("&")
                     if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def redact(value: Any) -> Any:
    """`value` (parameters: mappings, lists, strings) with every URL in it redacted."""
    if isinstance(value, str):
        head, sep, rest = value.partition("://")
        if not sep or not head or " " in head:
            return value
        # Apprise's "tag1,tag2=url" form keeps its tags.
        tags, eq, scheme = head.rpartition("=")
        return (tags + eq if eq else "") + redact_url(f"{scheme}://{rest}")
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value
