"""Notifications: always on; they need nothing but an outbound HTTP session."""

from __future__ import annotations

from daemon.actions.notify import Webhook
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch


class NotifyIntegration(Integration):
    name = "notify"
    action_names = ("notify.webhook",)

    def enabled(self) -> Switch:
        url = self.settings.notify.webhook_url
        return Switch(True, f"notify.webhook posts to {url} by default" if url else
                      "notify.webhook has no default url ([notify] webhook_url); rules must "
                      "name one")

    def build(self, ctx: BuildContext) -> Plugged:
        return Plugged(actions=[Webhook(ctx.http, self.settings.notify.webhook_url)])
