"""Outbound HTTP (notifications): one shared session, created on first use."""

from __future__ import annotations

import aiohttp

from daemon import __version__


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
