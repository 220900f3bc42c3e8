"""Inbound webhooks (Alertmanager's, generic signed ones) as a source served on remedyd's
HTTP server, and Alertmanager's silences as a guard before acting.

Two integrations, since either is useful without the other: silences stop actions on
KPI or Docker rules too, and webhooks need no Alertmanager API to be reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from daemon.integrations.base import BuildContext, Integration, Plugged, Switch

if TYPE_CHECKING:
    from daemon.http.webhooks import Receive


class WebhooksIntegration(Integration):
    name = "webhooks"
    event_sources = ("webhook",)

    def enabled(self) -> Switch:
        hooks = self.settings.webhooks
        served = []
        unauthenticated = False
        if hooks.alertmanager:
            auth = " or ".join(
                (["bearer token"] if hooks.alertmanager_token is not None else [])
                + (["basic auth"] if hooks.alertmanager_username is not None else []))
            unauthenticated = not auth
            served.append("POST /webhooks/alertmanager (" + (
                auth or "WITHOUT authentication: set [webhooks] alertmanager_token or "
                "alertmanager_username/password") + ")")
        if hooks.generic:
            served.append("POST /webhooks/generic/{" + ",".join(sorted(hooks.generic)) + "}")
        if not served:
            return Switch(False, "webhooks off ([webhooks] alertmanager = false, no "
                          "[webhooks.generic.<name>])")
        return Switch(True, "webhooks on: " + "; ".join(served), surprising=unauthenticated)

    def build(self, ctx: BuildContext) -> Plugged:
        from aiohttp import web

        from daemon.http.webhook_auth import Credentials
        from daemon.http.webhooks import GenericHook, alertmanager_route, generic_route
        from daemon.http.webhooks_api import alertmanager_api, generic_api
        from daemon.sources.webhooks import AlertIntake, GenericIntake, WebhookSource

        hooks = self.settings.webhooks
        alerts = generic = None
        routes: list[web.AbstractRouteDef] = []
        api: dict[str, dict[str, Any]] = {}
        via = self._via_leader(ctx)
        if hooks.alertmanager:
            alerts = AlertIntake(ctx.emit, ctx.metrics)
            credentials = Credentials(hooks.alertmanager_token, hooks.alertmanager_username,
                                      hooks.alertmanager_password)
            routes.append(alertmanager_route(alerts, credentials, hooks.max_body_bytes,
                                             ctx.metrics, via=via))
            api.update(alertmanager_api())
        if hooks.generic:
            generic = GenericIntake(ctx.emit, list(hooks.generic))
            signed = {name: GenericHook(hook.secret, hook.replay_window)
                      for name, hook in hooks.generic.items()}
            routes.append(generic_route(generic, signed, hooks.max_body_bytes, ctx.metrics,
                                        via=via))
            api.update(generic_api())
        return Plugged(sources=[WebhookSource(alerts, generic)], routes=routes, api=api)

    def _via_leader(self, ctx: BuildContext) -> Callable[[Receive], Receive]:
        """With leader election, a follower hands each webhook to the leader, which alone
        acts on what it reports; one replica alone takes it as it comes."""
        leadership = ctx.provided.get("kubernetes.leadership")
        max_body = self.settings.webhooks.max_body_bytes

        def via(handler: Receive) -> Receive:
            if leadership is None:
                return handler
            from daemon.http.handover import handing_over

            return handing_over(handler, leadership, ctx.http, max_body, ctx.metrics)

        return via


class SilencesIntegration(Integration):
    name = "alertmanager"

    def enabled(self) -> Switch:
        url = self.settings.alertmanager.url
        if not url:
            return Switch(False, "Alertmanager silences not consulted ([alertmanager] url "
                          "unset)")
        return Switch(True, f"Alertmanager silences from {url} stop actions on what they "
                      "match (rules with silences: true)")

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.silences import SilenceGuard
        from daemon.clients.alertmanager import AlertmanagerClient

        am = self.settings.alertmanager
        assert am.url is not None
        client = AlertmanagerClient(ctx.http, am.url, am.headers, am.timeout)
        # Ahead of dry_run: a dry run shows the silence that would have stopped it.
        return Plugged(guards=[(SilenceGuard(client, ctx.metrics), "dry_run")])
