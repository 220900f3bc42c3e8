"""Tamper-evident audit log: hash-chained JSON Lines (stdlib only)."""

from .log import GENESIS_HASH, AuditLog, AuditUnavailable, Recovery
from .verify import VerifyResult, verify

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "AuditUnavailable",
    "Recovery",
    "VerifyResult",
    "verify",
]
