"""The architecture's one-way edges, checked on the source so a violation fails CI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "daemon"
CLIENT_LIBRARIES = {"aiodocker", "kubernetes_asyncio"}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py")) if folder else sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", modules("core"), ids=lambda p: p.name)
def test_core_imports_nothing_else_from_the_package(path: Path) -> None:
    inside = {n for n in imports_of(path) if n.startswith("daemon")}
    assert all(n.startswith("daemon.core") for n in inside), inside


@pytest.mark.parametrize("path", modules("engine"), ids=lambda p: p.name)
def test_engine_does_no_io(path: Path) -> None:
    names = imports_of(path)
    forbidden = {n for n in names if n.split(".")[0] in
                 {"asyncio", "aiohttp", "socket", *CLIENT_LIBRARIES}}
    assert not forbidden
    assert all(n.startswith(("daemon.core", "daemon.engine")) for n in names
               if n.startswith("daemon")), names


@pytest.mark.parametrize("path", modules(""), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_clients_import_client_libraries(path: Path) -> None:
    if path.parent.name == "clients":
        return
    used = {n.split(".")[0] for n in imports_of(path)} & CLIENT_LIBRARIES
    assert not used, f"{path.name} imports {used}; go through daemon/clients"


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
                         timeout=60, check=True, cwd=PACKAGE.parent).stdout
    assert out.strip() == "[]"
