"""How KubeClient's requests reach the API server: one method, two implementations.

`SessionTransport` is remedyd's own aiohttp session with an ssl.SSLContext and a bearer
token, for the credentials daemon/clients/kubeconfig.py reads. `LibraryTransport` hands
auth, TLS and proxies to kubernetes-asyncio, imported only then, for what only it
implements (exec plugins, auth providers...). Both send the body as the very bytes given
and hand back the raw response: decoding stays with the client.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from daemon.clients.kubeconfig import (
    Credentials,
    CredentialsError,
    Pem,
    TokenFile,
    from_kubeconfig,
    in_cluster,
)

# As kubernetes-asyncio's REST client: requests in parallel per host (every watch holds
# one), environment proxies honoured, and a read buffer big enough for a large object.
CONNECTIONS = 100
READ_BUFFER = 2**21


class Transport(ABC):
    host: str

    @abstractmethod
    async def request(self, method: str, path: str, query: Sequence[tuple[str, str]],
                      headers: Mapping[str, str], body: bytes | None,
                      limit: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        """The response, its body unread; the caller releases it."""

    @abstractmethod
    async def close(self) -> None: ...

    def url(self, path: str, query: Sequence[tuple[str, str]]) -> str:
        return self.host + path + (f"?{urlencode(query)}" if query else "")


async def open_transport(kubeconfig: Path | None, context: str | None,
                         user_agent: str) -> Transport:
    """Credentials from the kubeconfig, or the pod's service account when None."""
    creds = in_cluster() if kubeconfig is None else from_kubeconfig(kubeconfig, context)
    if creds is None:
        assert kubeconfig is not None
        return await LibraryTransport.load(kubeconfig, context, user_agent)
    return SessionTransport(creds, user_agent)


class SessionTransport(Transport):
    def __init__(self, creds: Credentials, user_agent: str) -> None:
        self.host, self.where = creds.server, creds.where
        self._token = creds.token
        self._token_file = TokenFile(creds.token_file) if creds.token_file else None
        context = ssl_context(creds) if creds.tls else None
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS,
                                           ssl=context if context is not None else True),
            trust_env=True, read_bufsize=READ_BUFFER, headers={"User-Agent": user_agent})

    async def request(self, method: str, path: str, query: Sequence[tuple[str, str]],
                      headers: Mapping[str, str], body: bytes | None,
                      limit: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        token = self._token_file.current() if self._token_file else self._token
        sent = {**headers, "Authorization": f"Bearer {token}"} if token else headers
        return await self._session.request(method, self.url(path, query), data=body,
                                           headers=sent, timeout=limit)

    async def close(self) -> None:
        await self._session.close()


def ssl_context(creds: Credentials) -> ssl.SSLContext:
    """The CA given (only it), else the system's; the client certificate if any."""
    ca = creds.ca
    try:
        context = ssl.create_default_context(
            cafile=str(ca.path) if ca is not None and ca.path else None,
            cadata=ca.data.decode("ascii") if ca is not None and ca.data else None)
    except (ssl.SSLError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise CredentialsError(f"{creds.where}: {ca.origin if ca else 'CA'}: not a PEM "
                               f"certificate: {exc}") from None
    if creds.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if creds.client_cert is not None and creds.client_key is not None:
        try:
            with _file(creds.client_cert) as cert, _file(creds.client_key) as key:
                context.load_cert_chain(cert, key)
        except (ssl.SSLError, OSError) as exc:
            raise CredentialsError(f"{creds.where}: {creds.client_cert.origin} with "
                                   f"{creds.client_key.origin}: not a matching PEM "
                                   f"certificate and key: {exc}") from None
    return context


@contextlib.contextmanager
def _file(pem: Pem) -> Iterator[str]:
    """A path to the PEM (ssl loads certificates and keys only from files). Inline data
    goes to a memory-only file where Linux has them, so a key never touches a disk."""
    if pem.path is not None:
        yield str(pem.path)
        return
    assert pem.data is not None
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("remedyd-kube-credential")
        try:
            os.write(fd, pem.data)
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="remedyd-") as directory:
        path = Path(directory) / "pem"
        path.touch(0o600)
        path.write_bytes(pem.data)
        yield str(path)


class LibraryTransport(Transport):
    """kubernetes-asyncio's ApiClient: its auth (refreshed as it refreshes it), TLS and
    proxy settings, and its session; the body goes out as given (its REST layer would
    re-encode every JSON body with json.dumps)."""

    def __init__(self, api: Any) -> None:
        self._api = api
        self.host = str(api.configuration.host)

    @classmethod
    async def load(cls, kubeconfig: Path, context: str | None,
                   user_agent: str) -> LibraryTransport:
        from kubernetes_asyncio.client import ApiClient, Configuration
        from kubernetes_asyncio.config import load_kube_config

        config = Configuration()
        await load_kube_config(config_file=str(kubeconfig), context=context,
                               client_configuration=config, persist_config=False)
        api = ApiClient(config)
        api.user_agent = user_agent
        return cls(api)

    async def request(self, method: str, path: str, query: Sequence[tuple[str, str]],
                      headers: Mapping[str, str], body: bytes | None,
                      limit: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
        api = self._api
        sent = {**api.default_headers, **headers}
        params = list(query)
        await api.update_params_for_auth(sent, params, ["BearerToken"])
        rest = api.rest_client
        extra: dict[str, Any] = {"proxy": rest.proxy, "proxy_headers": rest.proxy_headers}
        if rest.server_hostname:
            extra["server_hostname"] = rest.server_hostname
        response: aiohttp.ClientResponse = await rest.pool_manager.request(
            method, self.url(path, params), data=body, headers=sent, timeout=limit,
            **extra)
        return response

    async def close(self) -> None:
        await self._api.close()
