"""Leader election over a Lease: the decision logic on a fake clock, and real remedyd
replicas against one test bed (only the leader writes; a leader that cannot renew stops
before its lease can expire elsewhere; node agents act on their own node's pods and one
of them on workloads)."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio

from daemon.kube.leader import Election, Timings, micro_time
from tests.harness import DaemonProcess, wait_for, write_config
from tests.kube.faults import Request
from tests.kube.server import KubeApiServer
from tests.test_kube_rollback import deployment, image, pods, until

LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/default/leases/remedyd"
TIMINGS = Timings(lease_duration=15.0, renew_deadline=10.0, retry_period=2.0)
WALL = 1_800_000_000.0


def lease(holder: str, renew: str = "2020-01-01T00:00:00.000000Z", version: str = "7",
          transitions: int = 0, duration: int = 15) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "remedyd", "namespace": "default", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": duration,
                     "acquireTime": "2020-01-01T00:00:00.000000Z", "renewTime": renew,
                     "leaseTransitions": transitions}}


def election(identity: str = "b") -> Election:
    return Election(identity, "remedyd", "default", TIMINGS)


# -- the decision logic, on a fake clock ----------------------------------------------------

def test_no_lease_is_created_and_held_until_the_renew_deadline() -> None:
    e = election("a")
    e.observe(None, now=100.0)
    write = e.next_write(WALL, now=100.0)
    assert write is not None and write.verb == "create" and write.acquiring
    spec = write.body["spec"]
    assert spec == {"holderIdentity": "a", "leaseDurationSeconds": 15,
                    "acquireTime": micro_time(WALL), "renewTime": micro_time(WALL),
                    "leaseTransitions": 0}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", spec["renewTime"])
    assert "resourceVersion" not in write.body["metadata"]
    e.written({**write.body, "metadata": {**write.body["metadata"], "resourceVersion": "1"}},
              sent_at=100.0)
    assert e.leading(109.9) and not e.leading(110.0)  # renew_deadline after it was sent
    renew = e.next_write(WALL + 2, now=102.0)
    assert renew is not None and renew.verb == "update" and not renew.acquiring
    assert renew.body["metadata"]["resourceVersion"] == "1"  # a 409 if someone wrote since
    assert renew.body["spec"]["acquireTime"] == micro_time(WALL)  # kept while renewing
    assert renew.body["spec"]["renewTime"] == micro_time(WALL + 2)
    assert renew.body["spec"]["leaseTransitions"] == 0


def test_expiry_is_judged_by_when_this_replica_saw_the_lease_change() -> None:
    # The holder's renewTime is years old by our wall clock (its clock is wrong, or ours):
    # that says nothing; only a record unchanged for lease_duration of *our* time does.
    e = election("b")
    e.observe(lease("a", renew="2020-01-01T00:00:00.000000Z"), now=1000.0)
    assert e.next_write(WALL, now=1000.0) is None
    assert e.next_write(WALL, now=1014.9) is None
    # Renewed (the record changed): the clock starts again from when we saw it.
    e.observe(lease("a", renew="2020-01-01T00:00:09.000000Z", version="8"), now=1010.0)
    assert not e.expired(1024.9) and e.next_write(WALL, now=1024.9) is None
    # Read again unchanged: no restart.
    e.observe(lease("a", renew="2020-01-01T00:00:09.000000Z", version="8"), now=1020.0)
    assert e.expired(1025.0)
    take = e.next_write(WALL, now=1025.0)
    assert take is not None and take.verb == "update" and take.acquiring
    assert take.body["spec"]["holderIdentity"] == "b"
    assert take.body["spec"]["leaseTransitions"] == 1
    assert take.body["spec"]["acquireTime"] == micro_time(WALL)
    assert take.body["metadata"]["resourceVersion"] == "8"


def test_a_renew_time_in_the_future_does_not_extend_a_lease() -> None:
    e = election("b")
    e.observe(lease("a", renew="2999-01-01T00:00:00.000000Z"), now=50.0)
    assert e.next_write(WALL, now=64.9) is None
    assert e.next_write(WALL, now=65.0) is not None


def test_a_released_lease_is_free_at_once_and_the_holders_duration_counts() -> None:
    e = election("b")
    e.observe(lease(""), now=10.0)
    assert e.next_write(WALL, now=10.0) is not None
    e.observe(lease("a", duration=4), now=20.0)  # the holder's leaseDurationSeconds
    assert e.next_write(WALL, now=23.9) is None and e.next_write(WALL, now=24.0) is not None


def test_a_graceful_stop_hands_back_only_a_lease_it_holds() -> None:
    a = Election("a", "remedyd", "default", TIMINGS, address="http://10.42.0.17:9464")
    a.observe(lease("a", transitions=3), now=0.0)
    release = a.release_write(WALL)
    assert release is not None and release.verb == "update"
    spec = release.body["spec"]
    assert (spec["holderIdentity"], spec["leaseDurationSeconds"], spec["leaseTransitions"]) == (
        "", 1, 3)
    assert release.body["metadata"]["resourceVersion"] == "7"  # a 409 if it changed since
    assert "annotations" not in release.body["metadata"]  # no address to hand webhooks to
    b = election("b")
    b.observe(release.body, now=1.0)
    assert b.next_write(WALL, now=1.0) is not None  # free at once, not after 15 s
    a.observe(lease("c"), now=2.0)
    assert a.release_write(WALL) is None  # someone else's: never touched


def test_a_leader_that_sees_another_holder_stops_leading_at_once() -> None:
    e = election("a")
    e.observe(lease("a"), now=0.0)
    write = e.next_write(WALL, now=0.0)
    assert write is not None
    e.written(write.body, sent_at=0.0)
    assert e.leading(1.0)
    e.observe(lease("c", version="9"), now=1.0)
    assert not e.leading(1.0) and e.deadline() is None


def test_the_holder_writes_its_address_and_the_others_read_it() -> None:
    a = Election("a", "remedyd", "default", TIMINGS, address="http://10.42.0.17:9464")
    a.observe(None, now=0.0)
    write = a.next_write(WALL, now=0.0)
    assert write is not None
    assert write.body["metadata"]["annotations"] == {"remedyd.io/http": "http://10.42.0.17:9464"}
    assert a.holder_address == ""  # never its own: it does not hand webhooks to itself
    b = election("b")
    b.observe({**write.body, "spec": {**write.body["spec"]}}, now=1.0)
    assert b.holder == "a" and b.holder_address == "http://10.42.0.17:9464"
    # Webhooks and their credentials go there: only a plain origin is taken.
    for written, read in [("http://10.42.0.17:9464/", "http://10.42.0.17:9464"),
                          ("https://remedyd-0.remedyd:9464", "https://remedyd-0.remedyd:9464"),
                          ("http://user:pw@10.42.0.17:9464", ""), ("http://10.42.0.17/x", ""),
                          ("http://10.42.0.17:99999", ""), ("file:///etc/passwd", ""),
                          ("http://10.42.0.17:9464?to=elsewhere", "")]:
        odd = {**write.body, "metadata": {**write.body["metadata"],
                                          "annotations": {"remedyd.io/http": written}}}
        b.observe(odd, now=1.0)
        assert b.holder_address == read, written
    # A new holder with no address of its own clears the old one: no webhook goes to "a".
    b.observe(None, now=1.0)
    taken = b.next_write(WALL, now=1.0)
    assert taken is not None and "annotations" not in taken.body["metadata"]
    expired = {**write.body, "metadata": {**write.body["metadata"], "resourceVersion": "8"}}
    b.observe(expired, now=1.0)
    retaken = b.next_write(WALL + 60, now=100.0)
    assert retaken is not None and "annotations" not in retaken.body["metadata"]


# -- real replicas against the test bed --------------------------------------------------

ROLLBACK_RULE = """
rules:
  - name: rollback
    source: kubernetes
    when: >-
      event.kind == "pod" && event.action == "crashloop"
      && event.attributes.workload_kind == "Deployment"
    cooldown: 1s
    actions:
      - kubernetes.rollback: {}
"""
LABEL_RULE = """
  - name: mark-unready
    source: kubernetes
    when: event.kind == "pod" && event.action == "unready"
    actions:
      - kubernetes.label: {set: {remedyd.io/seen: "yes"}}
"""
FAST = {"enabled": True, "lease_duration": "3s", "renew_deadline": "2s",
        "retry_period": "0.5s"}


def replica(tmp_path: Path, kubeconfig: Path, identity: str, rules: str = ROLLBACK_RULE,
            **kube: Any) -> DaemonProcess:
    return DaemonProcess(tmp_path / identity, rules, extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig),
                       "kinds": ["pods", "replicasets", "deployments"], **kube},
        "kubernetes.leader_election": {**FAST, "identity": identity},
        "safety": {"coalesce_window": "0s"}})


def writes_by(kube: KubeApiServer, identity: str, leases: bool = False) -> list[Request]:
    return [r for r in kube.bed.log.mutations() if r.user_agent.endswith(f"({identity})")
            and (leases or "/leases" not in r.path)]


@pytest_asyncio.fixture
async def replicas(kube: KubeApiServer) -> AsyncIterator[list[DaemonProcess]]:
    """Stopped (together) before the test bed is: a bed stopping first holds their watches."""
    started: list[DaemonProcess] = []
    yield started
    await asyncio.gather(*(asyncio.to_thread(d.stop) for d in started))


async def start(group: list[DaemonProcess], *daemons: DaemonProcess) -> None:
    group.extend(daemons)
    await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons))


def leading(daemon: DaemonProcess) -> bool:
    body = daemon.readiness()
    return bool(body and body.get("leader"))


async def one_leader(a: DaemonProcess, b: DaemonProcess) -> tuple[DaemonProcess, DaemonProcess]:
    await until(lambda: leading(a) or leading(b), "a leader", 10)
    return (a, b) if leading(a) else (b, a)


async def bad_rollout(kube: KubeApiServer) -> None:
    kube.bed.controller.crash_images.add("example/web:2.0")
    kube.bed.apply(deployment("example/web:2.0", 2))


async def test_only_the_leader_acts_and_one_that_cannot_renew_stops_before_the_other_takes_over(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        replicas: list[DaemonProcess]) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", 2))
    a, b = replica(tmp_path, kubeconfig, "a"), replica(tmp_path, kubeconfig, "b")
    await start(replicas, a, b)
    leader, follower = await one_leader(a, b)
    ident = {a: "a", b: "b"}
    assert follower.readiness()["leader"] is False and follower.ready()  # followers are ready
    assert leader.metric("remedyd_leader") == 1 and follower.metric("remedyd_leader") == 0

    await bad_rollout(kube)
    await until(lambda: image(kube) == "example/web:1.0", "the rollback", 10)
    await until(lambda: [d for d in follower.audit("decision") if d["rule"] == "rollback"],
                "the follower's decision", 10)
    # (The shared state the leader keeps in a ConfigMap is another test's subject.)
    assert [(r.method, r.path) for r in writes_by(kube, ident[leader])
            if "/configmaps" not in r.path] == [
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/web")]
    assert writes_by(kube, ident[follower]) == []
    assert {(d["decision"], d.get("suppressed_by")) for d in follower.audit("decision")
            if d["rule"] == "rollback"} == {("suppressed", "leader")}

    # The leader's renewals now fail: it must stop acting within renew_deadline of its
    # last good renewal, and only then may the other take the lease.
    kube.bed.faults.add("status", method="PUT", path="/leases/remedyd$", code=500,
                        count=10_000, user_agent=rf"\({ident[leader]}\)$")
    failed = await until(lambda: [r for r in kube.bed.log.find("PUT", "/leases/remedyd$")
                                  if r.status == 500], "a failed renewal", 5)
    # The last write of the Lease that went through: the create, or a renewal.
    last_good = max(r.received_at for r in writes_by(kube, ident[leader], leases=True)
                    if "/leases" in r.path and r.status < 300
                    and r.received_at < failed[0].received_at)
    deadline = last_good + 2.0
    await asyncio.to_thread(lambda: _wait_not_leading(leader))
    stopped_at = time.monotonic()
    # Seen through /readyz polled over HTTP (a loaded machine delays that, not the
    # daemon); what must never happen is checked by the request log below.
    assert stopped_at < deadline + 1.0, f"stopped {stopped_at - deadline:.2f}s after deadline"
    await until(lambda: leading(follower), "the follower to take over", 10)
    taken = [r for r in kube.bed.log.find("PUT", "/leases/remedyd$")
             if r.status == 200 and r.user_agent.endswith(f"({ident[follower]})")]
    assert taken[0].received_at >= deadline, "the lease was taken before the old deadline"

    # A new incident: the new leader acts, the old one writes nothing.
    kube.bed.controller.crash_images.add("example/web:3.0")
    kube.bed.apply(deployment("example/web:3.0", 2))
    await until(lambda: writes_by(kube, ident[follower]), "the new leader's rollback", 10)
    late = [r for r in writes_by(kube, ident[leader]) if r.received_at > deadline]
    assert late == []
    assert [d for d in leader.audit("decision") if d["rule"] == "rollback"
            and d.get("suppressed_by") == "leader"]


async def test_a_leader_that_stops_hands_the_lease_over_before_it_expires(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        replicas: list[DaemonProcess]) -> None:
    kube.bed.add_node("node-1")
    a, b = replica(tmp_path, kubeconfig, "a"), replica(tmp_path, kubeconfig, "b")
    await start(replicas, a, b)
    leader, follower = await one_leader(a, b)
    ident = {a: "a", b: "b"}
    await asyncio.to_thread(leader.stop)
    await until(lambda: leading(follower), "the follower to take over", 10)
    writes = sorted((r for r in [*kube.bed.log.find("POST", "/leases$"),
                                 *kube.bed.log.find("PUT", "/leases/remedyd$")]
                     if r.status in (200, 201)), key=lambda r: r.received_at)
    mine = [r for r in writes if r.user_agent.endswith(f"({ident[leader]})")]
    released, last_renewal = mine[-1], mine[-2]  # the release, and the create or a renewal
    assert released.json["spec"]["holderIdentity"] == ""
    taken = next(r for r in writes if r.user_agent.endswith(f"({ident[follower]})"))
    # Without the release it could not be taken before the last renewal's lease ran out.
    lease_duration = float(FAST["lease_duration"].rstrip("s"))
    assert taken.received_at < last_renewal.received_at + lease_duration
    assert taken.received_at >= released.received_at
    assert "lease default/remedyd released by" in leader.log()


def _wait_not_leading(daemon: DaemonProcess) -> None:
    wait_for(lambda: not leading(daemon), 5, "the old leader to stop", interval=0.05)


def test_bad_lease_timings_fail_at_start_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "remedyd.toml", {
        "docker": {"enabled": False},
        "kubernetes.leader_election": {"lease_duration": "3s", "renew_deadline": "5s"}})
    done = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(config)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "kubernetes.leader_election" in done.stderr and "renew_deadline" in done.stderr


async def test_node_agents_act_on_their_own_pods_and_one_rolls_back(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        replicas: list[DaemonProcess]) -> None:
    kube.bed.add_node("node-1")
    kube.bed.add_node("node-2")
    kube.bed.apply(deployment("example/web:1.0", 4))
    kube.bed.apply(deployment("example/web:2.0", 4))  # a good rollout: revision 2
    agents = {node: replica(tmp_path, kubeconfig, f"agent-{node}", ROLLBACK_RULE + LABEL_RULE,
                            mode="node", node_name=node) for node in ("node-1", "node-2")}
    await start(replicas, *agents.values())
    leader, follower = await one_leader(agents["node-1"], agents["node-2"])
    node_of = {agent: node for node, agent in agents.items()}
    for agent in agents.values():  # it lists and watches only its node's pods
        watched = [r for r in kube.bed.log.find("GET", "^/api/v1/pods$")
                   if r.user_agent.endswith(f"(agent-{node_of[agent]})")]
        assert f"spec.nodeName={node_of[agent]}" in {r.query.get("fieldSelector")
                                                      for r in watched}

    # Pod actions: every pod unready; each agent labels its own node's pods, leader or not.
    placed = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods(kube)}
    assert set(placed.values()) == {"node-1", "node-2"}
    for name in placed:
        kube.bed.controller.set_ready("default", name, False)
    await until(lambda: len(kube.bed.log.find("PATCH", "/pods/")) >= len(placed),
                "a label on every pod", 10)
    for request in kube.bed.log.find("PATCH", "/pods/"):
        agent = request.user_agent.rpartition("(agent-")[2].rstrip(")")
        assert placed[request.path.rpartition("/")[2]] == agent, request.path

    # A crash loop on the follower's node only: the leader still sees it and rolls back.
    crashing = next(n for n, node in placed.items() if node == node_of[follower])
    kube.bed.controller.crash_loop("default", crashing)
    await until(lambda: image(kube) == "example/web:1.0", "the rollback", 10)
    rollbacks = [r for r in kube.bed.log.mutations() if r.path.endswith("/deployments/web")]
    assert len(rollbacks) == 1 and rollbacks[0].user_agent.endswith(
        f"(agent-{node_of[leader]})")
    refused = await until(lambda: [d for d in follower.audit("decision")
                                   if d["rule"] == "rollback"], "the follower's decision", 10)
    assert {d.get("suppressed_by") for d in refused} == {"leader"}


async def test_a_leader_killed_mid_incident_is_not_repeated_by_the_one_that_takes_over(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path,
        replicas: list[DaemonProcess]) -> None:
    """The leader's rollback lands, but it is killed (-9) before its answer arrives. The
    follower takes the Lease, restores the shared state before acting, and when the
    revision rolled back to crash-loops too it does not roll forward onto the one left."""
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", 1))
    a, b = replica(tmp_path, kubeconfig, "a"), replica(tmp_path, kubeconfig, "b")
    await start(replicas, a, b)
    leader, follower = await one_leader(a, b)
    kube.bed.faults.add("slow", method="PATCH", path="/deployments/web$", delay=60)
    kube.bed.controller.crash_images.add("example/web:2.0")
    kube.bed.apply(deployment("example/web:2.0", 1))
    await kube.bed.log.wait_for("PATCH", "/deployments/web$", limit=20)
    await until(lambda: image(kube) == "example/web:1.0", "the rollback to land")
    await asyncio.to_thread(leader.signal, 9)
    await asyncio.to_thread(leader.proc.wait, 10)  # type: ignore[union-attr]
    await until(lambda: leading(follower), "the follower to take over", 15)

    kube.bed.controller.crash_images.add("example/web:1.0")
    for pod in pods(kube, "example/web:1.0"):
        kube.bed.controller.crash_loop("default", pod["metadata"]["name"])
    refused = await until(lambda: [d for d in follower.audit("decision")
                                   if d.get("suppressed_by") == "bad_revision"],
                          "the new leader's refusal", 20)
    assert "example/web:2.0" in refused[0]["reason"]
    patches = kube.bed.log.find("PATCH", "/deployments/web$")
    assert len(patches) == 1, [r.user_agent for r in patches]
    # The new leader wrote only the shared state (and its Lease), nothing to the workload.
    assert all("/configmaps/" in r.path for r in writes_by(kube, follower_identity(follower)))


def follower_identity(daemon: DaemonProcess) -> str:
    return daemon.workdir.name
