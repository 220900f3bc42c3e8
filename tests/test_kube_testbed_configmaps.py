"""The test bed's ConfigMaps behave like kube-apiserver's: kubectl reads and writes them, a
stale resourceVersion is a 409, and the API's validation (config keys, 1 MiB) is a 422."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest_asyncio

from tests.kube.plugin import KubectlRunner
from tests.kube.server import KubeApiServer

PATH = "/api/v1/namespaces/default/configmaps"
CONFIG_MAP_YAML = """apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {mode: fast}
"""


@pytest_asyncio.fixture
async def http(kube: KubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=kube.url) as session:
        yield session


def config_map(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def test_kubectl_applies_and_reads_a_config_map(kube: KubeApiServer,
                                                      kubectl: KubectlRunner) -> None:
    applied = await kubectl("apply", "--validate=false", "-f", "-", stdin=CONFIG_MAP_YAML)
    assert applied.returncode == 0, applied.stderr
    got = json.loads((await kubectl("get", "configmap", "settings", "-o", "json")).stdout)
    assert (got["kind"], got["data"]) == ("ConfigMap", {"mode": "fast"})
    assert "generation" not in got["metadata"]  # ConfigMaps have no spec to count
    listed = json.loads((await kubectl("get", "cm", "-o", "json")).stdout)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["settings"]


async def test_a_stale_resource_version_is_a_409(http: aiohttp.ClientSession) -> None:
    async with http.post(PATH, json=config_map("state", {"a": "1"})) as r:
        assert r.status == 201
        created = await r.json()
    async with http.put(f"{PATH}/state", json=dict(created, data={"a": "2"})) as r:
        assert r.status == 200
    async with http.put(f"{PATH}/state", json=dict(created, data={"a": "3"})) as r:
        answer = await r.json()
        assert (r.status, answer["reason"]) == (409, "Conflict")
        assert answer["message"].startswith('Operation cannot be fulfilled on configmaps "state"')
    async with http.get(f"{PATH}/state") as r:
        assert (await r.json())["data"] == {"a": "2"}


async def test_validation_refuses_bad_keys_and_more_than_a_mebibyte(
        http: aiohttp.ClientSession) -> None:
    async with http.post(PATH, json=config_map("bad", {"no/slash": "x"})) as r:
        answer = await r.json()
        assert (r.status, answer["reason"]) == (422, "Invalid")
        assert answer["message"].startswith('ConfigMap "bad" is invalid: data[no/slash]: '
                                            'Invalid value: "no/slash": a valid config key')
    async with http.post(PATH, json=config_map("big", {"blob": "x" * (1024 * 1024)})) as r:
        answer = await r.json()
        assert (r.status, answer["reason"]) == (422, "Invalid")
        assert answer["message"] == ('ConfigMap "big" is invalid: []: Too long: may not be more '
                                     "than 1048576 bytes")
    async with http.post(PATH, json=config_map("fits", {"blob": "x" * 1000_000})) as r:
        assert r.status == 201
