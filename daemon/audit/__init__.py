"""Tamper-evident audit log: hash-chained JSON Lines (stdlib only)."""

from .checkpoint import Checkpoint, CheckpointError, default_checkpoint_path, read_checkpoint
from .intents import open_intents
from .log import GENESIS_HASH, AuditLog, AuditUnavailable, Recovery
from .verify import VerifyResult, verify

__all__ = [
    "GENESIS_HASH",
    "AuditLog",
    "AuditUnavailable",
    "Checkpoint",
    "CheckpointError",
    "Recovery",
    "VerifyResult",
    "default_checkpoint_path",
    "open_intents",
    "read_checkpoint",
    "verify",
]
