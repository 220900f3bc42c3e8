"""The test bed over HTTPS with authentication on, checked with the real kubectl: a client
certificate or a bearer token authenticates (the request log names the user), an unknown
token is 401 Unauthorized as kube-apiserver answers it."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.kube import tls
from tests.kube.plugin import kubectl_binary
from tests.kube.server import KubeApiServer

pytestmark = pytest.mark.skipif(not tls.available() or kubectl_binary() is None,
                                reason="needs the openssl CLI and kubectl")


@pytest_asyncio.fixture
async def bed(tmp_path: Path) -> AsyncIterator[tuple[KubeApiServer, tls.Pki]]:
    pki = tls.make_pki(tmp_path / "pki")
    server = KubeApiServer()
    server.bed.tokens["s3cret"] = "bob"
    server.bed.anonymous = False
    server.bed.add_node("node-1")
    await server.start(ssl_context=pki.server_context())
    try:
        yield server, pki
    finally:
        await server.stop()


async def kubectl(tmp_path: Path, server: KubeApiServer, pki: tls.Pki,
                  *args: str) -> tuple[int, str, str]:
    binary = kubectl_binary()
    assert binary is not None
    env = dict(os.environ, HOME=str(tmp_path), KUBECACHEDIR=str(tmp_path / "cache"))
    proc = await asyncio.create_subprocess_exec(
        binary, f"--server={server.url}", f"--certificate-authority={pki.ca}", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_kubectl_authenticates_by_token_or_client_certificate(
        bed: tuple[KubeApiServer, tls.Pki], tmp_path: Path) -> None:
    server, pki = bed
    code, out, err = await kubectl(tmp_path, server, pki, "--token=s3cret", "get", "nodes",
                                   "-o", "json")
    assert code == 0, err
    assert [n["metadata"]["name"] for n in json.loads(out)["items"]] == ["node-1"]
    assert {e.user for e in server.bed.log.entries if e.path == "/api/v1/nodes"} == {"bob"}
    code, out, err = await kubectl(tmp_path, server, pki,
                                   f"--client-certificate={pki.client_cert}",
                                   f"--client-key={pki.client_key}", "get", "nodes", "-o", "name")
    assert (code, out.strip()) == (0, "node/node-1"), err
    assert server.bed.log.entries[-1].user == tls.CLIENT_USER


async def test_an_unknown_token_is_401_unauthorized(bed: tuple[KubeApiServer, tls.Pki],
                                                    tmp_path: Path) -> None:
    server, pki = bed
    code, _, err = await kubectl(tmp_path, server, pki, "--token=wrong", "get", "nodes",
                                 "-o", "name")
    assert code == 1
    assert "error: You must be logged in to the server" in err
    entry = server.bed.log.entries[-1]
    assert entry.status == 401 and entry.user == ""

