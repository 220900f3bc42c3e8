"""The exception hierarchy: callers decide by type whether to retry, report or stop."""

from __future__ import annotations


class RemedydError(Exception):
    """Base of every error remedyd raises on purpose."""


class ConfigError(RemedydError):
    """The configuration file or environment is invalid; the message names the key."""


class RuleError(RemedydError):
    """A rule file is invalid; the message names the file and, where known, the rule."""

    def __init__(self, file: str, message: str, rule: str | None = None) -> None:
        self.file = file
        self.rule = rule
        self.detail = message
        where = f"{file}: rule {rule!r}" if rule else file
        super().__init__(f"{where}: {message}")


class SourceError(RemedydError):
    """A source lost its peer; it reconnects on its own."""


class ActionError(RemedydError):
    """An action failed."""


class PermanentError(ActionError):
    """Retrying cannot help (the target is gone, the request is invalid)."""


class TemporaryError(ActionError):
    """Retrying may help, after at least `delay` seconds.

    `backoff=False`: ask again after exactly `delay`, however many attempts failed (a
    PodDisruptionBudget blocking an eviction is polled at a steady pace, as `kubectl
    drain` does, not ever more slowly).
    """

    def __init__(self, message: str, delay: float = 0.0, backoff: bool = True) -> None:
        super().__init__(message)
        self.delay = delay
        self.backoff = backoff
