"""The test bed's request log says when each request came in and when each watch event went
out, so a benchmark can time remedyd from an event it was sent to the request it made."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from tests.kube.server import KubeApiServer

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "web:1"}]}}


async def test_the_log_times_the_events_a_watch_wrote_and_the_requests_that_came_in(
        kube: KubeApiServer) -> None:
    created = kube.bed.apply(POD)
    watch = {"watch": "true", "resourceVersion": created["metadata"]["resourceVersion"]}
    async with aiohttp.ClientSession(base_url=kube.url) as http, http.get(
            "/api/v1/pods", params=watch, timeout=aiohttp.ClientTimeout(total=10)) as stream:
        await kube.bed.log.wait_for("GET", "/api/v1/pods$", watch=True)
        before = time.monotonic()
        changed = kube.bed.controller.set_ready("default", "p", False)
        version = changed["metadata"]["resourceVersion"]
        line = await asyncio.wait_for(stream.content.readline(), 5)
        assert json.loads(line)["object"]["metadata"]["resourceVersion"] == version
        written = kube.bed.log.sent_at("/api/v1/pods$", "MODIFIED", version)
        assert written is not None and before <= written <= time.monotonic()
        async with http.patch("/api/v1/namespaces/default/pods/p",
                              json={"metadata": {"labels": {"a": "b"}}},
                              headers={"Content-Type": "application/merge-patch+json"}
                              ) as answer:
            assert answer.status == 200
    [patch] = kube.bed.log.find("PATCH", "/pods/p$")
    assert written < patch.received_at <= time.monotonic()
    assert kube.bed.log.sent_at("/api/v1/pods$", "MODIFIED", "no-such-version") is None
