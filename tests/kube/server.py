"""An aiohttp server that answers like kube-apiserver for the kinds in resources.py.

Run it for manual kubectl use:  python -m tests.kube.server --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import ssl
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.kube import resources
from tests.kube.controller import Controller
from tests.kube.eviction import check_eviction
from tests.kube.faults import Faults, Request, RequestLog
from tests.kube.patch import apply_patch
from tests.kube.resources import Kind
from tests.kube.selectors import Predicate, field_selector, label_selector
from tests.kube.status import (
    ApiError,
    forbidden,
    not_found,
    precondition_failed,
    success_body,
)
from tests.kube.store import Obj, Store
from tests.kube.watch import WatchOptions, serve_watch

NAMESPACES = resources.BY_PATH[("v1", "namespaces")]
NODES = resources.BY_PATH[("v1", "nodes")]
VERSION = {"major": "1", "minor": "37", "gitVersion": "v1.37.0-remedyd-testbed",
           "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
           "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.25", "compiler": "gc",
           "platform": "linux/amd64"}


@dataclass
class Target:
    kind: Kind
    namespace: str | None
    name: str | None
    subresource: str | None


@dataclass
class Testbed:
    """Everything a test reaches: objects, controller, faults, request log, watch options."""

    store: Store = field(default_factory=Store)
    faults: Faults = field(default_factory=Faults)
    log: RequestLog = field(default_factory=RequestLog)
    watch: WatchOptions = field(default_factory=WatchOptions)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    # Bearer token -> user name. A token not in here is 401 Unauthorized, as
    # kube-apiserver's token authenticators answer it.
    tokens: dict[str, str] = field(default_factory=dict)
    # False: a request with neither a known token nor a client certificate is 401.
    anonymous: bool = True

    def __post_init__(self) -> None:
        self.controller = Controller(self.store)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.store.create(NAMESPACES, None, {"metadata": {"name": ns, "labels": {
                "kubernetes.io/metadata.name": ns}}, "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"}})

    def settle(self) -> None:
        self.controller.reconcile()

    def kind(self, api_version: str, plural: str) -> Kind:
        return resources.BY_PATH[(api_version, plural)]

    def apply(self, obj: Obj) -> Obj:
        """Create (or replace) an object as a test fixture, then let the controller act."""
        plural = next(k for k in resources.KINDS if k.api_version == obj["apiVersion"]
                      and k.kind == obj["kind"])
        ns = obj.get("metadata", {}).get("namespace", "default") if plural.namespaced else None
        if ns is not None and self.store.find(NAMESPACES, None, ns) is None:
            self.store.create(NAMESPACES, None, {"metadata": {"name": ns}, "spec": {
                "finalizers": ["kubernetes"]}, "status": {"phase": "Active"}})
        found = self.store.find(plural, ns, obj["metadata"]["name"])
        if found is None:
            out = self.store.create(plural, ns, obj, keep_identity=True)
        else:
            out = self.store.update(plural, ns, obj["metadata"]["name"],
                                    dict(obj, metadata={**obj["metadata"],
                                                        "resourceVersion": None}))
            if "status" in obj and plural.status_subresource:
                out = self.store.update(plural, ns, obj["metadata"]["name"], obj,
                                        subresource="status")
        self.settle()
        return out

    def add_node(self, name: str, ready: bool = True) -> Obj:
        return self.apply({"apiVersion": "v1", "kind": "Node", "metadata": {
            "name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                       "reason": "KubeletReady" if ready else
                                       "KubeletNotReady"}]}})


def rbac_verb(method: str, named: bool, watch: bool) -> str:
    """The verb the authorizer checks for a request (what an RBAC rule must grant)."""
    if method == "GET":
        return "watch" if watch else "get" if named else "list"
    if method == "DELETE":
        return "delete" if named else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def parse_path(path: str) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        gv, rest = parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    if not rest:
        return None
    if len(rest) >= 3 and rest[0] == "namespaces":
        kind = resources.kind_for(gv, rest[2])
        if kind is not None and kind.namespaced and len(rest) <= 5:
            return Target(kind, rest[1], rest[3] if len(rest) > 3 else None,
                          rest[4] if len(rest) > 4 else None)
    kind = resources.kind_for(gv, rest[0])
    if kind is None or len(rest) > 3:
        return None
    return Target(kind, None, rest[1] if len(rest) > 1 else None,
                  rest[2] if len(rest) > 2 else None)


def _json_body(raw: bytes, content_type: str) -> Any:
    if "protobuf" in content_type:
        raise ApiError(415, 'the body of the request was in an unknown format - accepted media '
                       'types include: application/json, application/yaml',
                       "UnsupportedMediaType")
    try:
        return json.loads(raw) if raw else None
    except ValueError as exc:
        raise ApiError(400, f"the server rejected our request due to an error in our request: "
                       f"json parse error: {exc}", "BadRequest") from exc


def _list_item(obj: Obj) -> Obj:
    # A real list carries kind/apiVersion once, on the list, not on each item.
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


class KubeApiServer:
    def __init__(self, bed: Testbed | None = None) -> None:
        self.bed = bed or Testbed()
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._tls = False

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self.port}"

    async def start(self, port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context`: serve HTTPS; client certificates its CA verifies authenticate
        their CN as the user (ssl.CERT_OPTIONAL, as kube-apiserver asks for them)."""
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        self._tls = ssl_context is not None
        site = web.TCPSite(self._runner, "127.0.0.1", port, ssl_context=ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        self.bed.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------ dispatch
    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        entry = Request(request.method, request.path, dict(request.query),
                        request.headers.get("Content-Type", ""), raw,
                        user_agent=request.headers.get("User-Agent", ""))
        self.bed.log.append(entry)
        try:
            entry.user = self._authenticate(request)
            response = await self._handle(request, entry, raw)
        except ApiError as exc:
            response = self._error(exc)
        if not entry.is_watch or not entry.status:
            entry.status = response.status
        if entry.answer_delay:
            await asyncio.sleep(entry.answer_delay)
        return response

    def _authenticate(self, request: web.Request) -> str:
        """The user a request authenticates as, or 401 as kube-apiserver answers: a bearer
        token it does not know fails even when anonymous requests are allowed."""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            user = self.bed.tokens.get(header[len("Bearer "):])
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            return user
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        for rdn in (peer or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        if not self.bed.anonymous:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        return ""

    def _error(self, exc: ApiError) -> web.Response:
        # Like the real server, only a Status that names retryAfterSeconds gets the header:
        # client-go silently retries such 429s itself, and a PDB eviction 429 names none.
        retry = (exc.details or {}).get("retryAfterSeconds")
        headers = {"Retry-After": str(retry)} if retry else None
        return web.json_response(exc.body(), status=exc.code, headers=headers)

    async def _handle(self, request: web.Request, entry: Request,
                      raw: bytes) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        fault = self.bed.faults.take(request.method, path, entry.is_watch, entry.user_agent)
        if fault is not None and fault.action == "status":
            raise self._fault_error(fault.code, path, fault.retry_after, request.method,
                                    entry.is_watch)
        if fault is not None and fault.action == "slow" and not entry.is_watch:
            entry.answer_delay = fault.delay
        static = self._discovery(path)
        if static is not None:
            return web.json_response(static)
        target = parse_path(path)
        if target is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        if target.name is None:
            return await self._collection(request, entry, target, raw, fault)
        return await self._item(request, entry, target, raw)

    def _fault_error(self, code: int, path: str, retry_after: int, method: str = "GET",
                     watch: bool = False) -> ApiError:
        target = parse_path(path)
        if code == 403 and target is not None:
            return forbidden(rbac_verb(method, target.name is not None, watch), target.kind,
                             target.namespace, name=target.name,
                             subresource=target.subresource)
        if code == 410:
            return ApiError(410, "The provided continue parameter is too old to display a "
                            "consistent list result.", "Expired")
        if code == 429:
            return ApiError(429, "Too many requests, please try again later.", "TooManyRequests",
                            {"retryAfterSeconds": retry_after})
        return ApiError(code, "Internal error occurred: injected fault", None,
                        {"causes": [{"message": "injected fault"}]})

    def _discovery(self, path: str) -> dict[str, Any] | None:
        if path == "/version":
            return VERSION
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}]}
        if path == "/apis":
            groups = []
            for gv in resources.group_versions():
                group, version = gv.split("/")
                entry = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [entry], "preferredVersion": entry})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
        parts = [p for p in path.split("/") if p]
        if parts == ["api", "v1"]:
            return resources.resource_list("v1")
        if len(parts) == 3 and parts[0] == "apis":
            return resources.resource_list(f"{parts[1]}/{parts[2]}")
        if len(parts) == 2 and parts[0] == "apis":
            for gv in resources.group_versions():
                if gv.split("/")[0] == parts[1]:
                    v = {"groupVersion": gv, "version": gv.split("/")[1]}
                    return {"kind": "APIGroup", "apiVersion": "v1", "name": parts[1],
                            "versions": [v], "preferredVersion": v}
        return None

    # ---------------------------------------------------------- collection
    def _selector(self, request: web.Request, target: Target) -> Predicate:
        q = request.query
        labels = label_selector(q["labelSelector"]) if q.get("labelSelector") else None
        fields = field_selector(q["fieldSelector"]) if q.get("fieldSelector") else None
        ns = target.namespace

        def match(obj: Obj) -> bool:
            if ns is not None and obj["metadata"].get("namespace") != ns:
                return False
            return (labels is None or labels(obj)) and (fields is None or fields(obj))

        return match

    async def _collection(self, request: web.Request, entry: Request, target: Target, raw: bytes,
                          fault: Any) -> web.StreamResponse:
        kind = target.kind
        if request.method == "GET":
            match = self._selector(request, target)
            if entry.is_watch:
                return await serve_watch(request, self.bed.store, kind, match, self.bed.watch,
                                         fault, self.bed.closing, entry)
            return web.json_response(self._list(request, kind, match))
        if request.method == "POST":
            body = _json_body(raw, entry.content_type)
            if not isinstance(body, dict):
                raise ApiError(400, "the body of the request must be a JSON object")
            self._check_kind(kind, body)
            ns = target.namespace
            if kind.namespaced:
                if ns is None:
                    raise ApiError(405, "the server does not allow this method on the requested "
                                   "resource", "MethodNotAllowed")
                body_ns = (body.get("metadata") or {}).get("namespace")
                if body_ns and body_ns != ns:
                    raise ApiError(400, "the namespace of the provided object does not match "
                                   "the namespace sent on the request", "BadRequest")
                if self.bed.store.find(NAMESPACES, None, ns) is None:
                    raise not_found(NAMESPACES, ns)
            if kind.kind == "Pod" and "status" not in body:
                body["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            created = self.bed.store.create(kind, ns, body, dry_run=self._dry_run(request))
            self.bed.settle()
            return web.json_response(created, status=201)
        raise ApiError(405, "the server does not allow this method on the requested resource",
                       "MethodNotAllowed")

    def _list(self, request: web.Request, kind: Kind, match: Predicate) -> dict[str, Any]:
        store = self.bed.store
        # Not copied: the page is serialised before the handler yields (a big list is paged,
        # and a deep copy of every object for every page made listing quadratic).
        items = [o for o in store.list(kind, copies=False) if match(o)]
        start, meta = 0, {"resourceVersion": str(store.rv)}
        token = request.query.get("continue")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                token_rv, start = int(state["rv"]), int(state["start"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ApiError(400, "continue key is not valid: invalid token", "BadRequest") \
                    from exc
            if token_rv < store.compacted:
                # The one place a real server answers 410 as an HTTP status by design.
                raise ApiError(410, "The provided continue parameter is too old to display a "
                               "consistent list result. You can start a new list without the "
                               "continue parameter.", "Expired")
        limit = int(request.query.get("limit") or 0)
        end = start + limit if limit > 0 else len(items)
        if end < len(items):
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": store.rv, "start": end}).encode()).decode()
            meta["remainingItemCount"] = len(items) - end  # type: ignore[assignment]
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta,
                "items": [_list_item(o) for o in items[start:end]]}

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return request.query.get("dryRun") == "All"

    @staticmethod
    def _check_kind(kind: Kind, body: dict[str, Any]) -> None:
        if body.get("kind") not in (None, kind.kind) or body.get("apiVersion") not in (
                None, kind.api_version):
            raise ApiError(400, f"the API version in the data ({body.get('apiVersion')}) does "
                           f"not match the expected API version ({kind.api_version})",
                           "BadRequest")

    # ---------------------------------------------------------------- item
    async def _item(self, request: web.Request, entry: Request, target: Target,
                    raw: bytes) -> web.StreamResponse:
        kind, ns, name, sub = target.kind, target.namespace, target.name, target.subresource
        assert name is not None
        if kind.namespaced and ns is None:
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        store, dry = self.bed.store, self._dry_run(request)
        if sub == "eviction":
            return self._evict(request, target, raw, entry)
        if sub == "scale" and kind.kind in ("Deployment", "ReplicaSet"):
            return self._scale(request, target, raw, entry)
        if sub not in (None, "status") or (sub == "status" and not kind.status_subresource):
            raise ApiError(404, "the server could not find the requested resource", "NotFound",
                           {})
        method = request.method
        if method == "GET":
            if entry.is_watch:
                match = self._selector(request, target)
                return await serve_watch(request, store, kind,
                                         lambda o: match(o) and o["metadata"]["name"] == name,
                                         self.bed.watch, None, self.bed.closing, entry)
            return web.json_response(store.get(kind, ns, name))
        if method == "PUT":
            body = _json_body(raw, entry.content_type)
            if not isinstance(body, dict):
                raise ApiError(400, "the body of the request must be a JSON object")
            self._check_kind(kind, body)
            out = store.update(kind, ns, name, body, subresource=sub, dry_run=dry)
        elif method == "PATCH":
            out = self._patch(kind, ns, name, sub, entry, raw, dry)
        elif method == "DELETE":
            options = _json_body(raw, entry.content_type) or {}
            check_preconditions(kind, store.get(kind, ns, name), options)
            out = store.delete(kind, ns, name, dry_run=dry)
        else:
            raise ApiError(405, "the server does not allow this method on the requested "
                           "resource", "MethodNotAllowed")
        self.bed.settle()
        return web.json_response(out)

    def _patch(self, kind: Kind, ns: str | None, name: str, sub: str | None, entry: Request,
               raw: bytes, dry: bool) -> Obj:
        current = self.bed.store.get(kind, ns, name)
        patch = _json_body(raw, "")
        patched = apply_patch(entry.content_type, current, patch)
        meta = patched.setdefault("metadata", {})
        if meta.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            from tests.kube.status import conflict
            raise conflict(kind, name)
        return self.bed.store.update(kind, ns, name, patched, subresource=sub, dry_run=dry)

    def _evict(self, request: web.Request, target: Target, raw: bytes,
               entry: Request) -> web.Response:
        if request.method != "POST":
            raise ApiError(405, "the server does not allow this method on the requested "
                           "resource", "MethodNotAllowed")
        body = _json_body(raw, entry.content_type) or {}
        assert target.name is not None
        if (body.get("metadata") or {}).get("name") not in (None, target.name):
            raise ApiError(400, "name in URL does not match name in Eviction object",
                           "BadRequest")
        pod = self.bed.store.get(target.kind, target.namespace, target.name)
        check_eviction(self.bed.store, pod)
        # The eviction's delete goes through storage with the deleteOptions it carries.
        options = body.get("deleteOptions") or {}
        check_preconditions(target.kind, pod, options)
        dry = self._dry_run(request) or options.get("dryRun") == ["All"]
        self.bed.store.delete(target.kind, target.namespace, target.name, dry_run=dry)
        self.bed.settle()
        return web.json_response(success_body(201), status=201)

    def _scale(self, request: web.Request, target: Target, raw: bytes,
               entry: Request) -> web.Response:
        store, kind = self.bed.store, target.kind
        assert target.name is not None
        obj = store.get(kind, target.namespace, target.name)

        def scale_of(o: Obj) -> Obj:
            sel = (o["spec"].get("selector") or {}).get("matchLabels") or {}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {
                k: o["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp")},
                "spec": {"replicas": o["spec"].get("replicas", 1)},
                "status": {"replicas": (o.get("status") or {}).get("replicas", 0),
                           "selector": ",".join(f"{k}={v}" for k, v in sorted(sel.items()))}}

        if request.method == "GET":
            return web.json_response(scale_of(obj))
        body = _json_body(raw, entry.content_type)
        if request.method == "PATCH":
            new_scale = apply_patch(entry.content_type, scale_of(obj), body)
        elif request.method == "PUT" and isinstance(body, dict):
            new_scale = body
        else:
            raise ApiError(405, "the server does not allow this method on the requested "
                           "resource", "MethodNotAllowed")
        obj["spec"]["replicas"] = int((new_scale.get("spec") or {}).get("replicas", 0))
        obj["metadata"]["resourceVersion"] = (new_scale.get("metadata") or {}).get(
            "resourceVersion") or obj["metadata"]["resourceVersion"]
        out = store.update(kind, target.namespace, target.name, obj,
                           dry_run=self._dry_run(request))
        self.bed.settle()
        return web.json_response(scale_of(store.get(kind, target.namespace, target.name)
                                          if not self._dry_run(request) else out))


def check_preconditions(kind: Kind, current: Obj, options: Any) -> None:
    """DeleteOptions.preconditions (uid, resourceVersion) against the stored object."""
    pre = (options.get("preconditions") if isinstance(options, dict) else None) or {}
    meta = current["metadata"]
    for label, key in (("UID", "uid"), ("ResourceVersion", "resourceVersion")):
        if pre.get(key) not in (None, meta[key]):
            raise precondition_failed(kind, current, label, str(pre[key]), str(meta[key]))


def write_kubeconfig(path: str, url: str, namespace: str = "default") -> str:
    config = {"apiVersion": "v1", "kind": "Config", "current-context": "testbed",
              "clusters": [{"name": "testbed", "cluster": {"server": url}}],
              "users": [{"name": "testbed", "user": {}}],
              "contexts": [{"name": "testbed", "context": {"cluster": "testbed",
                                                           "user": "testbed",
                                                           "namespace": namespace}}]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--node", action="append", default=[], help="create a Ready Node")
    parser.add_argument("--kubeconfig", help="write a kubeconfig pointing here")
    args = parser.parse_args(argv)

    async def run() -> None:
        server = KubeApiServer()
        for node in args.node:
            server.bed.add_node(node)
        await server.start(args.port)
        if args.kubeconfig:
            write_kubeconfig(args.kubeconfig, server.url)
        print(f"kube test bed listening on {server.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())

if __name__ == "__main__":
    main()
