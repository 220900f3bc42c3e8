"""Notifications: always on; they need nothing but an outbound HTTP session. Apprise is
imported only when a rule's notify.apprise sends something.

Every notification goes through the outbox (a directory beside the audit log), whose
loop resends what could not be delivered, also after a restart."""

from __future__ import annotations

from typing import Any

from daemon.actions.notify import Webhook
from daemon.actions.notify_alertmanager import AlertmanagerNotify
from daemon.actions.notify_apprise import AppriseNotify
from daemon.actions.outbox import Outbox, OutboxPolicy
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch


class _Refresh:
    """The firing Alertmanager alerts' refresh, run by the daemon as a source is."""

    def __init__(self, action: AlertmanagerNotify) -> None:
        self.action = action
        self.name = action.source_name

    async def run(self) -> None:
        await self.action.run_refresh()

    def status(self) -> dict[str, Any]:
        return self.action.status()


class NotifyIntegration(Integration):
    name = "notify"
    action_names = ("notify.webhook", "notify.apprise", "notify.alertmanager")

    def enabled(self) -> Switch:
        url = self.settings.notify.webhook_url
        return Switch(True, f"notify.webhook posts to {url} by default" if url else
                      "notify.webhook has no default url ([notify] webhook_url); rules must "
                      "name one")

    def build(self, ctx: BuildContext) -> Plugged:
        notify, safety = self.settings.notify, self.settings.safety
        directory = notify.outbox or self.settings.audit.path.parent / "outbox"
        audit = ctx.executor.audit if ctx.executor is not None else None
        outbox = Outbox(directory, audit, OutboxPolicy(
            backoff=notify.outbox_backoff, backoff_max=notify.outbox_backoff_max,
            max_age=notify.outbox_max_age, timeout=safety.action_timeout))
        server = self.settings.server
        alertmanager = AlertmanagerNotify(
            ctx.http, self.settings.alertmanager.url, outbox,
            generator=f"http://{server.listen}/api/v1/audit")
        return Plugged(actions=[Webhook(ctx.http, notify.webhook_url, outbox),
                                AppriseNotify(outbox, timeout=safety.action_timeout),
                                alertmanager],
                       sources=[outbox, _Refresh(alertmanager)],
                       on_state=[alertmanager.on_state])
