"""Configuration mistakes stop `remedyd run` with exit 2 and a message naming the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, **(env or {})})


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
    config = tmp_path / "remedyd.toml"
    config.write_text("")
    result = run(config, {"REMEDYD_AUDIT__FSYNK": "false"})
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
