"""Drive remedyd the way an operator does: a real process, its config file, its HTTP API.

Also two small real peers for it: a webhook receiver, and a unix-socket proxy in
front of dockerd that a test can cut to simulate a dropped connection without
restarting the engine.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
# Every daemon the running test started: conftest shows their logs when the test fails,
# so a failure on a CI machine says what remedyd did, not only that it timed out.
STARTED: list[DaemonProcess] = []
# How much of a failed test's daemon is shown: the last lines of its log, audit records.
LOG_TAIL_LINES = 150
AUDIT_TAIL_RECORDS = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
              interval: float = 0.1) -> Any:
    """Poll until predicate() is truthy; bounded, and says what it waited for."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def write_config(path: Path, groups: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for group, keys in groups.items():
        lines.append(f"[{group}]")
        lines.extend(f"{key} = {toml_value(value)}" for key, value in keys.items()
                     if value is not None)
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """`remedyd run` as a child process with its own config, rules and audit log."""

    def __init__(self, workdir: Path, rules: str | None = None, *,
                 docker_url: str | None = None, webhook_url: str | None = None,
                 extra: dict[str, dict[str, Any]] | None = None,
                 args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.env = env or {}
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.rules_dir = workdir / "rules"
        self.rules_dir.mkdir(exist_ok=True)
        if rules is not None:
            (self.rules_dir / "rules.yaml").write_text(rules)
        self.audit_path = workdir / "audit.jsonl"
        groups: dict[str, dict[str, Any]] = {
            "server": {"listen": f"127.0.0.1:{self.port}"},
            # Every container in reach: a test about [docker] scope says "labelled".
            "docker": {"enabled": docker_url is not None, "url": docker_url,
                       "reconcile_interval": "2s", "scope": "all"},
            "audit": {"path": str(self.audit_path)},
            "rules": {"paths": [str(self.rules_dir)]},
            "notify": {"webhook_url": webhook_url},
            "log": {"level": "DEBUG"},
        }
        for group, keys in (extra or {}).items():
            groups.setdefault(group, {}).update(keys)
        self.config = write_config(workdir / "remedyd.toml", groups)
        self.log_path = workdir / "remedyd.log"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait_ready: bool = True, timeout: float = 30) -> DaemonProcess:
        env = dict(os.environ)
        env.pop("DOCKER_HOST", None)  # the config names the engine explicitly
        env.update(self.env)
        log = self.log_path.open("ab")
        if self not in STARTED:  # started again after a stop: one log, shown once
            STARTED.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon", "run", "--config", str(self.config), *self.args],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
        log.close()
        wait_for(lambda: self.get("/healthz") is not None or self._died(), timeout,
                 "remedyd to serve /healthz")
        if wait_ready:
            wait_for(self.ready, timeout, f"/readyz 200 from remedyd ({self.readiness()})")
        return self

    def _died(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"remedyd exited with {self.proc.returncode}:\n{self.log()}")
        return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def post_mortem(self) -> str:
        """The end of its log and of its audit log, one compact line a record."""
        lines = self.log().splitlines()[-LOG_TAIL_LINES:]
        try:
            records = self.audit()[-AUDIT_TAIL_RECORDS:]
        except (OSError, ValueError) as exc:
            records, lines = [], [*lines, f"(audit log unreadable: {exc})"]
        keep = ("seq", "time", "kind", "incident", "rule", "step", "decision", "outcome",
                "suppressed_by", "reason", "error", "detail")
        audit = [json.dumps({k: r[k] for k in keep if k in r}) for r in records]
        return "\n".join([f"--- log of remedyd in {self.workdir} (last {len(lines)} lines)",
                          *lines, f"--- its audit log (last {len(audit)} records)", *audit])

    def get(self, path: str) -> tuple[int, bytes] | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                return int(response.status), response.read()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read()
        except (urllib.error.URLError, OSError):
            return None

    def readiness(self) -> Any:
        answer = self.get("/readyz")
        return json.loads(answer[1]) if answer else None

    def ready(self) -> bool:
        answer = self.get("/readyz")
        return answer is not None and answer[0] == 200

    def audit(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        records = []
        # Read while remedyd writes: a last line without its newline is still being
        # written, and is left for the next read.
        text = self.audit_path.read_text()
        for line in text[:text.rfind("\n") + 1].splitlines():
            if line.strip():
                record = json.loads(line)
                if kind is None or record["kind"] == kind:
                    records.append(record)
        return records

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels` (0 when absent)."""
        answer = self.get("/metrics")
        assert answer is not None and answer[0] == 200
        total = 0.0
        for family in text_string_to_metric_families(answer[1].decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    total += sample.value
        return total

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"remedyd did not stop within {timeout}s:\n{self.log()}") from None

    def verify_audit(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "daemon", "audit", "verify",
                               str(self.audit_path)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)


class WebhookSink:
    """An HTTP server that records every JSON body POSTed to it."""

    def __init__(self, fail_first: int = 0) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0
        self.fail_first = fail_first
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                sink.attempts += 1
                if sink.attempts <= sink.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                sink.bodies.append(json.loads(body or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookSink:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SocketProxy:
    """A unix-socket proxy in front of dockerd that a test can cut and restore."""

    def __init__(self, upstream: str, path: Path) -> None:
        self.upstream = upstream.removeprefix("unix://")
        self.path = path
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def __enter__(self) -> SocketProxy:
        self.resume()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cut()

    def resume(self) -> None:
        if self.path.exists():
            self.path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(self.path))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        """Refuse new connections and break every open one, as a network drop would."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        if self.path.exists():
            self.path.unlink()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@contextlib.asynccontextmanager
async def posts_served(path: str, handler: Callable[[Any], Awaitable[Any]]
                       ) -> AsyncIterator[int]:
    """An aiohttp server answering POST `path` with `handler` on a free loopback port, on
    the test's own loop; yields the port."""
    from aiohttp import web

    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    try:
        await site.start()
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()
