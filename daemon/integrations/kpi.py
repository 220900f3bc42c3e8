"""KPIs: `source: kpi` rules polled against Prometheus, and the PromQL gates before acting
(`unless:`, the fresh re-check of a KPI breach). On when [prometheus] url is set;
apscheduler is imported only then."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from daemon.audit.log import AuditUnavailable
from daemon.clients.prometheus import peer_of
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch

log = logging.getLogger("remedyd.kpi")


class KpiIntegration(Integration):
    name = "kpi"
    event_sources = ("kpi",)

    def enabled(self) -> Switch:
        url = self.settings.prometheus.url
        if not url:
            return Switch(False, "kpi source off ([prometheus] url is not set): source: kpi "
                          "rules never fire and unless: gates are not checked")
        # No user info in the log line: credentials may sit in the URL.
        return Switch(True, f"kpi source on: Prometheus at {peer_of(url)}")

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.gates import RecheckGuard, UnlessGuard
        from daemon.clients.prometheus import PrometheusClient
        from daemon.sources.kpi import KpiSource

        prometheus = self.settings.prometheus
        assert prometheus.url is not None
        client = PrometheusClient(ctx.http, prometheus.url, prometheus.headers,
                                  prometheus.timeout)
        source = KpiSource(client, ctx.emit, ctx.metrics, _auditor(ctx), prometheus.interval)
        return Plugged(sources=[source],
                       guards=[(UnlessGuard(client), "preflight"),
                               (RecheckGuard(client), "preflight")],
                       on_rules=[lambda ruleset: source.set_rules(
                           compiled.rule for compiled in ruleset.rules)])


def _auditor(ctx: BuildContext) -> Callable[[str, dict[str, Any]], None]:
    """Audit records from outside the executor, failing as the daemon's own do: a write
    that cannot be made marks the log unwritable (actions are refused) and is logged."""
    executor = ctx.executor

    def append(kind: str, fields: dict[str, Any]) -> None:
        if executor is None or not executor.audit_gate.writable:
            return
        try:
            executor.audit.append(kind, fields)
        except (AuditUnavailable, RuntimeError) as exc:
            executor.audit_gate.failed()
            log.error("could not audit %s %s: %s", kind, fields, exc)

    return append
