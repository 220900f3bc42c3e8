"""Outbound HTTP (notifications): one shared session, created on first use."""

from __future__ import annotations

from typing import Any

import aiohttp

from daemon import __version__


class HttpError(Exception):
    """The peer could not be reached or did not answer in time; the message names it."""


class HttpClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"remedyd/{__version__}"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post_json(self, url: str, body: Any, time_limit: float) -> int:
        """POST a JSON body; return the status code, or raise HttpError naming the peer."""
        try:
            async with self.session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=time_limit)
            ) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            detail = str(exc) or type(exc).__name__
            raise HttpError(f"{url}: {type(exc).__name__}: {detail}") from exc
