"""A follower hands the webhooks delivered to it to the leader.

With leader election on, only the leader acts on what every replica sees, and a webhook
is seen by the one replica a Service picked. The follower that got it passes the request
on, as it came (body and the credential or signature headers), to the address the leader
wrote into the Lease, and answers with the leader's answer: the sender is told what the
leader decided, a 401 included, and retries when that says so. The leader judges the
request as if it had come straight to it; a handed-over request is never handed on again.
Without a known leader address the follower answers 503 with Retry-After, so the sender's
retry may reach the leader through the Service.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiohttp import web

from daemon.actions.kube.leader_guard import Leadership as GuardLeadership
from daemon.clients.http import HttpClient, HttpError
from daemon.http.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER, Receive, read_limited
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.http.handover")

HANDED_OVER_BY = "X-Remedyd-Handed-Over-By"
PASSED_ON = ("Authorization", "Content-Type", TIMESTAMP_HEADER, SIGNATURE_HEADER)
PASSED_BACK = ("Content-Type", "Retry-After", "WWW-Authenticate")
TIMEOUT = 10.0
RETRY_AFTER = "1"


class Leadership(GuardLeadership, Protocol):
    @property
    def holder_address(self) -> str: ...


def _retry_later(message: str) -> web.Response:
    response = web.json_response({"error": message}, status=503)
    response.headers["Retry-After"] = RETRY_AFTER
    return response


def handing_over(handler: Receive, leadership: Leadership, http: HttpClient,
                 max_body: int, metrics: Metrics) -> Receive:
    """`handler` where this replica leads (or the request was handed over to it); else
    the leader's answer to the same request."""

    async def receive(request: web.Request) -> web.Response:
        if leadership.acting or HANDED_OVER_BY in request.headers:
            return await handler(request)
        me = leadership.identity
        address = leadership.holder_address
        if not address:
            metrics.webhook_handovers.labels("no_leader_address").inc()
            holder = leadership.holder
            if holder == me:
                who = "it holds the lease but could not renew it in time"
            elif holder:
                who = (f"{holder} holds the lease but wrote no address into it "
                       "([kubernetes.leader_election] advertise_url, or POD_IP)")
            else:
                who = "no replica holds the lease yet"
            return _retry_later(f"this replica ({me}) is not the leader and cannot hand the "
                                f"webhook over: {who}; retry")
        body = await read_limited(request, max_body)
        if isinstance(body, web.Response):
            return body
        headers = {name: request.headers[name] for name in PASSED_ON if name in request.headers}
        headers[HANDED_OVER_BY] = me
        url = address + request.rel_url.path_qs
        try:
            status, answer, answer_headers = await http.post_raw(url, body, headers, TIMEOUT)
        except HttpError as exc:
            metrics.webhook_handovers.labels("leader_unreachable").inc()
            log.warning("webhook for %s: the leader %s did not take it: %s",
                        request.path, leadership.holder, exc)
            return _retry_later(f"this replica ({me}) is not the leader, and the leader "
                                f"({leadership.holder}) did not take the webhook: {exc}; retry")
        metrics.webhook_handovers.labels("handed_over").inc()
        response = web.Response(status=status, body=answer)
        for name in PASSED_BACK:
            if name in answer_headers:
                response.headers[name] = answer_headers[name]
        return response

    return receive
