"""The architecture's one-way edges: import-linter's contracts (pyproject.toml) hold and bite.

`lint-imports` runs in scripts/test; these tests also prove that each contract fails
on a violation (relative and function-level imports included) and that the audit
contract's list of third-party packages keeps up with what daemon imports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True,
                          text=True, timeout=60, check=False)


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def contract(prefix: str) -> str:
    names = [str(c["name"]) for c in contracts() if str(c["name"]).startswith(prefix)]
    assert len(names) == 1, f"no single contract named {prefix!r}...: {names}"
    return names[0]


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


# (contract name prefix, module to edit, line that breaks it)
VIOLATIONS = [
    ("core imports nothing", "core/events.py", "from ..engine import state as _state"),
    ("engine imports only core", "engine/state.py", "import daemon.bus as _bus"),
    ("engine and core are pure", "engine/state.py",
     "def _late() -> None:\n    import socket  # noqa: F401\n"),
    ("audit is stdlib-only", "audit/log.py", "from pydantic import BaseModel as _Model"),
    ("platform client libraries", "sources/docker.py", "import aiodocker as _aiodocker"),
    ("layers", "actions/base.py", "from daemon.http import server as _server"),
]


@pytest.mark.parametrize(("name", "module", "line"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_a_violation_breaks_its_contract(tmp_path: Path, name: str, module: str,
                                         line: str) -> None:
    shutil.copytree(ROOT / "daemon", tmp_path / "daemon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / "daemon" / module).open("a") as f:
        f.write("\n" + line + "\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{contract(name)} BROKEN" in result.stdout, result.stdout


def test_the_audit_contract_names_every_third_party_package_daemon_imports() -> None:
    graph = grimp.build_graph("daemon", include_external_packages=True)
    used = {m for m in graph.modules if not m.startswith("daemon")} - sys.stdlib_module_names
    audit = next(c for c in contracts() if c["name"] == contract("audit is stdlib-only"))
    forbidden = audit["forbidden_modules"]
    assert isinstance(forbidden, list)
    assert used <= set(forbidden), f"add to the audit contract: {sorted(used - set(forbidden))}"


def test_a_daemon_without_docker_loads_no_docker_client() -> None:
    script = (
        "import sys\n"
        "from daemon.app import Daemon\n"
        "from daemon.settings import Settings\n"
        "assert Daemon(Settings(docker={'enabled': False})).load_rules()\n"
        "heavy = {'aiodocker', 'kubernetes_asyncio', 'opentelemetry', 'apscheduler', 'cel.cli'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT).stdout
    assert out.strip() == "[]"
