"""The Kubernetes API as raw JSON: list and watch, nothing decoded into model classes.

Requests go through a Transport (daemon/clients/kubetransport.py): remedyd's own aiohttp
session for the common credentials, kubernetes-asyncio only for what only it implements
(exec plugins, auth providers); its typed models cost far more per object than the watch
hot path allows, and its EventsV1Api fails on the `eventTime: null` real controllers send.
Every failure comes out as one of three exceptions the informer tells apart: a Status
answer (KubeStatusError), a peer that cannot be reached (KubeUnavailable), or a watch
stream that broke (KubeStreamBroken).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from daemon import __version__
from daemon.clients.kubetransport import Transport, open_transport
from daemon.kube import watchdecode

# The table lives with the pure code (`remedyd rbac` needs no client); re-exported here.
from daemon.kube.resources import RESOURCES as RESOURCES
from daemon.kube.resources import WRITE_RESOURCES as WRITE_RESOURCES
from daemon.kube.resources import Resource as Resource
from daemon.kube.watchdecode import Trimmed

LIST_PAGE = 500
USER_AGENT = f"remedyd/{__version__}"
# List pages, answers and the watch lines daemon.kube.watchdecode does not take are
# decoded with msgspec into the same dicts and lists as the stdlib's json.loads, twice
# as fast (bench/kube_ingest.py), big integers kept exact.
decode_json = msgspec.json.Decoder().decode
# Content types of the three patch flavours the API server takes (no server-side apply).
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class KubeError(Exception):
    pass


class KubeStatusError(KubeError):
    """The API server answered with an error Status (HTTP, or an in-stream ERROR event)."""

    def __init__(self, verb: str, resource: str, code: int, reason: str, message: str,
                 retry_after: float | None = None,
                 causes: tuple[tuple[str, str], ...] = ()) -> None:
        self.verb, self.resource, self.code = verb, resource, code
        self.reason, self.message, self.retry_after = reason, message, retry_after
        # (reason, message) of the Status's details.causes: an eviction's 429 names the
        # PodDisruptionBudget only there.
        self.causes = causes
        super().__init__(self.describe())

    def describe(self) -> str:
        if self.code == 403:
            grant = "list/watch" if self.verb in ("list", "watch") else self.verb
            return (f"{self.verb} {self.resource}: forbidden (RBAC: grant {grant} on "
                    f"{self.resource}; `remedyd rbac` prints the ClusterRole): "
                    f"{self.message}")
        return f"{self.verb} {self.resource}: HTTP {self.code} {self.reason}: {self.message}"


class KubeUnavailable(KubeError):
    """The API server could not be reached or did not answer in time."""


class KubeStreamBroken(KubeError):
    """A watch stream broke mid-way: a torn line, a payload error, or silence (a stall)."""


def watch_timeout() -> int:
    """Seconds a watch asks the server to run for: random 5-10 min, as client-go does."""
    return random.randint(300, 600)


class KubeClient:
    """Credentials are loaded on first use (the loaders are async; building is not)."""

    def __init__(self, kubeconfig: Path | None, context: str | None,
                 request_timeout: float, identity: str | None = None) -> None:
        self._kubeconfig, self._context = kubeconfig, context
        # Which replica made a request, in the API server's audit log (leader election
        # runs several remedyd processes under one service account).
        self.user_agent = f"{USER_AGENT} ({identity})" if identity else USER_AGENT
        self._request_timeout = request_timeout
        self._transport: Transport | None = None
        self._lock = asyncio.Lock()
        self.peer: str = str(kubeconfig) if kubeconfig else "in-cluster"

    async def connect(self) -> Transport:
        async with self._lock:
            if self._transport is None:
                try:
                    # The User-Agent names remedyd in the API server's audit log (and lets
                    # the test bed check every request is one `remedyd rbac` grants).
                    self._transport = await open_transport(self._kubeconfig, self._context,
                                                           self.user_agent)
                except Exception as exc:  # kubernetes-asyncio's loaders raise bare ones
                    where = self._kubeconfig or "in-cluster service account"
                    raise KubeUnavailable(f"[kubernetes] {where}: cannot load credentials: "
                                          f"{exc}") from None
                self.peer = self._transport.host
            return self._transport

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()

    async def list(self, resource: Resource, namespace: str | None,
                   label_selector: str | None,
                   transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                   field_selector: str | None = None,
                   ) -> tuple[list[dict[str, Any]], str]:
        """Every object (all pages), each through `transform` as its page comes in, and the
        list's resourceVersion to watch from.

        Transforming page by page (the informer trims) keeps one page of raw objects in
        memory, not the whole list: 10,000 raw Pods are about 350 MB, which the allocator
        keeps after they are freed (bench/kube_footprint.py).
        """
        items: list[dict[str, Any]] = []
        query: dict[str, str] = {"limit": str(LIST_PAGE)}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        while True:
            timeout = aiohttp.ClientTimeout(total=self._request_timeout)
            async with self._request("list", resource, namespace, query, timeout) as resp:
                body = await self._json_body("list", resource, resp)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise KubeUnavailable(f"list {resource.plural}: not a list: {str(body)[:80]}")
            page, metadata = body["items"], body.get("metadata") or {}
            del body  # gone before the next page comes in
            items.extend(item if transform is None else transform(item)
                         for item in page if isinstance(item, dict))
            del page
            token = metadata.get("continue")
            if not token:
                return items, str(metadata.get("resourceVersion") or "")
            query["continue"] = token

    async def watch(self, resource: Resource, namespace: str | None,
                    label_selector: str | None, resource_version: str,
                    stall: float, timeout_seconds: int | None = None,
                    field_selector: str | None = None,
                    ) -> AsyncIterator[dict[str, Any] | Trimmed]:
        """Watch events as decoded JSON objects, until the server ends the watch; most
        are decoded trimmed already (daemon.kube.watchdecode)."""
        seconds = timeout_seconds or watch_timeout()
        query = {"watch": "true", "allowWatchBookmarks": "true",
                 "resourceVersion": resource_version, "timeoutSeconds": str(seconds)}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        # The server ends the watch; the margin only catches a server that does not.
        timeout = aiohttp.ClientTimeout(total=seconds + 30, sock_connect=self._request_timeout)
        async with self._request("watch", resource, namespace, query, timeout) as resp:
            if resp.status >= 300:
                await self._json_body("watch", resource, resp)
            buffer = b""
            while True:
                try:
                    async with asyncio.timeout(stall):
                        chunk = await resp.content.readany()
                except TimeoutError:
                    raise KubeStreamBroken(f"watch {resource.plural}: no event or bookmark "
                                           f"for {stall:g}s (stalled)") from None
                except aiohttp.ClientPayloadError as exc:
                    raise KubeStreamBroken(f"watch {resource.plural}: {exc}") from None
                except (aiohttp.ClientError, OSError) as exc:
                    raise KubeStreamBroken(f"watch {resource.plural}: {exc!r}") from None
                if not chunk:
                    if buffer.strip():
                        raise KubeStreamBroken(f"watch {resource.plural}: stream ended inside "
                                               f"a JSON line ({len(buffer)} bytes)")
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        yield _decode_line(resource, line)

    # -- single objects and writes (actions) ------------------------------------------------

    async def get(self, resource: Resource, namespace: str | None, name: str,
                  subresource: str | None = None) -> dict[str, Any] | None:
        """The object, or None when the server says 404."""
        try:
            body = await self._call("get", resource, namespace, name, subresource, "GET")
        except KubeStatusError as exc:
            if exc.code == 404:
                return None
            raise
        return body if isinstance(body, dict) else None

    async def patch(self, resource: Resource, namespace: str | None, name: str, body: Any,
                    content_type: str, subresource: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        """`body` is encoded as JSON, or sent as is when it is bytes already."""
        return await self._call("patch", resource, namespace, name, subresource, "PATCH",
                                body, content_type, dry_run)

    async def create(self, resource: Resource, namespace: str | None, body: dict[str, Any],
                     name: str | None = None, subresource: str | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
        """POST to the collection, or to an object's subresource (an Eviction)."""
        return await self._call("create", resource, namespace, name, subresource, "POST",
                                body, "application/json", dry_run)

    async def update(self, resource: Resource, namespace: str | None, name: str,
                     body: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; a stale metadata.resourceVersion in it is a 409."""
        return await self._call("update", resource, namespace, name, None, "PUT", body,
                                "application/json")

    async def delete(self, resource: Resource, namespace: str | None, name: str,
                     body: dict[str, Any] | None = None, dry_run: bool = False
                     ) -> dict[str, Any]:
        return await self._call("delete", resource, namespace, name, None, "DELETE",
                                body, "application/json" if body is not None else None,
                                dry_run)

    async def _call(self, verb: str, resource: Resource, namespace: str | None,
                    name: str | None, subresource: str | None, method: str,
                    body: Any = None, content_type: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        path = resource.path(namespace)
        if name is not None:
            path += f"/{name}" + (f"/{subresource}" if subresource else "")
        what = resource.plural + (f"/{subresource}" if subresource else "")
        query = [("dryRun", "All")] if dry_run else []
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        # Bytes go out as they are: a rollback sends kubectl's (Go's compact encoding).
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        transport = await self.connect()
        timeout = aiohttp.ClientTimeout(total=self._request_timeout)
        try:
            resp = await transport.request(method, path, query, headers, data, timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeUnavailable(f"{verb} {what} {name or ''}: {exc!r}".strip()) from None
        try:
            answer = await self._json_body(verb, _Named(resource, what), resp)
        finally:
            resp.release()
        if not isinstance(answer, dict):
            raise KubeUnavailable(f"{verb} {what}: not a JSON object: {str(answer)[:80]}")
        return answer

    def _request(self, verb: str, resource: Resource, namespace: str | None,
                 query: dict[str, str], timeout: aiohttp.ClientTimeout) -> _Response:
        return _Response(self, verb, resource, resource.path(namespace), query, timeout)

    @staticmethod
    async def _json_body(verb: str, resource: Resource | _Named,
                         resp: aiohttp.ClientResponse) -> Any:
        try:
            raw = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeUnavailable(f"{verb} {resource.plural}: {exc!r}") from None
        try:
            body = decode_json(raw) if raw else None
        except ValueError:
            body = None
        if resp.status >= 300:
            raise status_error(verb, resource.plural, resp.status, body,
                               resp.headers.get("Retry-After"))
        if body is None:
            raise KubeUnavailable(f"{verb} {resource.plural}: HTTP {resp.status}, not JSON")
        return body


@dataclass(frozen=True, slots=True)
class _Named:
    """A resource as error messages name it ("pods/eviction")."""

    resource: Resource
    plural: str


def status_error(verb: str, plural: str, code: int, body: Any,
                 retry_after: str | None = None) -> KubeStatusError:
    """A Status object (or whatever came instead) as a KubeStatusError."""
    status = body if isinstance(body, dict) else {}
    code = int(status.get("code") or code) if str(status.get("code") or code).isdigit() else code
    try:
        delay = float(retry_after) if retry_after else None
    except ValueError:
        delay = None
    details = status.get("details")
    causes = details.get("causes") if isinstance(details, dict) else None
    return KubeStatusError(verb, plural, code, str(status.get("reason") or ""),
                           str(status.get("message") or str(body)[:200]), delay,
                           tuple((str(c.get("reason") or ""), str(c.get("message") or ""))
                                 for c in causes or () if isinstance(c, dict)))


def _decode_line(resource: Resource, line: bytes) -> dict[str, Any] | Trimmed:
    fast = watchdecode.decoder(resource.kind)
    if fast is not None and (event := fast(line)) is not None:
        return event
    try:
        event = decode_json(line)
    except ValueError:
        raise KubeStreamBroken(f"watch {resource.plural}: not a JSON line: "
                               f"{line[:60]!r}") from None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise KubeStreamBroken(f"watch {resource.plural}: not a watch event: {line[:60]!r}")
    return event


class _Response:
    """`async with`: a raw aiohttp response, connection failures as KubeUnavailable."""

    def __init__(self, client: KubeClient, verb: str, resource: Resource, path: str,
                 query: dict[str, str], timeout: aiohttp.ClientTimeout) -> None:
        self._client, self._verb, self._resource = client, verb, resource
        self._path, self._query, self._timeout = path, query, timeout
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        transport = await self._client.connect()
        try:
            self._resp = await transport.request(
                "GET", self._path, list(self._query.items()), {"Accept": "application/json"},
                None, self._timeout)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise KubeUnavailable(f"{self._verb} {self._resource.plural}: {exc!r}") from None
        assert self._resp is not None
        return self._resp

    async def __aexit__(self, *exc: object) -> None:
        if self._resp is not None:
            self._resp.release()
