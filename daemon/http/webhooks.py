"""`POST /webhooks/alertmanager` and `POST /webhooks/generic/{name}`.

Each request is judged cheapest first and never parsed before it is authenticated:
credentials or signature headers (401), size (413, from Content-Length before reading,
or as soon as the stream passes the limit), then the body (400 naming the field).
Nothing a sender can put in a request gives a 5xx, except 503 when the engine's queue
is full: Alertmanager retries a 5xx, and what was taken before is recognised then.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from daemon.http.linger import answer_early
from daemon.http.webhook_auth import Credentials, signed_by, well_formed
from daemon.sources.webhook_payloads import PayloadError, decode_json, parse_alertmanager
from daemon.sources.webhooks import AlertIntake, GenericIntake
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.http.webhooks")

# What answers one webhook request.
Receive = Callable[[web.Request], Awaitable[web.Response]]

ALERTMANAGER_PATH = "/webhooks/alertmanager"
GENERIC_PATH = "/webhooks/generic/{name}"
TIMESTAMP_HEADER = "X-Remedyd-Timestamp"
SIGNATURE_HEADER = "X-Remedyd-Signature"
_CHUNK = 65_536
_SHOWN = 40
# Seconds a sender should wait before retrying a 503.
RETRY_AFTER = "1"


@dataclass(frozen=True, slots=True)
class GenericHook:
    secret: str
    replay_window: float


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response(body, status=status)


def _error(status: int, message: str, **details: Any) -> web.Response:
    return _answer(status, error=message, **details)


async def read_limited(request: web.Request, limit: int) -> bytes | web.Response:
    """The body, or the 413 (larger than `limit`) or 400 (a broken stream) to answer."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return _error(413, f"body of {declared} bytes is larger than the limit of {limit} "
                      "bytes ([webhooks] max_body_bytes)")
    chunks: list[bytes] = []
    size = 0
    try:
        while chunk := await request.content.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                return _error(413, f"body is larger than the limit of {limit} bytes "
                              "([webhooks] max_body_bytes)")
            chunks.append(chunk)
    except Exception as exc:  # a malformed chunk or encoding, the peer gone: its fault
        return _error(400, f"could not read the body: {type(exc).__name__}")
    return b"".join(chunks)


class _Counted:
    """Every answer counted by endpoint and status (remedyd_webhook_requests_total)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def __call__(self, endpoint: str | Callable[[web.Request], str],
                 handler: Callable[[web.Request], Awaitable[web.Response]]
                 ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def counted(request: web.Request) -> web.Response:
            try:
                response = await handler(request)
            except Exception:  # a bug: still no 500 to a sender that would retry forever
                log.exception("bug answering %s %s", request.method, request.path)
                response = _error(400, "request not understood (a bug in remedyd; the log "
                                  "has details)")
            # Refused before (or while) its body was read, or a body that broke after.
            response = await answer_early(request, response)
            label = endpoint(request) if callable(endpoint) else endpoint
            self._metrics.webhook_requests.labels(label, str(response.status)).inc()
            return response
        return counted


def _as_is(handler: Receive) -> Receive:
    return handler


def alertmanager_route(intake: AlertIntake, credentials: Credentials, max_body: int,
                       metrics: Metrics, via: Callable[[Receive], Receive] = _as_is,
                       ) -> web.RouteDef:
    """`via`: what the request passes through first (a follower hands it to the leader)."""
    challenges = credentials.challenges()

    async def receive(request: web.Request) -> web.Response:
        if not credentials.allows(request.headers.get("Authorization")):
            response = _error(401, "missing or wrong credentials (Alertmanager's http_config: "
                              "authorization or basic_auth)")
            for challenge in challenges:
                response.headers.add("WWW-Authenticate", challenge)
            return response
        body = await read_limited(request, max_body)
        if isinstance(body, web.Response):
            return body
        try:
            notification = parse_alertmanager(decode_json(body))
        except PayloadError as exc:
            return _error(400, str(exc), field=exc.field)
        taken = intake.take(notification)
        result = {"accepted": taken.accepted, "duplicates": taken.duplicates,
                  "dropped": taken.dropped}
        if taken.dropped:
            # Alertmanager retries a 5xx; the alerts taken now are duplicates then.
            response = _error(503, "the engine's queue is full; retry", **result)
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        return _answer(200, **result)

    return web.post(ALERTMANAGER_PATH, _Counted(metrics)("alertmanager", via(receive)))


def generic_route(intake: GenericIntake, hooks: Mapping[str, GenericHook], max_body: int,
                  metrics: Metrics, clock: Callable[[], float] = time.time,
                  via: Callable[[Receive], Receive] = _as_is) -> web.RouteDef:
    async def receive(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        hook = hooks.get(name)
        if hook is None:
            shown = name if len(name) <= _SHOWN else name[:_SHOWN] + "..."
            return _error(404, f"no generic webhook named {shown!r} ([webhooks.generic.<name>])")
        stamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            return _error(401, f"{TIMESTAMP_HEADER} must be unix seconds")
        if not well_formed(signature):
            return _error(401, f"{SIGNATURE_HEADER} must be sha256=<64 hex digits>")
        body = await read_limited(request, max_body)
        if isinstance(body, web.Response):
            return body
        if not signed_by(hook.secret, stamp, body, signature):
            return _error(401, "bad signature: expected HMAC-SHA256 of '<timestamp>.<body>' "
                          "with this webhook's secret")
        now = clock()
        sent = float(stamp)
        if abs(now - sent) > hook.replay_window:
            return _error(401, f"{TIMESTAMP_HEADER} is {now - sent:.0f}s from this host's "
                          f"clock; the replay window is {hook.replay_window:.0f}s")
        delivery = signature.lower()
        if intake.replayed(name, delivery):
            # Correctly signed, so not an authentication failure: this exact delivery
            # was taken already. A sender's retry after a lost answer lands here too.
            return _error(409, "this delivery (its signature) was accepted already")
        try:
            payload = decode_json(body)
        except PayloadError as exc:
            return _error(400, str(exc), field=exc.field)
        if not isinstance(payload, dict):
            return _error(400, "the body must be a JSON object", field="$")
        if not intake.take(name, payload, delivery, sent, sent + hook.replay_window):
            response = _error(503, "the engine's queue is full; retry")
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        return _answer(200, accepted=1)

    def endpoint(request: web.Request) -> str:
        # Only configured names become label values, so the metric stays small.
        name = request.match_info.get("name", "")
        return f"generic/{name}" if name in hooks else "generic"

    return web.post(GENERIC_PATH, _Counted(metrics)(endpoint, via(receive)))
