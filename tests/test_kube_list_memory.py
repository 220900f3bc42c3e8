"""A big cluster's first list is trimmed page by page: remedyd never holds every raw object
at once (10,000 raw Pods are about 350 MB, and the allocator keeps what it once held)."""

from __future__ import annotations

import asyncio
import copy
import json
import tracemalloc
from pathlib import Path

from prometheus_client import CollectorRegistry

from daemon.clients.kubernetes import LIST_PAGE, KubeClient
from daemon.sources.kubernetes import KubernetesSource
from daemon.telemetry.metrics import Metrics
from tests.kube.controller import PODS
from tests.kube.server import KubeApiServer

FIXTURE = Path(__file__).parent / "kube" / "fixtures" / "pod.json"
PAGES = 4


async def test_listing_many_pods_holds_one_page_of_raw_objects_not_the_whole_list(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    base = json.loads(FIXTURE.read_text())
    base["metadata"]["namespace"] = "default"
    for i in range(PAGES * LIST_PAGE):
        pod = copy.deepcopy(base)
        pod["metadata"].update(name=f"pod-{i:05d}", uid=f"uid-{i:05d}")
        kube.bed.store.create(PODS, "default", pod, keep_identity=True)
    raw_page = len(json.dumps(base)) * LIST_PAGE
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
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
    assert source.synced and len(source.cache) == PAGES * LIST_PAGE
    # Decoded, a page of these Pods takes about 6 times its JSON; the whole list held raw
    # would take PAGES times that.
    assert peak < 6 * raw_page * 2.5, f"{peak / 2**20:.0f} MiB traced at the peak"
