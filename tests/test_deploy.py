"""The deployment files an operator installs are valid for the tools that read them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    unit = (ROOT / "deploy/systemd/remedyd.service").read_text()
    # verify insists that ExecStart exists: point it at this checkout's entry point.
    local = unit.replace("/opt/remedyd/bin/remedyd", str(Path(sys.executable).parent / "remedyd"))
    path = tmp_path / "remedyd.service"
    path.write_text(local)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True,
                            timeout=60)
    # Unknown keys and bad values are only warnings on stderr, with exit 0.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_container_environment_names_real_settings() -> None:
    from daemon.settings import Settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    names = {word.split("=")[0] for word in dockerfile.split() if word.startswith("REMEDYD_")}
    assert names
    for name in names:
        group, _, key = name.removeprefix("REMEDYD_").lower().partition("__")
        assert key in type(getattr(Settings(), group)).model_fields, name
