"""Configuration mistakes stop `remedyd run` with exit 2 and a message naming the key."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.settings import load_settings
from tests.harness import write_config

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


def run_with_environment(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`remedyd run` on an empty configuration file and these variables."""
    config = tmp_path / "remedyd.toml"
    config.write_text("")
    return run(config, env)


def test_example_config_is_valid() -> None:
    result = subprocess.run([sys.executable, "-m", "daemon", "check", "--config",
                             "config.example.toml"], capture_output=True, text=True,
                            timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_key_exits_2_naming_key_and_file(tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text('[server]\nlisen = "127.0.0.1:9464"\n')
    result = run(config)
    assert result.returncode == 2
    assert f"config error: {config}: unknown key 'server.lisen'" in result.stderr


def test_bad_value_exits_2_naming_key(tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text('[safety]\ndry_run = "maybe"\n[server]\nlisten = "nowhere"\n')
    result = run(config)
    assert result.returncode == 2
    assert f"{config}: safety.dry_run:" in result.stderr
    assert f"{config}: server.listen: expected HOST:PORT, got 'nowhere'" in result.stderr


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text("[server]\nlisten 127.0.0.1\n")
    result = run(config)
    assert result.returncode == 2
    assert f"{config}: invalid TOML" in result.stderr and "line 2" in result.stderr


def test_environment_mistake_names_the_variable(tmp_path: Path) -> None:
    result = run_with_environment(tmp_path, {"REMEDYD_AUDIT__FSYNK": "false"})
    assert result.returncode == 2
    assert "environment variable REMEDYD_AUDIT__FSYNK: unknown key 'audit.fsynk'" in result.stderr


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    from daemon.settings import load_settings

    config = tmp_path / "remedyd.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:1"\n[safety]\ndry_run = false\n')
    old = dict(os.environ)
    os.environ.update(REMEDYD_SERVER__LISTEN="127.0.0.1:2", REMEDYD_SAFETY__DRY_RUN="true")
    try:
        settings = load_settings(config)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert settings.server.port == 2
    assert settings.safety.dry_run is True
    assert settings.audit.fsync is True  # untouched keys keep their defaults


def test_missing_config_file(tmp_path: Path) -> None:
    result = run(tmp_path / "nope.toml")
    assert result.returncode == 2
    assert "nope.toml: no such file" in result.stderr


def test_lower_case_variable_is_named(tmp_path: Path) -> None:
    result = run_with_environment(tmp_path, {"remedyd_safety__max_attempts": "0"})
    assert result.returncode == 2
    assert ("config error: environment variable remedyd_safety__max_attempts: "
            "safety.max_attempts: Input should be greater than or equal to 1") in result.stderr
    assert "remedyd.toml" not in result.stderr


@pytest.mark.parametrize(("variable", "key"), [
    ("REMEDYD_RULES__PATHS", "rules.paths"),
    ("remedyd_rules__paths", "rules.paths"),
    ("REMEDYD_SAFETY", "safety"),
])
def test_structured_variable_not_written_as_json_is_named(
        tmp_path: Path, variable: str, key: str) -> None:
    result = run_with_environment(tmp_path, {variable: "rules"})
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert (f"config error: environment variable {variable}: {key}: "
            "expected JSON") in result.stderr, result.stderr


def test_a_variable_for_an_unknown_group_is_named(tmp_path: Path) -> None:
    result = run_with_environment(tmp_path, {"REMEDYD_SAFTEY__DRY_RUN": "true"})
    assert result.returncode == 2
    assert ("config error: environment variable REMEDYD_SAFTEY__DRY_RUN: unknown key 'saftey'"
            in result.stderr)


def test_list_variable_written_as_json_is_used(tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text('[rules]\npaths = ["rules"]\n')
    with environment(REMEDYD_RULES__PATHS='["a", "b,c"]'):
        settings = load_settings(config)
    assert settings.rules.paths == ["a", "b,c"]


def test_origin_names_the_variable_or_the_file(tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text('[server]\nlisten = "127.0.0.1:1"\n')
    assert load_settings(config).origin("server.listen") == str(config)
    with environment(remedyd_server__listen="127.0.0.1:2"):
        assert load_settings(config).origin("server.listen") == (
            "environment variable remedyd_server__listen")
    assert load_settings(None).origin("server.listen") == "defaults"


@contextlib.contextmanager
def environment(**variables: str) -> Iterator[None]:
    old = dict(os.environ)
    os.environ.update(variables)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(old)


RULES = """
rules:
  - name: heal
    source: docker
    when: event.action == "die"
    actions: [notify.webhook: {url: "http://127.0.0.1:9/hook"}]
"""


def daemon_config(tmp_path: Path, listen: str) -> Path:
    (tmp_path / "rules.yaml").write_text(RULES)
    return write_config(tmp_path / "remedyd.toml", {
        "server": {"listen": listen}, "docker": {"enabled": False},
        "audit": {"path": str(tmp_path / "audit.jsonl")},
        "rules": {"paths": [str(tmp_path / "rules.yaml")]}})


def started_records(tmp_path: Path) -> list[str]:
    audit = tmp_path / "audit.jsonl"
    lines = audit.read_text().splitlines() if audit.exists() else []
    return [line for line in lines if '"started"' in line]


def test_a_taken_port_exits_2_naming_key_and_file_before_started_is_audited(
        tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = daemon_config(tmp_path, f"127.0.0.1:{port}")
        result = run(config)
    assert result.returncode == 2, result.stderr
    assert (f"config error: {config}: server.listen: cannot listen on 127.0.0.1:{port}: "
            "Address already in use") in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert started_records(tmp_path) == []


def test_an_address_not_local_exits_2_naming_the_variable(tmp_path: Path) -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this host.
    config = daemon_config(tmp_path, "127.0.0.1:1")
    result = run(config, {"REMEDYD_SERVER__LISTEN": "192.0.2.1:9464"})
    assert result.returncode == 2, result.stderr
    assert ("config error: environment variable REMEDYD_SERVER__LISTEN: server.listen: "
            "cannot listen on 192.0.2.1:9464: Cannot assign requested address") in result.stderr
    assert started_records(tmp_path) == []
