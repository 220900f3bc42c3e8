"""remedyd under Type=notify: what systemd hears on NOTIFY_SOCKET, and when.

The end-to-end tests run the real daemon as a child process with NOTIFY_SOCKET naming a
datagram socket the test bound, as systemd does; the unit tests drive the notifier and
the pinger in this process.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.systemd import Notifier, Systemd, notify_address, status_text, watchdog_interval
from tests.harness import DaemonProcess, SocketProxy, wait_for

# Any valid rule set: what is under test is the lifecycle around it.
RULES = "rules:\n  - {name: %s, source: docker, when: 'event.action == \"die\"', " \
        "actions: [notify.webhook: {}]}\n"


Message = dict[str, str]


class NotifySocket:
    """The service manager's end: a bound AF_UNIX datagram socket, read with timeouts."""

    def __init__(self, path: Path | str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.address = str(path)
        self.seen: list[tuple[float, Message]] = []

    def close(self) -> None:
        self.sock.close()

    def recv(self, timeout: float) -> Message | None:
        """The next datagram within `timeout` seconds, parsed; None when none came."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except TimeoutError:
            return None
        message = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
        self.seen.append((time.monotonic(), message))
        return message

    def wait(self, predicate: Callable[[Message], bool], timeout: float,
             what: str) -> Message:
        """The first datagram matching `predicate`, bounded by `timeout`."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self.recv(left)
            if message is not None and predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout}s; got {self.messages()}")

    def messages(self) -> list[Message]:
        return [message for _, message in self.seen]

    def times(self, key: str) -> list[float]:
        return [at for at, message in self.seen if key in message]


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    # sun_path holds 108 bytes: a short name, as tmp_path is already long.
    listener = NotifySocket(tmp_path / "n.sock")
    yield listener
    listener.close()


def has(key: str, value: str = "1") -> Callable[[Message], bool]:
    return lambda message: message.get(key) == value


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.stop()


def test_ready_only_after_readyz_is_ready_then_stopping_on_sigterm(
        docker_host: str, notify_socket: NotifySocket, daemons: list[DaemonProcess],
        tmp_path: Path) -> None:
    # The engine is not there yet: the daemon serves, /readyz names the Docker source.
    proxy = SocketProxy(docker_host, tmp_path / "docker.sock")
    daemon = DaemonProcess(tmp_path / "d", RULES % "deaths", docker_url=proxy.url,
                           env={"NOTIFY_SOCKET": notify_socket.address})
    daemons.append(daemon)
    daemon.start(wait_ready=False)
    waiting = notify_socket.wait(lambda m: "source:docker" in m.get("STATUS", ""), 15,
                                 "a STATUS naming the Docker source")
    assert waiting["STATUS"].startswith("not ready: ")
    assert not any("READY" in m for m in notify_socket.messages())
    assert not daemon.ready()

    with proxy:
        ready = notify_socket.wait(has("READY"), 20, "READY=1 once Docker is reachable")
        assert daemon.ready(), daemon.readiness()
        assert ready["STATUS"] == "ready: 1 rules"

        daemon.signal(signal.SIGTERM)
        stopping = notify_socket.wait(has("STOPPING"), 10, "STOPPING=1 on SIGTERM")
        assert stopping["STATUS"] == "stopping"
        assert daemon.proc is not None and daemon.proc.wait(30) == 0
    # READY came once, and only once the report was ready.
    assert [m for m in notify_socket.messages() if "READY" in m] == [ready]


def _open_writer(fifo: Path) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader yet
            return None
        raise


def test_watchdog_pings_at_half_the_interval_and_stop_while_the_loop_is_wedged(
        notify_socket: NotifySocket, daemons: list[DaemonProcess], tmp_path: Path) -> None:
    half = 0.2
    daemon = DaemonProcess(tmp_path / "d", RULES % "deaths", env={
        "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": str(int(half * 2e6))})
    daemons.append(daemon)
    daemon.start()
    notify_socket.wait(has("READY"), 10, "READY=1")
    for _ in range(6):
        notify_socket.wait(has("WATCHDOG"), 2, "a WATCHDOG=1 ping")
    pings = notify_socket.times("WATCHDOG")
    gaps = [b - a for a, b in zip(pings[-6:], pings[-5:], strict=False)]
    assert half * 0.75 <= statistics.median(gaps) <= half * 1.5, gaps

    # A rule path that blocks on read (a FIFO here; a hung network mount alike) wedges
    # the event loop on the next reload: the pings must stop, so systemd would restart.
    fifo = daemon.rules_dir / "wedge.yaml"
    os.mkfifo(fifo)
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    daemon.signal(signal.SIGHUP)
    reloading = notify_socket.wait(has("RELOADING"), 5, "RELOADING=1 on SIGHUP")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert before <= int(reloading["MONOTONIC_USEC"]) <= after
    silent = notify_socket.recv(timeout=half * 6)
    assert silent is None, f"the wedged daemon still sent {silent}"

    writer = wait_for(lambda: _open_writer(fifo), 5, "the daemon to open the rule file")
    os.write(writer, (RULES % "more-deaths").encode())
    os.close(writer)
    reloaded = notify_socket.wait(has("READY"), 10, "READY=1 after the reload")
    assert reloaded["STATUS"] == "reloaded: 2 rules"
    notify_socket.wait(has("WATCHDOG"), 2, "pings again once the loop runs")


def test_a_broken_reload_keeps_the_rules_and_says_so(
        notify_socket: NotifySocket, daemons: list[DaemonProcess], tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "d", RULES % "deaths",
                           env={"NOTIFY_SOCKET": notify_socket.address})
    daemons.append(daemon)
    daemon.start()
    notify_socket.wait(has("READY"), 10, "READY=1")
    (daemon.rules_dir / "broken.yaml").write_text("rules: [{name: x}]\n")
    daemon.signal(signal.SIGHUP)
    notify_socket.wait(has("RELOADING"), 5, "RELOADING=1")
    after = notify_socket.wait(has("READY"), 5, "READY=1 after the failed reload")
    assert after["STATUS"] == "reload failed, kept 1 rules"


# -- in-process: the protocol and the pinger ------------------------------------------------


def test_addresses_and_watchdog_settings_are_read_as_systemd_writes_them() -> None:
    assert notify_address({}) is None
    assert notify_address({"NOTIFY_SOCKET": "/run/systemd/notify"}) == "/run/systemd/notify"
    assert notify_address({"NOTIFY_SOCKET": "@sd-notify"}) == "\0sd-notify"
    assert notify_address({"NOTIFY_SOCKET": "vsock:2:1234"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, 42) == 15.0
    # Inherited from a parent the watchdog was meant for: not ours to ping.
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 42) is None


def test_an_abstract_notify_socket_is_reached() -> None:
    name = f"remedyd-test-{uuid.uuid4().hex}"
    listener = NotifySocket("\0" + name)
    try:
        notifier = Notifier(notify_address({"NOTIFY_SOCKET": "@" + name}))
        assert notifier.send(READY="1", STATUS="ready")
        assert listener.recv(2) == {"READY": "1", "STATUS": "ready"}
        notifier.close()
    finally:
        listener.close()


def test_a_vanished_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    listener = NotifySocket(tmp_path / "n.sock")
    notifier = Notifier(listener.address)
    assert notifier.send(WATCHDOG="1")
    listener.close()
    (tmp_path / "n.sock").unlink()
    with caplog.at_level(logging.WARNING, logger="remedyd.systemd"):
        assert [notifier.send(WATCHDOG="1") for _ in range(3)] == [False] * 3
    assert len(caplog.records) == 1 and "cannot notify systemd" in caplog.text
    assert notifier.failures == 3
    notifier.close()


def _drain(listener: NotifySocket) -> list[Message]:
    drained = []
    while (message := listener.recv(0.001)) is not None:
        drained.append(message)
    return drained


async def test_the_pinger_stops_while_the_loop_is_blocked_and_does_not_burst_after(
        tmp_path: Path) -> None:
    listener = NotifySocket(tmp_path / "n.sock")
    systemd = Systemd({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})
    try:
        systemd.start_watchdog()
        await asyncio.sleep(0.2)  # the pinger runs: about four pings of 50 ms
        before: list[Message] = []

        def wedge() -> None:
            before.extend(_drain(listener))
            time.sleep(0.5)  # a callback that blocks the loop for ten intervals

        # This test resumes right after the wedge, before the loop looks at its timers.
        asyncio.get_running_loop().call_soon(wedge)
        await asyncio.sleep(0)
        assert len([m for m in before if m == {"WATCHDOG": "1"}]) >= 2
        assert _drain(listener) == []
        # Once the loop runs again: one ping at once, then the regular pace, no catch-up.
        await asyncio.sleep(0.01)
        assert _drain(listener) == [{"WATCHDOG": "1"}]
    finally:
        await systemd.close()
        listener.close()


async def test_ready_waits_for_the_readiness_report(tmp_path: Path) -> None:
    listener = NotifySocket(tmp_path / "n.sock")
    systemd = Systemd({"NOTIFY_SOCKET": listener.address})
    report: dict[str, object] = {"ready": False, "checks": {
        "rules": {"ready": True, "count": 3},
        "source:docker": {"ready": False, "error": "ConnectionRefusedError"}}}
    try:
        systemd.announce_when_ready(lambda: report)
        first = await asyncio.to_thread(listener.recv, 2)
        assert first == {"STATUS": "not ready: source:docker (ConnectionRefusedError)"}
        systemd.reloading()  # not ready yet: there is nothing to reload from
        report["ready"] = True
        ready = await asyncio.to_thread(listener.recv, 2)
        assert ready == {"READY": "1", "STATUS": "ready: 3 rules"}
        # Later losses of readiness show in `systemctl status`; READY is not sent again.
        report["ready"] = False
        lost = await asyncio.to_thread(listener.recv, 3)
        assert lost == {"STATUS": "not ready: source:docker (ConnectionRefusedError)"}
        report["ready"] = True
        again = await asyncio.to_thread(listener.recv, 3)
        assert again == {"STATUS": "ready: 3 rules"}
    finally:
        await systemd.close()
        listener.close()


def test_status_text_is_one_bounded_line() -> None:
    checks = {f"source:s{i}": {"ready": False, "error": "x" * 50} for i in range(20)}
    text = status_text({"ready": False, "checks": checks})
    assert len(text) <= 300 and "\n" not in text and text.endswith("...")


async def test_no_notify_socket_means_no_socket_and_no_tasks() -> None:
    systemd = Systemd({"WATCHDOG_USEC": "1000000"})
    systemd.start_watchdog()
    systemd.announce_when_ready(lambda: {"ready": True})
    assert asyncio.all_tasks() == {asyncio.current_task()}
    assert not systemd.notifier.enabled and not systemd.notifier.send(READY="1")
    await systemd.close()
