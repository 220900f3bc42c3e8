"""Probes: HTTP(S) and TCP checks of the `[[probes]]` entries; on when there is one.
apscheduler is imported only then."""

from __future__ import annotations

from daemon.integrations.base import BuildContext, Integration, Plugged, Switch


class ProbesIntegration(Integration):
    name = "probes"
    event_sources = ("probe",)

    def enabled(self) -> Switch:
        probes = self.settings.probes
        if not probes:
            return Switch(False, "probe source off: no [[probes]] configured")
        return Switch(True, f"probe source on: {len(probes)} probe(s): "
                      + ", ".join(probe.name for probe in probes))

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.clients.probing import HttpProber
        from daemon.sources.probes import ProbeSource

        http = HttpProber()
        ctx.stack.push_async_callback(http.close)
        return Plugged(sources=[ProbeSource(self.settings.probes, ctx.emit, ctx.metrics, http)])
