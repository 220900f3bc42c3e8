"""Outbound HTTP (notifications): one shared session, owned by the daemon's exit stack."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from daemon import __version__


class HttpError(Exception):
    """The peer could not be reached or did not answer in time; the message names it."""


class HttpClient:
    """Created lazily on first use; once closed it stays closed, so a request made during
    shutdown fails loudly instead of opening a session nobody will close."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise HttpError("the HTTP client is closed (the daemon is shutting down)")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"remedyd/{__version__}"})
        return self._session

    async def close(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def post_json(self, url: str, body: Any, time_limit: float,
                        headers: Mapping[str, str] | None = None) -> int:
        """POST a JSON body; return the status code, or raise HttpError naming the peer."""
        try:
            async with self.session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=time_limit),
                headers=dict(headers or {})
            ) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise HttpError(f"{url}: {type(exc).__name__}: {detail}") from exc

    async def post_raw(self, url: str, body: bytes, headers: Mapping[str, str],
                       time_limit: float, max_answer: int = 1 << 20,
                       ) -> tuple[int, bytes, Mapping[str, str]]:
        """POST `body` as it is; the answer's status, body (at most `max_answer` bytes)
        and headers, or HttpError naming the peer."""
        try:
            async with self.session.post(
                url, data=body, headers=dict(headers),
                timeout=aiohttp.ClientTimeout(total=time_limit), allow_redirects=False,
            ) as response:
                answer = await response.content.read(max_answer)
                return response.status, answer, dict(response.headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise HttpError(f"{url}: {type(exc).__name__}: {detail}") from exc
