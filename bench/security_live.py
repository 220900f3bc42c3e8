"""Live security finding latency: containers started with `--cap-add SYS_ADMIN` on a real
dockerd -> remedyd's CIS-DOCKER-5-3 finding, notified to a webhook receiver here.

    .venv/bin/python bench/security_live.py [--containers 40] [--stagger 0.25]
                                            [--hardened] [--rules pack|one]

Per container, from dockerd's `timeNano` of its `start` event (and of its `create`,
the first moment the engine holds the offending configuration) to:
- the notification of its CIS-DOCKER-5-3 finding arriving at the receiver (wall clock;
  dockerd stamps timeNano from the same host clock);
- the `time` of remedyd's audit `decision` record of that finding.
The posture source inspects a container on `create` and again on `start`, so a finding
can be decided before `start`: start -> finding is then negative, and reported as is.
dockerd answers no inspect of a container while it starts it (measured: an inspect sent
10 ms into a 320 ms start returns with the start), so when the create inspect arrives
after the start began, the finding can only follow the start.

Setup: remedyd (bench/_daemon.py) with the Docker source and the bundled Docker security
pack (`--rules pack`, rules/security.yaml: a container as `docker run --cap-add
SYS_ADMIN IMAGE` starts fails 8 checks, so 8 notifications each) or that check alone
(`--rules one`); `--hardened` gives the containers the hardened configuration of
tests/fixtures/security/docker/hardened.json, so SYS_ADMIN is their only finding.
Containers (`--network none`) are started one after another, `--stagger` apart, and
removed at the end. Uses $DOCKER_HOST if it answers, else scripts/stack's dockerd (started
here, and stopped again, only if nothing answers). Bounded: every wait has a timeout;
traffic stays on unix sockets and loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import _common
from _common import (
    IMAGE,
    ROOT,
    DockerAPI,
    dockerd,
    remove_all,
    result_header,
    summary,
    write_results,
)
from _daemon import Remedyd, free_port
from aiohttp import web

CHECK = "CIS-DOCKER-5-3"
RULE = "docker-capabilities-added"
LABEL = "remedyd-bench-security"
PACK = ROOT / "rules" / "security.yaml"
PINNED = "remedyd-test/busybox:1.36.1"  # a fixed tag of the test image (DOCKER-IMG-LATEST)
MIB = 2**20
NS = 1_000_000_000


def container_config(run_id: str, hardened: bool) -> dict[str, Any]:
    """`docker run --network none --cap-add SYS_ADMIN IMAGE sleep 300`, or the hardened
    container with SYS_ADMIN added."""
    host: dict[str, Any] = {"NetworkMode": "none", "CapAdd": ["SYS_ADMIN"]}
    config: dict[str, Any] = {"Image": PINNED if hardened else IMAGE, "Cmd": ["sleep", "300"],
                              "Labels": {LABEL: run_id}, "StopTimeout": 1}
    if hardened:
        host.update(CapDrop=["ALL"], ReadonlyRootfs=True, Memory=64 * MIB, PidsLimit=64,
                    SecurityOpt=["no-new-privileges"], Tmpfs={"/tmp": ""})
        config.update(User="1000:1000", Healthcheck={"Test": ["CMD-SHELL", "true"],
                                                      "Interval": 30 * NS})
    return {**config, "HostConfig": host}


def rules(which: str) -> str:
    """The pack, or its capabilities check alone."""
    text = PACK.read_text()
    if which == "pack":
        return text
    head, _, body = text.partition("rules:\n")
    blocks = ["  - name:" + b for b in body.split("  - name:") if b.strip()]
    return head + "rules:\n" + "".join(b for b in blocks if b.startswith(f"  - name: {RULE}\n"))


class Receiver:
    """The webhook: when each (container id, check) notification arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived: dict[tuple[str, str], int] = {}
        self.all_in = asyncio.Event()

    async def hook(self, request: web.Request) -> web.Response:
        at = time.time_ns()
        body = await request.json()
        check = str((body.get("security") or {}).get("id") or "")
        target = str((body.get("target") or {}).get("id") or "")
        self.arrived.setdefault((target, check), at)
        if sum(1 for _, c in self.arrived if c == CHECK) >= self.expected:
            self.all_in.set()
        return web.Response(text="ok")


class Engine:
    """The `create` and `start` timeNano of every container of this run, from /events."""

    def __init__(self, api: DockerAPI, run_id: str) -> None:
        self.api = api
        self.run_id = run_id
        self.seen: dict[tuple[str, str], int] = {}
        self.subscribed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def follow(self) -> None:
        filters = {"type": ["container"], "event": ["create", "start"],
                   "label": [f"{LABEL}={self.run_id}"]}
        async for raw in self.api.events(filters):
            if not raw:
                self.subscribed.set()
                continue
            self.seen.setdefault((str(raw.get("id") or ""), str(raw.get("Action") or "")),
                                 int(raw.get("timeNano") or 0))


def audit_decisions(daemon: Remedyd) -> dict[str, int]:
    """Container id -> the time (ns) of remedyd's first `decision` record of RULE on it."""
    found: dict[str, int] = {}
    for record in daemon.audit():
        if record.get("kind") != "decision" or record.get("rule") != RULE:
            continue
        target = record.get("target") or {}
        when = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
        ns = int(when.timestamp()) * NS + when.microsecond * 1000
        found.setdefault(str(target.get("id") or ""), ns)
    return found


async def bench(args: argparse.Namespace, docker_host: str, workdir: Path) -> dict[str, Any]:
    api = DockerAPI(docker_host)
    run_id = f"{os.getpid()}-{time.time_ns()}"
    receiver = Receiver(args.containers)
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    engine = Engine(api, run_id)
    engine.task = asyncio.create_task(engine.follow())
    daemon = Remedyd(workdir, docker_host, rules=rules(args.rules), extra={
        "notify": {"webhook_url": f"http://127.0.0.1:{hook_port}/hook",
                   "max_notifications": 100_000},
        "security": {"enabled": True, "baseline": str(workdir / "baseline.json")}})
    ids: list[str] = []
    try:
        await asyncio.wait_for(engine.subscribed.wait(), 10)
        await remove_all(api, await api.list_ids(LABEL))  # left by an interrupted run
        if args.hardened:
            repository, _, tag = PINNED.rpartition(":")
            await api.call("POST", f"/images/{IMAGE}/tag", params={"repo": repository,
                                                                   "tag": tag})
        ready_s = await asyncio.to_thread(daemon.start)
        config = container_config(run_id, args.hardened)
        began = time.monotonic()
        for i in range(args.containers):
            ids.append(await api.run(f"sec-bench-{run_id}-{i}", config))
            await asyncio.sleep(args.stagger)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver.all_in.wait(), args.timeout)
        elapsed = time.monotonic() - began
        decided = audit_decisions(daemon)
        from_start, from_create, decision_from_start = [], [], []
        for cid in ids:
            start, create = engine.seen.get((cid, "start")), engine.seen.get((cid, "create"))
            arrived = receiver.arrived.get((cid, CHECK))
            if arrived is None or start is None or create is None:
                continue
            from_start.append((arrived - start) / 1e6)
            from_create.append((arrived - create) / 1e6)
            if cid in decided:
                decision_from_start.append((decided[cid] - start) / 1e6)
        per_container = {c for cid, c in receiver.arrived if cid in ids}
        return {
            "containers": len(ids), "rules": args.rules, "hardened": args.hardened,
            "stagger_s": args.stagger, "ready_s": round(ready_s, 3),
            "found": len(from_start), "elapsed_s": round(elapsed, 3),
            # Decided on the `create` inspect: notified before the container started.
            "notified_before_start": sum(1 for ms in from_start if ms < 0),
            "checks_notified": sorted(per_container),
            "notifications": sum(1 for cid, _ in receiver.arrived if cid in ids),
            "start_to_notification_ms": summary(from_start),
            "create_to_notification_ms": summary(from_create),
            "start_to_decision_record_ms": summary(decision_from_start),
        }
    finally:
        daemon.stop()
        engine.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await engine.task
        await remove_all(api, ids)
        await api.close()
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=40)
    parser.add_argument("--stagger", type=float, default=0.25,
                        help="seconds between two containers' starts")
    parser.add_argument("--hardened", action="store_true",
                        help="containers hardened but for SYS_ADMIN (one finding each)")
    parser.add_argument("--rules", choices=("pack", "one"), default="pack")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for the last finding")
    parser.add_argument("--out", default="security_live")
    args = parser.parse_args()
    if not 1 <= args.containers <= 500:
        parser.error("--containers: 1 to 500")
    load = Path("/proc/loadavg").read_text().split()[:3]
    with dockerd() as (docker_host, _), tempfile.TemporaryDirectory(
            prefix="security-live-") as workdir:
        data = asyncio.run(bench(args, docker_host, Path(workdir)))
    data = {**result_header(args.out, load), "command": " ".join(sys.argv), **data}
    path = write_results(args.out, data)
    s, c, d = (data["start_to_notification_ms"], data["create_to_notification_ms"],
               data["start_to_decision_record_ms"])
    print(f"{data['found']}/{data['containers']} containers' {CHECK} findings notified "
          f"({data['notifications']} notifications, checks {', '.join(data['checks_notified'])}); "
          f"{data['notified_before_start']} before the container's start")
    print(f"start  -> notification: p50 {s.get('p50')} ms, p99 {s.get('p99')} ms, "
          f"max {s.get('max')}")
    print(f"create -> notification: p50 {c.get('p50')} ms, p99 {c.get('p99')} ms, "
          f"max {c.get('max')}")
    print(f"start  -> decision record: p50 {d.get('p50')} ms, p99 {d.get('p99')} ms")
    print(f"results: {path}")


if __name__ == "__main__":
    assert _common  # puts the repository on sys.path
    main()
