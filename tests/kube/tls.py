"""A throwaway PKI for serving the test bed over TLS, made with the `openssl` CLI: a CA, a
server certificate for 127.0.0.1 and a client certificate (CN = the user, as
kube-apiserver reads it), EC P-256 keys, valid for a day."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

CLIENT_USER = "remedyd-client"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self) -> ssl.SSLContext:
        """HTTPS that asks for a client certificate and verifies it against the CA."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.ca))
        context.load_cert_chain(self.server_cert, self.server_key)
        context.verify_mode = ssl.CERT_OPTIONAL
        return context


def available() -> bool:
    return shutil.which("openssl") is not None


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = directory / "ca.key", directory / "ca.crt"
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1", "-subj", "/CN=testbed-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    server = _leaf(directory, "server", "/CN=127.0.0.1", ca, ca_key,
                   "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client = _leaf(directory, "client", f"/CN={CLIENT_USER}/O=system:masters", ca, ca_key,
                   "extendedKeyUsage=clientAuth\n")
    return Pki(ca, *server, *client)


def _leaf(directory: Path, name: str, subject: str, ca: Path, ca_key: Path,
          extensions: str) -> tuple[Path, Path]:
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext = directory / f"{name}.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   + extensions)
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", key, "-out", csr, "-subj", subject)
    _openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
             "-out", cert, "-days", "1", "-extfile", ext)
    return cert, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)
