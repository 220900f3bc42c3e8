"""`verify.query` asked of Prometheus: the samples an instant query returns, NaN ones left
out (a NaN is no sign of recovery); any PrometheusError means the answer could not be
read, which the verification counts towards `unknown`."""

from __future__ import annotations

from daemon.clients.prometheus import PrometheusClient, Sample


class PrometheusSamples:
    """daemon.actions.verify.PromQuery over the daemon's Prometheus client."""

    def __init__(self, client: PrometheusClient) -> None:
        self.client = client

    async def query(self, q: str) -> list[Sample]:
        result = await self.client.query(q)
        return [sample for sample in result.samples if not sample.is_nan]
