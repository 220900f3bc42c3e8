"""A big cluster's first list is trimmed page by page: remedyd never holds every raw object
at once (10,000 raw Pods are about 350 MB, and the allocator keeps what it once held)."""

from __future__ import annotations

import asyncio
import copy
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from daemon.clients import kubernetes as kubernetes_client
from daemon.clients.kubernetes import LIST_PAGE, KubeClient
from daemon.sources.kubernetes import KubernetesSource
from daemon.telemetry.metrics import Metrics
from tests.kube.controller import PODS
from tests.kube.server import KubeApiServer

FIXTURE = Path(__file__).parent / "kube" / "fixtures" / "pod.json"
PAGES = 4


def add_pods(kube: KubeApiServer, count: int) -> dict[str, Any]:
    """`count` copies of the fixture Pod in the test bed; the fixture."""
    base: dict[str, Any] = json.loads(FIXTURE.read_text())
    base["metadata"]["namespace"] = "default"
    for i in range(count):
        pod = copy.deepcopy(base)
        pod["metadata"].update(name=f"pod-{i:05d}", uid=f"uid-{i:05d}")
        kube.bed.store.create(PODS, "default", pod, keep_identity=True)
    return base


async def list_traced(kubeconfig: Path) -> tuple[KubernetesSource, int, int]:
    """A pods source run until it has listed; bytes tracemalloc saw held then, and at the
    peak."""
    client = KubeClient(kubeconfig, None, 30.0)
    source = KubernetesSource(client, lambda event: None, Metrics(CollectorRegistry()),
                              ["pods"])
    await client.connect()
    tracemalloc.start()
    task = asyncio.create_task(source.run())
    try:
        for _ in range(300):  # bounded: 30 s
            if source.synced:
                break
            await asyncio.sleep(0.1)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    return source, held, peak


async def test_listing_many_pods_holds_one_page_of_raw_objects_not_the_whole_list(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    base = add_pods(kube, PAGES * LIST_PAGE)
    raw_page = len(json.dumps(base)) * LIST_PAGE
    source, _, peak = await list_traced(kubeconfig)
    assert source.synced and len(source.cache) == PAGES * LIST_PAGE
    # Decoded, a page of these Pods takes about 6 times its JSON; the whole list held raw
    # would take PAGES times that.
    assert peak < 6 * raw_page * 2.5, f"{peak / 2**20:.0f} MiB traced at the peak"


async def test_the_listed_objects_are_cached_as_trimmed_not_copied_again(
        kube: KubeApiServer, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Trimming the listed items a second time when caching them copied the whole kind while
    the first copies were alive: 10,000 Pods peaked ~40 MiB higher, and the allocator
    returned little of it (bench/kube_footprint.py)."""
    add_pods(kube, 1_000)
    # Small pages, so that one page's raw objects weigh little next to the cache.
    monkeypatch.setattr(kubernetes_client, "LIST_PAGE", 20)
    source, held, peak = await list_traced(kubeconfig)
    assert source.synced and len(source.cache) == 1_000
    # What is held is mostly the cache; a second copy of it would double the peak.
    assert peak - held < 0.5 * held, f"{held / 2**20:.1f} MiB held, peak {peak / 2**20:.1f} MiB"
