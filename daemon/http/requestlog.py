"""What the HTTP server logs about its clients, bounded so that no client can flood the log."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

# Per kind of line; a client can make many bad requests a second.
LINES_PER_WINDOW = 10
WINDOW = 60.0
_SHOWN = 160  # characters of the parser's complaint; it may quote the request


class RateLimitedLog:
    """At most `limit` lines per `window` seconds, then one line counting those dropped."""

    def __init__(self, logger: logging.Logger, what: str, limit: int = LINES_PER_WINDOW,
                 window: float = WINDOW) -> None:
        self._logger = logger
        self._what = what
        self._limit = limit
        self._window = window
        self._ends: float | None = None
        self._logged = 0
        self._dropped = 0
        self._summary: asyncio.TimerHandle | None = None

    def log(self, level: int, message: str, *args: object, exc_info: Any = None) -> None:
        # The event loop's clock, so that fake time (looptime) drives the window in tests.
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._ends is None or now >= self._ends:
            self._close_window()
            self._ends = now + self._window
        if self._logged < self._limit:
            self._logged += 1
            self._logger.log(level, message, *args, exc_info=exc_info)
            return
        self._dropped += 1
        if self._summary is None:
            self._summary = loop.call_at(self._ends, self._close_window)

    def close(self) -> None:
        self._close_window()

    def _close_window(self) -> None:
        if self._summary is not None:
            self._summary.cancel()
            self._summary = None
        if self._dropped:
            self._logger.warning("suppressed %d more %s(s) in the last %.0fs", self._dropped,
                                 self._what, self._window)
        self._ends, self._logged, self._dropped = None, 0, 0


class ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger: a request the parser refuses is one short line, rate-limited.

    aiohttp logs each one with a full traceback at ERROR (at DEBUG for a first request
    in a non-HTTP protocol); that is a client's mistake, not the daemon's. Everything
    else (a real bug) keeps its traceback, rate-limited too.
    """

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__(logger)
        self.malformed = RateLimitedLog(logger, "malformed request")
        self.bugs = RateLimitedLog(logger, "request handler error")

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None,
            stack_info: bool = False, stacklevel: int = 1,
            extra: Mapping[str, object] | None = None, **kwargs: object) -> None:
        if isinstance(exc_info, HttpProcessingError):
            peer = args[0] if args else "?"
            complaint = (exc_info.message or type(exc_info).__name__).strip().splitlines()
            shown = complaint[0] if complaint else type(exc_info).__name__
            # repr: the complaint may quote raw request bytes (control characters, newlines).
            self.malformed.log(logging.DEBUG if level <= logging.DEBUG else logging.WARNING,
                               "malformed request from %s: %d %s", peer, exc_info.code,
                               repr(shown[:_SHOWN]))
        elif exc_info and level >= logging.ERROR:
            self.bugs.log(level, str(msg), *args, exc_info=exc_info)
        else:
            self.logger.log(level, msg, *args, exc_info=exc_info, stack_info=stack_info,
                            stacklevel=stacklevel, extra=extra)

    def close(self) -> None:
        self.malformed.close()
        self.bugs.close()
