"""One check of an HTTP(S) URL or a TCP host:port, as a CheckResult whose error says what a
human would (timeout, connection refused, status 503, body lacks "ok", TLS error).

Each check opens a connection of its own (no keep-alive), as blackbox_exporter does: a
server that stops accepting connections must fail its probe even while an old one stays
open. Redirects are not followed: a health endpoint that redirects (to a login page) is
answered by its own status, which `expect_status` may accept (3xx is up by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
import time
from collections.abc import Sequence

import aiohttp

from daemon import __version__
from daemon.engine.probe_state import CheckResult

# A body is read this far looking for `expect_body`; a health page is small.
BODY_LIMIT = 1 << 20


def is_up_status(status: int, expected: Sequence[int]) -> bool:
    return status in expected if expected else 200 <= status <= 399


class HttpProber:
    """HTTP(S) checks over one session with no shared connections."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            # limit=0: a slow target holding its connection never queues another's check.
            connector = aiohttp.TCPConnector(force_close=True, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": f"remedyd-probe/{__version__}"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self, url: str, time_limit: float, *, expect_status: Sequence[int] = (),
                    expect_body: str | None = None, tls_verify: bool = True) -> CheckResult:
        started = time.perf_counter()
        status = 0
        try:
            async with asyncio.timeout(time_limit):
                async with self.session.get(url, allow_redirects=False,
                                            ssl=tls_verify) as response:
                    status = response.status
                    if not is_up_status(status, expect_status):
                        return _failed("status", f"status {status}", started, status)
                    if expect_body is not None:
                        body = await response.content.read(BODY_LIMIT)
                        if expect_body.encode() not in body:
                            return _failed("body", f"body lacks {expect_body!r}", started, status)
        except TimeoutError:
            return _failed("timeout", f"timeout after {time_limit:g}s", started, status)
        except aiohttp.ClientSSLError as exc:
            return _failed("tls", f"TLS error: {_tls_reason(exc)}", started, status)
        except aiohttp.ClientConnectorError as exc:
            return _failed(*connect_reason(exc.os_error), started, status)
        except (aiohttp.ClientError, OSError) as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return _failed("error", detail, started, status)
        return CheckResult(ok=True, status=status, latency_ms=_elapsed_ms(started))


async def check_tcp(host: str, port: int, time_limit: float) -> CheckResult:
    """Connect and close: the port accepts connections (PostgreSQL, Redis)."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(time_limit):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            # A reset on close still means it accepted the connection.
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    except TimeoutError:
        return _failed("timeout", f"timeout after {time_limit:g}s", started)
    except OSError as exc:
        return _failed(*connect_reason(exc), started)
    return CheckResult(ok=True, latency_ms=_elapsed_ms(started))


def connect_reason(exc: OSError) -> tuple[str, str]:
    """(reason, error) of a connection that did not open."""
    if isinstance(exc, socket.gaierror):
        return "dns", f"name not resolved: {exc.strerror or exc}"
    if exc.errno == errno.ECONNREFUSED:
        return "refused", "connection refused"
    if isinstance(exc, ssl.SSLError):
        return "tls", f"TLS error: {exc.reason or exc}"
    return "error", f"connect failed: {exc.strerror or exc}"


def _tls_reason(exc: aiohttp.ClientSSLError) -> str:
    inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
    if isinstance(inner, ssl.SSLCertVerificationError):
        return str(inner.verify_message or inner.reason or inner)
    if isinstance(inner, ssl.SSLError):
        return str(inner.reason or inner)
    return str(inner or exc)


def _failed(reason: str, error: str, started: float, status: int = 0) -> CheckResult:
    return CheckResult(ok=False, error=error, reason=reason, status=status,
                       latency_ms=_elapsed_ms(started))


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
