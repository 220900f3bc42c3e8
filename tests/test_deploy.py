"""The deployment files an operator installs are valid for the tools that read them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), "--no-color", "--failure-threshold", "warning",
                             str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# The exposure `systemd-analyze security` gives the unit; the README quotes it.
SYSTEMD_EXPOSURE = 1.3


def _local_unit(tmp_path: Path) -> Path:
    """The unit with ExecStart on this checkout's entry point, which verify insists on."""
    unit = (ROOT / "deploy/systemd/remedyd.service").read_text()
    path = tmp_path / "remedyd.service"
    path.write_text(unit.replace("/opt/remedyd/bin/remedyd",
                                 str(Path(sys.executable).parent / "remedyd")))
    return path


def _systemd_analyze(min_version: int = 0) -> str:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    version = subprocess.run([analyze, "--version"], capture_output=True, text=True,
                             timeout=60).stdout.split()
    if min_version and int(version[1]) < min_version:
        pytest.skip(f"systemd {version[1]} is older than {min_version}")
    return analyze


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    result = subprocess.run([_systemd_analyze(), "verify", str(_local_unit(tmp_path))],
                            capture_output=True, text=True, timeout=60)
    # Unknown keys and bad values are only warnings on stderr, with exit 0.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_systemd_unit_is_sandboxed_to_the_quoted_exposure(tmp_path: Path) -> None:
    # --offline (systemd 250) scores the file itself, with no running service manager.
    analyze = _systemd_analyze(min_version=250)
    result = subprocess.run([analyze, "security", "--offline=true", "--no-pager",
                             str(_local_unit(tmp_path))], capture_output=True, text=True,
                            timeout=60)
    found = re.search(r"Overall exposure level for remedyd.service: (\d+\.\d)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found[1]) <= SYSTEMD_EXPOSURE, result.stdout
    assert f"systemd-analyze security remedyd.service` scores it {SYSTEMD_EXPOSURE}" in (
        ROOT / "README.md").read_text()


def test_container_environment_names_real_settings() -> None:
    from daemon import CONFIG_FILE_VARIABLE
    from daemon.settings import Settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    names = {word.split("=")[0] for word in dockerfile.split() if word.startswith("REMEDYD_")}
    # The configuration file's own variable is the one that is not a settings key.
    assert CONFIG_FILE_VARIABLE in names
    names.discard(CONFIG_FILE_VARIABLE)
    assert names
    for name in names:
        group, _, key = name.removeprefix("REMEDYD_").lower().partition("__")
        assert key in type(getattr(Settings(), group)).model_fields, name
