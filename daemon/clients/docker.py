"""The only module that talks to the Docker engine (through aiodocker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiodocker
import aiohttp

from daemon.core.errors import PermanentError, SourceError, TemporaryError

# Errors that mean "the engine is not reachable right now": reconnect, don't crash.
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, aiodocker.DockerError)


class DockerClient:
    def __init__(self, url: str | None, request_timeout: float = 10.0) -> None:
        self.url = url
        self._timeout = request_timeout
        self._docker: aiodocker.Docker | None = None

    @property
    def docker(self) -> aiodocker.Docker:
        if self._docker is None:
            try:
                self._docker = aiodocker.Docker(
                    url=self.url, timeout=aiohttp.ClientTimeout(total=self._timeout))
            except (ValueError, OSError, aiodocker.DockerError) as exc:
                raise SourceError(f"docker engine at {self.url or 'DOCKER_HOST'}: {exc}") from exc
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
            self._docker = None

    async def __aenter__(self) -> DockerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def peer(self) -> str:
        return self.url or "DOCKER_HOST"

    async def system_time_ns(self) -> int:
        """The engine's clock, so `since` is right even when ours is skewed."""
        info = dict(await self.docker.system.info())
        return _rfc3339_to_ns(str(info.get("SystemTime", "")))

    async def list_containers(self) -> list[dict[str, Any]]:
        containers = await self.docker.containers.list(all=True)
        return [dict(c._container) for c in containers]  # the listing aiodocker keeps

    async def inspect(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.docker.containers.container(container_id).show()
        return result

    async def events(self, since_ns: int | None,
                     filters: dict[str, list[str]]) -> AsyncIterator[dict[str, Any]]:
        """Yield raw engine events until the stream ends; raise on a broken connection."""
        events = self.docker.events
        subscriber = events.subscribe(create_task=False)  # type: ignore[no-untyped-call]
        params: dict[str, Any] = {"filters": json.dumps(filters)}
        if since_ns is not None:
            params["since"] = f"{since_ns // 1_000_000_000}.{since_ns % 1_000_000_000:09d}"
        reader = asyncio.create_task(events.run(timeout=None, **params), name="docker-events")
        try:
            while True:
                item = await subscriber.get()
                if item is None:
                    break
                yield item
            await reader  # re-raises the reason the stream ended, if any
        finally:
            if not reader.done():
                reader.cancel()
                try:
                    await reader
                except (asyncio.CancelledError, *CONNECTION_ERRORS):
                    pass
            elif not reader.cancelled():
                reader.exception()  # retrieved, so asyncio does not warn about it

    async def container_call(self, container_id: str, verb: str, **params: Any) -> None:
        """restart/stop/kill/pause/unpause one container, mapping errors to retry semantics."""
        container = self.docker.containers.container(container_id)
        try:
            await getattr(container, verb)(**params)
        except aiodocker.DockerError as exc:
            if exc.status in (404, 409, 400):
                raise PermanentError(f"docker {verb} {container_id[:12]}: {exc.message}") from exc
            raise TemporaryError(f"docker {verb} {container_id[:12]}: {exc.message}", 1.0) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TemporaryError(f"docker {verb} {container_id[:12]}: {exc!r}", 1.0) from exc


def _rfc3339_to_ns(text: str) -> int:
    """'2026-11-27T03:31:05.123456789Z' -> ns since the epoch (Docker prints 9 digits)."""
    from datetime import datetime

    if not text:
        raise ValueError("engine did not report its time")
    main, _, rest = text.partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits):] if rest else text[19:]
    stamp = datetime.fromisoformat(main[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    return int(stamp.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])
