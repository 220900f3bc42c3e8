"""Every credential form remedyd reads itself, against the test bed served over TLS with
authentication on: the in-cluster service account (its token re-read as it rotates),
kubeconfigs with a CA file or data, a token or token file, a client certificate and key
as files or data, insecure-skip-tls-verify; an exec plugin still works through
kubernetes-asyncio; bad credentials are one clear error naming the key."""

from __future__ import annotations

import base64
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from daemon.clients import kubeconfig as kubeconfig_module
from daemon.clients.kubeconfig import CredentialsError, from_kubeconfig
from daemon.clients.kubernetes import (
    RESOURCES,
    STRATEGIC_MERGE_PATCH,
    KubeClient,
    KubeUnavailable,
)
from tests.kube import tls
from tests.kube.server import KubeApiServer

pytestmark = pytest.mark.skipif(not tls.available(), reason="needs the openssl CLI")

PODS = RESOURCES["pods"]
TOKEN, USER = "token-one", "alice"
POD = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web-1", "namespace": "default", "uid": "uid-web-1"},
       "spec": {"containers": [{"name": "app", "image": "example/app:1"}]}}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tls.Pki:
    return tls.make_pki(tmp_path_factory.mktemp("pki"))


@pytest_asyncio.fixture
async def bed(pki: tls.Pki) -> AsyncIterator[KubeApiServer]:
    """HTTPS, and nothing answered to anyone it cannot authenticate."""
    server = KubeApiServer()
    server.bed.tokens[TOKEN] = USER
    server.bed.anonymous = False
    server.bed.apply(POD)
    await server.start(ssl_context=pki.server_context())
    try:
        yield server
    finally:
        await server.stop()


def write_kubeconfig(path: Path, server: str, cluster: dict[str, Any],
                     user: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "bed",
        "clusters": [{"name": "bed", "cluster": {"server": server, **cluster}}],
        "users": [{"name": "me", "user": user}],
        "contexts": [{"name": "bed", "context": {"cluster": "bed", "user": "me"}}]}))
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def list_as(server: KubeApiServer, kubeconfig: Path, itself: bool = True) -> str:
    """List pods through a fresh client; the user the server authenticated. `itself`:
    remedyd reads these credentials without kubernetes-asyncio."""
    assert (from_kubeconfig(kubeconfig) is not None) == itself
    client = KubeClient(kubeconfig, None, 5.0)
    try:
        items, _ = await client.list(PODS, None, None)
    finally:
        await client.close()
    assert [i["metadata"]["name"] for i in items] == ["web-1"]
    return server.bed.log.entries[-1].user


async def test_a_token_over_tls_with_the_ca_as_a_file_reads_and_writes(
        bed: KubeApiServer, pki: tls.Pki, tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", bed.url,
                              {"certificate-authority": str(pki.ca)}, {"token": TOKEN})
    client = KubeClient(config, None, 5.0)
    try:
        assert (await client.get(PODS, "default", "web-1") or {})["metadata"]["uid"] == "uid-web-1"
        # A bytes body goes out byte for byte, as a rollback needs.
        body = b'{"metadata":{"labels":{"x":"1"}}}'
        await client.patch(PODS, "default", "web-1", body, STRATEGIC_MERGE_PATCH)
    finally:
        await client.close()
    get, patch = bed.bed.log.entries[-2:]
    assert (get.method, get.user) == ("GET", USER)
    assert (patch.method, patch.user, patch.body) == ("PATCH", USER, body)
    assert patch.user_agent.startswith("remedyd/")


async def test_inline_ca_and_client_certificate_data(bed: KubeApiServer, pki: tls.Pki,
                                                     tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "config", bed.url,
                              {"certificate-authority-data": b64(pki.ca)},
                              {"client-certificate-data": b64(pki.client_cert),
                               "client-key-data": b64(pki.client_key)})
    assert await list_as(bed, config) == tls.CLIENT_USER


async def test_client_certificate_files_relative_to_the_kubeconfig(
        bed: KubeApiServer, pki: tls.Pki, tmp_path: Path) -> None:
    home = tmp_path / "kube"
    home.mkdir()
    for src, name in ((pki.ca, "ca.crt"), (pki.client_cert, "me.crt"), (pki.client_key, "me.key")):
        (home / name).write_bytes(src.read_bytes())
    config = write_kubeconfig(home / "config", bed.url, {"certificate-authority": "ca.crt"},
                              {"client-certificate": "me.crt", "client-key": "me.key"})
    assert await list_as(bed, config) == tls.CLIENT_USER


async def test_insecure_skip_tls_verify_with_a_token_file(bed: KubeApiServer,
                                                          tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    config = write_kubeconfig(tmp_path / "config", bed.url, {"insecure-skip-tls-verify": True},
                              {"tokenFile": str(tmp_path / "token")})
    assert await list_as(bed, config) == USER


async def test_a_server_certificate_the_ca_did_not_sign_is_refused(
        bed: KubeApiServer, tmp_path: Path) -> None:
    other = tls.make_pki(tmp_path / "other")
    config = write_kubeconfig(tmp_path / "config", bed.url,
                              {"certificate-authority": str(other.ca)}, {"token": TOKEN})
    client = KubeClient(config, None, 5.0)
    try:
        with pytest.raises(KubeUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await client.list(PODS, None, None)
    finally:
        await client.close()
    assert not [e for e in bed.bed.log.entries if e.path == "/api/v1/pods"]


async def test_in_cluster_service_account_with_a_rotating_token(
        bed: KubeApiServer, pki: tls.Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "ca.crt").write_bytes(pki.ca.read_bytes())
    (account / "token").write_text(TOKEN)
    monkeypatch.setattr(kubeconfig_module, "SERVICE_ACCOUNT", account)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(bed.port))
    client = KubeClient(None, None, 5.0)
    try:
        await client.list(PODS, None, None)
        assert bed.bed.log.entries[-1].user == USER and client.peer == bed.url
        # kubelet rotates the projected token (a new file swapped in); the old one expires.
        (account / "token.new").write_text("token-two")
        os.replace(account / "token.new", account / "token")
        bed.bed.tokens = {"token-two": "alice-rotated"}
        await client.list(PODS, None, None)
        assert bed.bed.log.entries[-1].user == "alice-rotated"
    finally:
        await client.close()


async def test_an_exec_plugin_is_left_to_kubernetes_asyncio(bed: KubeApiServer, pki: tls.Pki,
                                                            tmp_path: Path) -> None:
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "kind": "ExecCredential", "status": {"token": TOKEN}}
    config = write_kubeconfig(
        tmp_path / "config", bed.url, {"certificate-authority": str(pki.ca)},
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                  "command": sys.executable,
                  "args": ["-c", f"print({json.dumps(json.dumps(credential))})"]}})
    assert await list_as(bed, config, itself=False) == USER


@pytest.mark.parametrize(("context", "user", "message"), [
    ("nope", {"token": TOKEN}, "no context named 'nope' (known: bed)"),
    (None, {"client-certificate-data": "bm90IGEgY2VydA==", "client-key-data": "%%%"},
     "users[me].user.client-key-data is not base64"),
    (None, {"client-certificate-data": "bm90IGEgY2VydA=="},
     "users[me].user needs both client-certificate(-data) and client-key(-data)"),
    (None, {"client-certificate": "missing.crt", "client-key": "missing.key"},
     "users[me].user.client-certificate: "),
])
def test_a_bad_kubeconfig_is_an_error_naming_the_key(tmp_path: Path, context: str | None,
                                                     user: dict[str, Any], message: str) -> None:
    config = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {}, user)
    with pytest.raises(CredentialsError, match=f"^kubeconfig {config}.*{re.escape(message)}"):
        from_kubeconfig(config, context)


async def test_a_certificate_and_key_that_do_not_match_fail_connect_naming_them(
        pki: tls.Pki, tmp_path: Path) -> None:
    other = tls.make_pki(tmp_path / "other")
    config = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:1", {},
                              {"client-certificate-data": b64(pki.client_cert),
                               "client-key-data": b64(other.client_key)})
    client = KubeClient(config, None, 5.0)
    with pytest.raises(KubeUnavailable, match=r"cannot load credentials: .*client-certificate-"
                       r"data with users\[me\]\.user\.client-key-data: not a matching"):
        await client.connect()

