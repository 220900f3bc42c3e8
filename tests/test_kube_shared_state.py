"""State that survives restart and failover: `[kubernetes.state] store = "configmap"`.

A replica writes each decision that acts (and a rollback's intent) to one ConfigMap before
its action runs; another replica, started after the first was killed -9 mid-incident,
restores from it and neither repeats the rollback nor hands the target a fresh budget.
Writers race with optimistic concurrency and lose nothing; a ConfigMap that is not
remedyd's is one clear error and the daemon goes on with its own audit log.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from daemon.actions.kube.sharedstate import SharedState
from daemon.clients.kubernetes import KubeClient
from daemon.kube import statestore
from daemon.kube.statestore import Change, StateError
from tests.harness import DaemonProcess, write_config
from tests.kube.server import KubeApiServer
from tests.test_kube_rollback import (
    RULE,
    crash_revision_one,
    deployment,
    killed_once_the_rollback_landed,
    patches,
    until,
)
from tests.test_rbac import EXPECTED_LOCAL_RULES, EXPECTED_RULES, KINDS, KUBE_RULES, ROOT

Obj = dict[str, Any]
CM_PATH = "/api/v1/namespaces/default/configmaps"
KUBE = {"kinds": ["pods", "replicasets", "deployments"]}
EVICT_RULE = """
rules:
  - name: evict-unready
    source: kubernetes
    match: {kind: pod}
    when: event.action == "unready"
    cooldown: 0s
    budget: {max: 1, per: 1h}
    actions:
      - kubernetes.evict: {retry_every: 1s}
"""


def replica(tmp_path: Path, name: str, kubeconfig: Path, rules: str) -> DaemonProcess:
    """A remedyd with its own audit log (another pod's), sharing the test bed and the
    default `[kubernetes.state] store = "configmap"`."""
    return DaemonProcess(tmp_path / name, rules, extra={
        "kubernetes": {"enabled": True, "kubeconfig": str(kubeconfig), **KUBE}})


def stored(kube: KubeApiServer, name: str = "remedyd-state") -> Obj | None:
    return kube.bed.store.find(kube.bed.kind("v1", "configmaps"), "default", name)


def entries(kube: KubeApiServer) -> list[Obj]:
    found = stored(kube)
    return statestore.decode(found) if found else []


def evictions(kube: KubeApiServer) -> list[Any]:
    return kube.bed.log.find("POST", r"/pods/[^/]+/eviction$")


def unready_pod_under_a_budget(kube: KubeApiServer) -> str:
    """Three pods of `web`, one unready, and a PodDisruptionBudget that refuses to let it
    go (429 for as long as the pod is unready): an eviction that stays mid-incident."""
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=3))
    kube.bed.apply({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"minAvailable": 3, "selector": {"matchLabels": {"app": "web"}}}})
    name = str(kube.bed.store.list(kube.bed.kind("v1", "pods"))[0]["metadata"]["name"])
    kube.bed.controller.set_ready("default", name, False)
    return name


# -- a second replica after a kill -9 ------------------------------------------------------

async def test_a_budget_spent_by_a_killed_replica_is_spent_for_the_next(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    first = replica(tmp_path, "a", kubeconfig, EVICT_RULE)
    second = replica(tmp_path, "b", kubeconfig, EVICT_RULE)
    await asyncio.to_thread(first.start)
    try:
        pod = unready_pod_under_a_budget(kube)
        await kube.bed.log.wait_for("POST", r"/eviction$", limit=20)  # asked; 429
        await asyncio.to_thread(first.signal, 9)  # mid-incident: still asking
        await asyncio.to_thread(first.proc.wait, 10)  # type: ignore[union-attr]
        asked = len(evictions(kube))
        assert [e["kind"] for e in entries(kube)] == ["decision"]
        await asyncio.to_thread(second.start)
        [decision] = await until(lambda: second.audit("decision"),
                                 "the second replica's decision", 20)
    finally:
        await asyncio.to_thread(second.stop)
    assert decision["target"]["name"] == pod
    assert (decision["decision"], decision["suppressed_by"]) == ("suppressed", "budget_target"), \
        decision
    assert decision["reason"] == "budget of 1 actions per 3600s on this target spent"
    assert len(evictions(kube)) == asked, "the second replica asked to evict the pod again"


async def test_a_rollback_a_killed_replica_sent_is_not_repeated_by_the_next(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.bed.add_node("node-1")
    kube.bed.apply(deployment("example/web:1.0", replicas=1))
    rule = RULE.replace("PARAMS", "{}")
    first, second = (replica(tmp_path, "a", kubeconfig, rule),
                     replica(tmp_path, "b", kubeconfig, rule))
    await asyncio.to_thread(first.start)
    try:
        await killed_once_the_rollback_landed(kube, first)
        intent = next(e for e in entries(kube) if e["kind"] == "outcome")
        assert [s["outcome"] for s in intent["steps"]] == ["interrupted"]
        assert intent["steps"][0]["details"]["images_before"] == ["example/web:2.0"]

        await asyncio.to_thread(second.start)
        await crash_revision_one(kube)
        [refused] = await until(lambda: second.audit("decision"),
                                "the second replica's decision", 20)
    finally:
        await asyncio.to_thread(second.stop)
    assert (refused["decision"], refused["suppressed_by"]) == ("suppressed", "bad_revision"), \
        refused
    assert "example/web:2.0" in refused["reason"]
    assert len(patches(kube)) == 1


# -- two writers -----------------------------------------------------------------------------

def store(client: KubeClient, windows: float = 3600.0) -> SharedState:
    return SharedState(client, "remedyd-state", "default", lambda records: len(records),
                       lambda decision: windows)


def decision(incident: str, at: str = "2026-01-01T00:00:00.000000Z") -> Obj:
    return {"kind": "decision", "incident": incident, "decision": "act", "rule": "r",
            "time": at, "target": {"kind": "pod", "name": incident}, "actions": []}


async def test_two_writers_racing_lose_nothing(kube: KubeApiServer, kubeconfig: Path) -> None:
    a_client, b_client = (KubeClient(kubeconfig, None, 5.0), KubeClient(kubeconfig, None, 5.0))
    a, b = store(a_client), store(b_client)
    try:
        await a.write(Change.putting(statestore.decision_entry(decision("a1"), 4e9)))
        await b.write(Change.putting(statestore.decision_entry(decision("b1"), 4e9)))
        # Each now holds a version the other has since replaced: every write is a 409 first.
        await asyncio.gather(*(w.write(Change.putting(statestore.decision_entry(
            decision(f"{name}{i}"), 4e9))) for i in range(2, 6) for name, w in (("a", a),
                                                                               ("b", b))))
    finally:
        await a_client.close()
        await b_client.close()
    conflicts = [r for r in kube.bed.log.find("PATCH", CM_PATH + "/remedyd-state$")
                 if r.status == 409]
    assert conflicts, "the writers never raced"
    assert sorted(e["incident"] for e in entries(kube)) == sorted(
        f"{n}{i}" for n in "ab" for i in range(1, 6))


async def test_an_outcome_replaces_its_intent_and_a_failure_takes_it_back(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    client = KubeClient(kubeconfig, None, 5.0)
    state = store(client)
    details = {"deployment_uid": "u", "from_hash": "h2"}
    intent = {**decision("i1"), "intent": [{"action": "kubernetes.rollback",
                                            "details": details}]}
    try:
        for incident, outcome in (("i1", "success"), ("i2", "failed")):
            intended = {**intent, "incident": incident}
            await state.write(Change.putting(*(e for e in (
                statestore.decision_entry(intended, 4e9), statestore.intent_entry(intended))
                if e)))
            await state.write(statestore.outcome_change({
                "incident": incident, "time": intended["time"], "steps": [
                    {"action": "kubernetes.rollback", "outcome": outcome,
                     "details": details if outcome == "success" else None}]}))
    finally:
        await client.close()
    kept = {(e["kind"], e["incident"]): e for e in entries(kube)}
    assert set(kept) == {("decision", "i1"), ("outcome", "i1"), ("decision", "i2")}
    assert [s["outcome"] for s in kept["outcome", "i1"]["steps"]] == ["success"]


# -- what a ConfigMap holds ----------------------------------------------------------------

def test_decisions_go_when_their_windows_pass_and_the_whole_stays_bounded() -> None:
    old, fresh = statestore.decision_entry(decision("old"), until=100.0), \
        statestore.decision_entry(decision("new"), until=300.0)
    remembered = {"kind": "outcome", "incident": "r", "time": "2025-01-01T00:00:00.000000Z",
                  "steps": [{"action": "kubernetes.rollback", "outcome": "success",
                             "details": {"from_hash": "h"}}]}
    assert [e["incident"] for e in statestore.trim([remembered, old, fresh], now=200.0)] == [
        "r", "new"]  # remembered steps do not age out with a window
    many = [statestore.decision_entry(decision(f"d{i:05}", f"2026-01-01T00:{i // 60:02}:"
                                               f"{i % 60:02}.000000Z"), 4e9)
            for i in range(3000)]
    kept = statestore.trim(many, now=0.0, max_bytes=64 * 1024)
    # What the API server counts against a ConfigMap's 1 MiB: keys and values.
    size = sum(len(k) + len(v.encode()) for k, v in statestore.encode(kept).items())
    assert 60 * 1024 < size <= 64 * 1024
    assert kept == many[len(many) - len(kept):], "the oldest go first"


@pytest.mark.parametrize(("config_map", "error"), [
    ({"metadata": {"name": "remedyd-state", "namespace": "default"}, "data": {"x": "1"}},
     "ConfigMap default/remedyd-state is not remedyd's shared state"),
    ({"metadata": {"name": "s", "namespace": "n", "labels": statestore.LABELS},
      "data": {"format": "1", "d.ab12": "{nope"}}, "ConfigMap n/s: data key d.ab12 is not JSON"),
    ({"metadata": {"name": "s", "namespace": "n", "labels": statestore.LABELS},
      "data": {"format": "9"}},
     "ConfigMap n/s: data key format is '9', this remedyd reads format 1"),
    ({"metadata": {"name": "s", "namespace": "n", "labels": statestore.LABELS},
      "data": {"format": "1", "d.ab12": '{"kind": "outcome", "incident": "ab12"}'}},
     "ConfigMap n/s: data key d.ab12 is not a decision (d.INCIDENT) or outcome (o.INCIDENT) "
     "record of that incident"),
])
def test_a_configmap_that_is_not_remedyds_state_says_why(config_map: Obj, error: str) -> None:
    with pytest.raises(StateError, match=re.escape(error)):
        statestore.decode(config_map)


async def test_a_foreign_configmap_is_one_error_and_the_audit_log_restore_stands(
        kube: KubeApiServer, kubeconfig: Path, tmp_path: Path) -> None:
    kube.bed.apply({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "remedyd-state", "namespace": "default"},
                    "data": {"someone": "else's"}})
    daemon = replica(tmp_path, "a", kubeconfig, EVICT_RULE)
    await asyncio.to_thread(daemon.start)
    try:
        unready_pod_under_a_budget(kube)
        await kube.bed.log.wait_for("POST", r"/eviction$", limit=20)
        await asyncio.to_thread(daemon.signal, 9)
        await asyncio.to_thread(daemon.proc.wait, 10)  # type: ignore[union-attr]
        await asyncio.to_thread(daemon.start)  # the same replica, its own audit log
        decisions = await until(lambda: len(daemon.audit("decision")) >= 2 and daemon.audit(
            "decision"), "the restarted daemon's decision", 20)
    finally:
        await asyncio.to_thread(daemon.stop)
    assert decisions[-1]["suppressed_by"] == "budget_target", decisions[-1]
    errors = [line for line in daemon.log().splitlines() if "is not remedyd's shared state"
              in line]
    assert len(errors) == 2, errors  # once per run
    assert "remedyd will not overwrite it" in errors[0]
    assert stored(kube)["data"] == {"someone": "else's"}  # type: ignore[index]
    assert not [r for r in kube.bed.log.mutations() if "/configmaps" in r.path]


# -- rbac ----------------------------------------------------------------------------------

def test_rbac_grants_the_configmap_only_when_the_state_lives_there(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(KUBE_RULES)

    def local_rules(store: str) -> list[dict[str, Any]]:
        config = write_config(tmp_path / "remedyd.toml", {
            "docker": {"enabled": False}, "security": {"enabled": False},
            "kubernetes": {"enabled": False, "kinds": KINDS},
            "kubernetes.state": {"store": store}})
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
        done = subprocess.run([sys.executable, "-m", "daemon", "rbac", "--config",
                               str(config), str(tmp_path / "rules.yaml")],
                              capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert done.returncode == 0, done.stderr
        cluster, *local = yaml.safe_load_all(done.stdout)
        assert cluster["rules"] == EXPECTED_RULES  # never cluster-wide
        return [rule for role in local for rule in role["rules"]]

    assert local_rules("configmap") == EXPECTED_LOCAL_RULES  # the default: what test_rbac checks
    assert local_rules("audit") == [r for r in EXPECTED_LOCAL_RULES
                                    if r["resources"] != ["configmaps"]]


# -- restored from two places ----------------------------------------------------------------

BUDGET_OF_TWO = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status"
    budget: {max: 2, per: 1h}
    actions: [test.fix: {}]
"""


async def test_a_decision_in_the_audit_log_and_the_shared_state_counts_once(
        tmp_path: Path) -> None:
    """A replica restarted in place reads its decisions twice (its audit log, then the
    ConfigMap), and a leader taking over again restores again: each spends once."""
    from tests.test_executor import Step, decide, executor, rules

    fix = Step("test.fix")
    ruleset = rules(tmp_path, BUDGET_OF_TWO)
    first = executor(tmp_path, fix)
    [decision] = decide(ruleset)
    await first.handle(decision)
    first.audit.close()
    audited = [r for r in first.audit.tail(100) if r["kind"] == "decision"]
    second = executor(tmp_path, fix)

    def restore(records: list[Obj]) -> int:
        return second.restore(records, lambda n: c.rule if (c := ruleset.by_name(n)) else None,
                              time.time())

    assert restore(audited) == 1
    shared = statestore.records([statestore.decision_entry(audited[0], 4e9)])
    assert restore(shared) == 0 and restore(shared) == 0
    [again] = decide(ruleset)
    await second.handle(again)
    assert len(fix.runs) == 2, "the budget of 2 was counted as spent twice"
