"""The only module that talks to the Docker engine (through aiodocker)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from typing import Any

import aiodocker
import aiohttp

from daemon.core.errors import PermanentError, SourceError, TemporaryError

# Errors that mean "the engine is not reachable right now": reconnect, don't crash.
CONNECTION_ERRORS = (aiohttp.ClientError, OSError, asyncio.TimeoutError, aiodocker.DockerError)
# Event lines read off the socket but not yet handled. When full the reader waits, the
# engine skips us, and the source's replay notices.
LINE_BACKLOG = 65_536


class EventStreamError(SourceError):
    """The engine's event stream broke: a torn line or a connection dropped mid-stream."""


async def _read_lines(content: aiohttp.StreamReader,
                      out: asyncio.Queue[bytes | BaseException | None]) -> None:
    """The read path does nothing but move lines off the socket, so the engine never
    waits on us while we parse and decide."""
    try:
        while line := await content.readline():
            await out.put(line)
    except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: line too long
        await out.put(exc)
        return
    await out.put(None)


def parse_event_line(line: bytes, peer: str) -> dict[str, Any]:
    """One line of the engine's event stream as a dict; EventStreamError naming the peer
    when it is torn or not an event."""
    if not line.endswith(b"\n"):
        raise EventStreamError(f"docker engine at {peer}: the event stream ended mid-line "
                               f"({len(line)} bytes of a torn event)")
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise EventStreamError(f"docker engine at {peer}: unreadable event line ({exc}): "
                               f"{line[:120]!r}") from exc
    if not isinstance(raw, dict):
        raise EventStreamError(f"docker engine at {peer}: event line is not an object: "
                               f"{line[:120]!r}")
    return raw


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
        return rfc3339_to_ns(str(info.get("SystemTime", "")))

    async def list_containers(self) -> list[dict[str, Any]]:
        containers = await self.docker.containers.list(all=True)
        return [dict(c._container) for c in containers]  # the listing aiodocker keeps

    async def inspect(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.docker.containers.container(container_id).show()
        return result

    async def events(self, since_ns: int | None,
                     filters: dict[str, list[str]]) -> AsyncGenerator[dict[str, Any], None]:
        """Follow the engine's events from `since_ns` (inclusive) until the stream ends.

        Iterate it under `contextlib.aclosing`: closing it stops the reader and the
        request. A torn line or a connection dropped mid-stream raises EventStreamError.
        """
        params = {"filters": json.dumps(filters)}
        if since_ns is not None:
            params["since"] = _docker_timestamp(since_ns)
        # No total or read timeout: a quiet engine sends nothing for hours.
        timeout = aiohttp.ClientTimeout(connect=self._timeout, sock_connect=self._timeout)
        lines: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(LINE_BACKLOG)
        async with self.docker._query("events", params=params, timeout=timeout) as response:
            reader = asyncio.create_task(_read_lines(response.content, lines),
                                         name="docker-events-reader")
            try:
                while (line := await lines.get()) is not None:
                    if isinstance(line, BaseException):
                        raise EventStreamError(f"docker engine at {self.peer}: the event stream "
                                               f"broke ({type(line).__name__}: {line})") from line
                    yield parse_event_line(line, self.peer)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                response.close()

    async def replay(self, since_ns: int, until_ns: int,
                     filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        """The events the engine still holds between two times (its last 256), without
        following: what the stream should have delivered."""
        params = {"filters": json.dumps(filters), "since": _docker_timestamp(since_ns),
                  "until": _docker_timestamp(until_ns)}
        async with self.docker._query("events", params=params) as response:
            try:
                body = await response.read()
            finally:
                response.close()
        *complete, rest = body.split(b"\n")
        if rest.strip():
            raise EventStreamError(f"docker engine at {self.peer}: the event replay ended "
                                   f"mid-line ({len(rest)} bytes of a torn event)")
        return [parse_event_line(line + b"\n", self.peer) for line in complete if line.strip()]

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


def _docker_timestamp(ns: int) -> str:
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def rfc3339_to_ns(text: str) -> int:
    """'2026-11-27T03:31:05.123456789Z' -> ns since the epoch (Docker prints 9 digits)."""
    from datetime import datetime

    if not text:
        raise ValueError("engine did not report its time")
    main, _, rest = text.partition(".")
    digits = "".join(ch for ch in rest if ch.isdigit())
    zone = rest[len(digits):] if rest else text[19:]
    stamp = datetime.fromisoformat(main[:19] + (zone.replace("Z", "+00:00") or "+00:00"))
    return int(stamp.timestamp()) * 1_000_000_000 + int((digits + "000000000")[:9])


def state_time_ns(text: object) -> int:
    """A timestamp from `docker inspect` in ns; 0 when unset (Docker's zero time is year 1)
    or unreadable."""
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return 0
    try:
        return max(rfc3339_to_ns(text), 0)
    except ValueError:
        return 0
