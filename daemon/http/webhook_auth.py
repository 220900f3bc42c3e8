"""Who may post to the webhooks: Alertmanager's credentials, a generic webhook's signature.

Secrets are compared with hmac.compare_digest, so the time an answer takes says
nothing about how much of a guess was right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

SIGNATURE_PREFIX = "sha256="
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What Alertmanager's http_config sends: `authorization` (a bearer token) or
    `basic_auth`. With neither configured, requests need none."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    @property
    def required(self) -> bool:
        return self.token is not None or self.username is not None

    def challenges(self) -> list[str]:
        """WWW-Authenticate values for a 401: the schemes that would be accepted."""
        found = []
        if self.token is not None:
            found.append('Bearer realm="remedyd"')
        if self.username is not None:
            found.append('Basic realm="remedyd", charset="UTF-8"')
        return found

    def allows(self, authorization: str | None) -> bool:
        if not self.required:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.token is not None:
            return _same(value.strip(), self.token)
        if scheme == "basic" and self.username is not None:
            return self._basic(value.strip())
        return False

    def _basic(self, value: str) -> bool:
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return False
        user, colon, password = decoded.partition(b":")
        # Both compared, whatever the first says: no early exit to time.
        user_ok = _same_bytes(user, (self.username or "").encode())
        password_ok = _same_bytes(password, (self.password or "").encode())
        return bool(colon) and user_ok and password_ok


def _same(given: str, expected: str) -> bool:
    return _same_bytes(given.encode("utf-8", "surrogateescape"), expected.encode())


def _same_bytes(given: bytes, expected: bytes) -> bool:
    return hmac.compare_digest(given, expected)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256 over "<timestamp>.<body>", as senders compute it."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


def well_formed(header: str) -> bool:
    digest = header[len(SIGNATURE_PREFIX):]
    return (header.startswith(SIGNATURE_PREFIX) and len(digest) == 64
            and all(c in _HEX for c in digest))


def signed_by(secret: str, timestamp: str, body: bytes, header: str) -> bool:
    """Whether `header` is the signature of (timestamp, body) under `secret`."""
    given = SIGNATURE_PREFIX + header[len(SIGNATURE_PREFIX):].lower()
    return hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode())
