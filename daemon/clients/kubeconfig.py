"""Credentials for the Kubernetes API, read without kubernetes-asyncio for the forms nearly
every cluster uses: the pod's service account, and kubeconfig files with a server, its CA
(file or data) or insecure-skip-tls-verify, and a bearer token (or token file) and/or a
client certificate and key (files or data).

Importing kubernetes_asyncio's client package costs ~36 MiB of resident memory (its
package imports every model and API class); remedyd needs none of that to send a bearer
token or a client certificate. Anything else a kubeconfig can say (exec plugins,
auth-provider, basic auth, proxy-url, tls-server-name...) is left to kubernetes-asyncio:
`from_kubeconfig` returns None for it.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")

# What remedyd reads itself; `extensions` and `disable-compression` change nothing it does.
_USER_KEYS = frozenset({"token", "tokenFile", "client-certificate", "client-certificate-data",
                        "client-key", "client-key-data", "extensions"})
_CLUSTER_KEYS = frozenset({"server", "certificate-authority", "certificate-authority-data",
                           "insecure-skip-tls-verify", "extensions", "disable-compression"})


class CredentialsError(ValueError):
    """A kubeconfig or service account remedyd cannot use, naming the file and key."""


@dataclass(frozen=True, slots=True)
class Pem:
    """A certificate or key: inline data (decoded), or a file read when it is used."""

    origin: str  # the key it came from, for error messages
    data: bytes | None = None
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str  # scheme://host[:port], no trailing slash
    where: str  # what they were read from, for logs and errors
    ca: Pem | None = None
    insecure: bool = False
    client_cert: Pem | None = None
    client_key: Pem | None = None
    token: str | None = None
    # Read again whenever it changes: a projected service-account token rotates.
    token_file: Path | None = None

    @property
    def tls(self) -> bool:
        return self.server.startswith("https://")


def in_cluster(environ: Mapping[str, str] | None = None,
               directory: Path | None = None) -> Credentials:
    """The pod's service account, as client-go's rest.InClusterConfig reads it."""
    environ = os.environ if environ is None else environ
    directory = SERVICE_ACCOUNT if directory is None else directory
    host = environ.get("KUBERNETES_SERVICE_HOST", "")
    port = environ.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise CredentialsError("in-cluster: KUBERNETES_SERVICE_HOST and "
                               "KUBERNETES_SERVICE_PORT must both be set")
    token, ca = directory / "token", directory / "ca.crt"
    for path in (token, ca):
        if not path.is_file():
            raise CredentialsError(f"in-cluster: {path} does not exist")
    TokenFile(token).current()  # an unreadable or empty token fails now, not per request
    # An IPv6 address goes in brackets, as net.JoinHostPort does.
    joined = f"[{host}]:{port}" if ":" in host or "%" in host else f"{host}:{port}"
    return Credentials(server=f"https://{joined}", where="in-cluster service account",
                       ca=Pem(str(ca), path=ca), token_file=token)


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials | None:
    """The credentials of `context` (else the current-context) in the kubeconfig at `path`;
    None when they use something only kubernetes-asyncio implements."""
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"kubeconfig {path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise CredentialsError(f"kubeconfig {path}: not YAML: {exc}") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"kubeconfig {path}: not a mapping")
    name = context or config.get("current-context")
    if not name:
        raise CredentialsError(f"kubeconfig {path}: no current-context, and no "
                               "[kubernetes] context set")
    ctx = _named(config, "contexts", "context", str(name), path)
    cluster = _named(config, "clusters", "cluster", _field(ctx, "cluster", f"contexts[{name}]",
                                                             path), path)
    user_name = ctx.get("user")
    user = _named(config, "users", "user", str(user_name), path) if user_name else {}
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None
    return _credentials(path, str(name), cluster, user, str(user_name or ""))


def _credentials(path: Path, context: str, cluster: dict[str, Any], user: dict[str, Any],
                 user_name: str) -> Credentials:
    base = path.parent
    where = f"kubeconfig {path} (context {context})"
    server = cluster.get("server")
    if not isinstance(server, str) or not server.startswith(("https://", "http://")):
        raise CredentialsError(f"{where}: clusters[{context}].cluster.server must be an "
                               f"http(s) URL, got {server!r}")
    users = f"users[{user_name}].user"
    token_file = user.get("tokenFile")
    token = user.get("token")
    if token is not None and not isinstance(token, str):
        raise CredentialsError(f"{where}: {users}.token must be a string")
    if token_file is not None and not isinstance(token_file, str):
        raise CredentialsError(f"{where}: {users}.tokenFile must be a path")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise CredentialsError(f"{where}: clusters[{context}].cluster.insecure-skip-tls-verify "
                               "must be true or false")
    cert = _pem(user, "client-certificate", users, base, where)
    key = _pem(user, "client-key", users, base, where)
    if (cert is None) != (key is None):
        raise CredentialsError(f"{where}: {users} needs both client-certificate(-data) and "
                               "client-key(-data), or neither")
    return Credentials(
        server=server.rstrip("/"), where=where,
        ca=_pem(cluster, "certificate-authority", f"clusters[{context}].cluster", base, where),
        insecure=insecure, client_cert=cert, client_key=key,
        # An inline token wins over a file, as in client-go.
        token=token or None, token_file=None if token else _path(token_file, base))


def _named(config: dict[str, Any], section: str, inner: str, name: str, path: Path
           ) -> dict[str, Any]:
    entries = config.get(section) or []
    if not isinstance(entries, list):
        raise CredentialsError(f"kubeconfig {path}: {section} must be a list")
    for entry in entries:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(inner) or {}
            if not isinstance(value, dict):
                raise CredentialsError(f"kubeconfig {path}: {section}[{name}].{inner} must "
                                       "be a mapping")
            return value
    known = ", ".join(str(e.get("name")) for e in entries if isinstance(e, dict)) or "none"
    raise CredentialsError(f"kubeconfig {path}: no {section[:-1]} named {name!r} "
                           f"(known: {known})")


def _field(entry: dict[str, Any], key: str, where: str, path: Path) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        raise CredentialsError(f"kubeconfig {path}: {where}.{key} missing")
    return value


def _pem(entry: dict[str, Any], key: str, where_key: str, base: Path, where: str
         ) -> Pem | None:
    data = entry.get(f"{key}-data")
    if data:
        origin = f"{where_key}.{key}-data"
        try:
            return Pem(origin, data=base64.b64decode(str(data), validate=True))
        except (binascii.Error, ValueError):
            raise CredentialsError(f"{where}: {origin} is not base64") from None
    file = _path(entry.get(key), base)
    if file is None:
        return None
    if not file.is_file():
        raise CredentialsError(f"{where}: {where_key}.{key}: {file} does not exist")
    return Pem(f"{where_key}.{key} ({file})", path=file)


def _path(value: Any, base: Path) -> Path | None:
    # Relative paths in a kubeconfig are relative to the file itself.
    return base / os.path.expanduser(value) if isinstance(value, str) and value else None


class TokenFile:
    """A bearer token read from a file again whenever the file changes (kubelet rotates a
    projected service-account token by swapping a symlink: a new inode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._token = ""

    def current(self) -> str:
        try:
            st = self.path.stat()
            seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            if seen == self._seen:
                return self._token
            token = self.path.read_text(encoding="utf-8").strip()
            problem = "empty"
        except (OSError, UnicodeDecodeError) as exc:
            token, problem = "", str(exc)
        if token:
            self._token, self._seen = token, seen
        elif not self._token:
            raise CredentialsError(f"token file {self.path}: {problem}")
        # Else a rotation caught half-way: the last token read is still valid for a
        # while, as client-go's cached token source keeps it.
        return self._token
