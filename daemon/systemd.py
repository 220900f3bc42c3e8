"""What remedyd tells systemd: the sd_notify datagram protocol and the watchdog pinger.

The protocol is one AF_UNIX datagram of `KEY=value` lines to the socket named by
NOTIFY_SOCKET (a path, or `@name` for an abstract socket). Nothing here may raise into
the daemon: a service manager that went away must not take remediation down with it,
so a failed send is logged once and then only counted.

The watchdog pings from the event loop, never from a thread: a wedged loop (a blocking
read, a runaway callback) then stops pinging, and systemd kills and restarts the
process, which is the whole point of WatchdogSec=.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("remedyd.systemd")

# While not ready yet, readiness is polled this often: READY=1 follows /readyz by at most
# this much. Once ready, STATUS= follows changes at the slower pace.
READY_POLL = 0.1
STATUS_POLL = 1.0
STATUS_MAX = 300  # `systemctl status` shows one line; a list of every check would wrap


def notify_address(env: Mapping[str, str]) -> str | None:
    """The socket address to send to, as socket.sendto takes it; None: not under systemd."""
    value = env.get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]  # Linux abstract namespace
    if value.startswith("/"):
        return value
    # vsock: and other transports of newer systemd versions: not spoken here.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket path; systemd is not notified", value)
    return None


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when systemd
    asks for none, or asks another process (WATCHDOG_PID names someone else: a child
    that inherited the environment must not ping on its parent's behalf)."""
    usec, owner = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if owner and owner != str(pid):
        return None
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number of microseconds; "
                    "no watchdog pings", usec)
        return None
    return value / 2 / 1_000_000


class Notifier:
    """Sends notifications to one NOTIFY_SOCKET; inert when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.failures = 0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str) -> bool:
        """One datagram of `KEY=value` lines. True when the kernel took it."""
        if self.address is None:
            return False
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue drops this message rather than block the loop.
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(message, self.address)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("cannot notify systemd at %s: %s (further failures are not "
                            "logged)", self.address.replace("\0", "@"), exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def status_text(report: Mapping[str, Any]) -> str:
    """One line for `systemctl status`: ready, or what readiness still waits for."""
    if report.get("ready"):
        count = report.get("checks", {}).get("rules", {}).get("count")
        return "ready" if count is None else f"ready: {count} rules"
    waiting = []
    for name, check in report.get("checks", {}).items():
        if not check.get("ready"):
            why = check.get("error") or check.get("reason") or ""
            if not why and check.get("errors"):
                why = str(check["errors"][0])
            waiting.append(f"{name} ({why})" if why else name)
    text = "not ready: " + ", ".join(waiting or ["starting"])
    return text if len(text) <= STATUS_MAX else text[:STATUS_MAX - 3] + "..."


class Systemd:
    """remedyd's side of Type=notify: READY once ready, STOPPING, RELOADING around a
    reload, STATUS lines, and the watchdog."""

    def __init__(self, env: Mapping[str, str], pid: int | None = None) -> None:
        self.notifier = Notifier(notify_address(env))
        self.interval = watchdog_interval(env, os.getpid() if pid is None else pid)
        self.ready = False
        self.stopping_sent = False
        self._tasks: list[asyncio.Task[None]] = []

    def start_watchdog(self) -> None:
        if self.interval is not None and self.notifier.enabled:
            log.info("systemd watchdog: pinging every %.3g s", self.interval)
            self._tasks.append(asyncio.create_task(self._ping(self.interval),
                                                   name="systemd-watchdog"))

    def announce_when_ready(self, readiness: Callable[[], Mapping[str, Any]]) -> None:
        if self.notifier.enabled:
            self._tasks.append(asyncio.create_task(self._announce(readiness),
                                                   name="systemd-ready"))

    async def _ping(self, interval: float) -> None:
        while True:
            self.notifier.send(WATCHDOG="1")
            await asyncio.sleep(interval)

    async def _announce(self, readiness: Callable[[], Mapping[str, Any]]) -> None:
        last = ""
        while not self.stopping_sent:
            report = readiness()
            text = status_text(report)
            if report.get("ready") and not self.ready:
                self.ready = True
                self.notifier.send(READY="1", STATUS=text)
            elif text != last:
                self.notifier.send(STATUS=text)
            last = text
            await asyncio.sleep(STATUS_POLL if self.ready else READY_POLL)

    def stopping(self) -> None:
        if not self.stopping_sent:
            self.stopping_sent = True
            self.notifier.send(STOPPING="1", STATUS="stopping")

    def reloading(self) -> None:
        # Before READY the service is still starting: there is nothing to reload from.
        if self.ready and not self.stopping_sent:
            self.notifier.send(RELOADING="1", MONOTONIC_USEC=str(monotonic_usec()),
                               STATUS="reloading rules")

    def reloaded(self, status: str) -> None:
        if self.ready and not self.stopping_sent:
            self.notifier.send(READY="1", STATUS=status)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        self.notifier.close()
