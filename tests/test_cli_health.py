"""`remedyd health`, the image's HEALTHCHECK: it asks the daemon the configuration names."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.harness import free_port

REMEDYD = str(Path(sys.executable).parent / "remedyd")


class _Answers(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        alive = self.path == "/healthz"
        body = b'{"status": "ok"}' if alive else b'{"status": "not ready"}'
        self.send_response(200 if alive else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def alive_not_ready() -> Iterator[int]:
    """A server where /healthz answers 200 and /readyz 503; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def health(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    if config is not None:
        env["REMEDYD_CONFIG"] = str(config)
    return subprocess.run([REMEDYD, "health", *args], capture_output=True, text=True,
                          timeout=60, env=env)


def test_health_asks_the_listen_address_of_the_config_in_remedyd_config(
        alive_not_ready: int, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nlisten = "0.0.0.0:{alive_not_ready}"\n')
    alive = health(config=config)
    assert alive.returncode == 0, alive.stderr
    assert f"http://127.0.0.1:{alive_not_ready}/healthz: 200" in alive.stdout
    ready = health("--ready", config=config)
    assert ready.returncode == 1
    assert "/readyz answered 503" in ready.stderr and "not ready" in ready.stderr


def test_health_fails_naming_the_address_nobody_answers_on() -> None:
    port = free_port()
    result = health("--url", f"http://127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/healthz" in result.stderr


def test_a_broken_config_in_remedyd_config_is_named(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[server\n")
    result = health(config=config)
    assert result.returncode == 1
    assert f"{config}: invalid TOML" in result.stderr


def test_remedyd_config_is_the_file_of_every_command_not_an_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[rules]\npaths = []\n[docker]\nenabled = false\n'
                      '[kubernetes]\nenabled = false\n[server]\nlisten = "127.0.0.1:1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    checked = subprocess.run([REMEDYD, "check"], capture_output=True, text=True, timeout=60,
                             env={**env, "REMEDYD_CONFIG": str(config)})
    assert checked.returncode == 0, checked.stderr
    assert "unknown key" not in checked.stderr
    # A typo among REMEDYD_* variables is still named.
    typo = subprocess.run([REMEDYD, "check"], capture_output=True, text=True, timeout=60,
                          env={**env, "REMEDYD_CONFIG": str(config), "REMEDYD_CONFG": "x"})
    assert typo.returncode == 2 and "REMEDYD_CONFG: unknown key 'confg'" in typo.stderr
