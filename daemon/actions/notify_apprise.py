"""notify.apprise: the incident to any service Apprise speaks (Slack, Teams, PagerDuty,
e-mail, ntfy...), by URL. Apprise is imported on the first send, so a daemon whose rules
never use it does not load it.

Apprise's `notify()` blocks: it runs in a thread, bounded by the outbox's (or the
action's) timeout. A URL may carry Apprise tags as in its text config, `tag1,tag2=url`;
a rule's `tag` then picks the URLs to notify. What is recorded of a URL is Apprise's
own privacy form (tokens and passwords masked).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from daemon.actions.notify import Notification
from daemon.actions.notify_text import (
    DEFAULT_BODY,
    DEFAULT_TITLE,
    about,
    key_of,
    render,
    severity,
)
from daemon.actions.outbox import Outbox
from daemon.actions.params import AppriseParams
from daemon.core.decisions import Decision
from daemon.core.errors import PermanentError, TemporaryError
from daemon.core.redact import redact_url

log = logging.getLogger("remedyd.notify.apprise")

# Security severities and the usual label values, as Apprise's message types.
_TYPES = {"critical": "failure", "high": "failure", "error": "failure",
          "medium": "warning", "warning": "warning"}


def split_tags(entry: str) -> tuple[list[str], str]:
    """`tag1,tag2=scheme://...` -> (tags, url); a plain URL has no tags."""
    head, sep, rest = entry.partition("=")
    if sep and "://" not in head and "://" in rest:
        return [t.strip() for t in head.split(",") if t.strip()], rest.strip()
    return [], entry


def shown(url: str) -> str:
    """The URL in Apprise's privacy form, or with its userinfo and query cut."""
    import apprise

    plugin = apprise.Apprise.instantiate(url)
    return str(plugin.url(privacy=True)) if plugin else redact_url(url)  # type: ignore[no-untyped-call]


def _notify(payload: Mapping[str, Any], timeout: float) -> tuple[bool, list[str]]:
    import apprise

    # Apprise logs the URLs it posts to at debug and info, tokens and all.
    logging.getLogger("apprise").setLevel(logging.WARNING)

    sender = apprise.Apprise()
    added: list[str] = []
    for entry in payload["urls"]:
        tags, url = split_tags(str(entry))
        if sender.add(url, tag=tags or None):
            added.append(shown(url))
        else:
            # Said without the URL: its credentials would land in the log.
            log.error("notify.apprise: an unusable URL (scheme %s) was skipped",
                      url.partition("://")[0])
    if not added:
        raise PermanentError("notify.apprise: none of the URLs is one Apprise can use")
    tag = payload.get("tag") or apprise.common.MATCH_ALL_TAG
    ok = sender.notify(body=payload["body"], title=payload["title"], tag=tag,
                       notify_type=payload.get("type", "info"), timeout=timeout)
    return bool(ok), added


class AppriseNotify(Notification):
    name = "notify.apprise"
    Params = AppriseParams

    def __init__(self, outbox: Outbox | None = None, timeout: float = 30.0) -> None:
        self.outbox = outbox
        self.timeout = timeout
        if outbox is not None:
            outbox.register(self.name, self.deliver)

    async def run(self, decision: Decision, params: BaseModel) -> dict[str, Any]:
        assert isinstance(params, AppriseParams)
        payload = {"urls": list(params.urls), "tag": list(params.tag),
                   "title": render(params.title or DEFAULT_TITLE, decision),
                   "body": render(params.body or DEFAULT_BODY, decision),
                   "type": _TYPES.get(severity(decision).lower(), "info")}
        key = key_of(decision, self.name, params, self.parse)
        if self.outbox is None:
            return await self.deliver(payload, key)
        return await self.outbox.send(key, self.name, payload, about(decision))

    async def deliver(self, payload: Mapping[str, Any], key: str) -> dict[str, Any]:
        # The thread cannot be cancelled: Apprise's own timeout ends its requests.
        ok, urls = await asyncio.to_thread(_notify, payload, self.timeout)
        if not ok:
            raise TemporaryError("notify.apprise: a service did not take the notification "
                                 "(" + ", ".join(urls) + ")")
        return {"urls": urls, "title": payload["title"]}
