"""The posture tracker on a fake clock: first sight, drift, accept, waivers, gone."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from daemon.core.events import Event, JSONValue, Ref
from daemon.security.baseline import Baseline
from daemon.security.tracker import BaselineUnavailable, PostureTracker
from daemon.sources.docker_posture import DockerPosture
from daemon.telemetry.metrics import Metrics

KEY = "docker/container/web"


def inspect(cid: str = "c1", name: str = "web") -> dict[str, Any]:
    return {"Id": cid, "Name": f"/{name}"}


def view(memory: int = 0, caps: list[str] | None = None) -> dict[str, JSONValue]:
    return {"memory": memory, "capAdd": list(caps or [])}


class Bed:
    def __init__(self, baseline: Baseline | None = None, learn: bool = True) -> None:
        self.events: list[Event] = []
        self.audit: list[tuple[str, dict[str, Any]]] = []
        self.now = 1000.0
        self.metrics = Metrics()
        self.tracker = PostureTracker(self.events.append, baseline or Baseline(),
                                      lambda kind, rec: self.audit.append((kind, dict(rec))),
                                      self.metrics, clock=lambda: self.now, learn=learn)

    def seen(self, v: Mapping[str, JSONValue], **kw: Any) -> Event | None:
        return self.tracker.seen("docker", inspect(**kw), origin="live", view=v)

    def drift_records(self) -> list[dict[str, Any]]:
        return [rec for kind, rec in self.audit if kind == "drift"]

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def test_first_sight_is_captured_and_an_unchanged_sighting_emits_nothing() -> None:
    bed = Bed()
    first = bed.seen(view())
    assert first is not None and first.attributes["baseline"] == "captured"
    assert first.attributes["drift"] == [] and first.attributes["platform"] == "docker"
    assert bed.tracker.baseline.get(KEY) is not None
    assert bed.seen(view()) is None
    assert len(bed.events) == 1 and bed.drift_records() == []
    assert bed.metric("remedyd_security_baseline_objects") == 1


def test_a_change_is_drift_with_the_field_diff_audited_once() -> None:
    bed = Bed()
    bed.seen(view())
    drifted = bed.seen(view(memory=64))
    assert drifted is not None and drifted.attributes["baseline"] == "drifted"
    assert drifted.attributes["drift"] == [{"field": "memory", "before": 0, "after": 64}]
    assert bed.seen(view(memory=64)) is None  # the same drift again: nothing new
    records = bed.drift_records()
    assert len(records) == 1 and records[0]["key"] == KEY and records[0]["origin"] == "live"
    assert records[0]["diff"] == [{"field": "memory", "before": 0, "after": 64}]
    assert bed.metric("remedyd_security_drift_events_total", kind="container") == 1
    back = bed.seen(view())
    assert back is not None and back.attributes["baseline"] == "same"
    assert [rec["diff"] for rec in bed.drift_records()] == [records[0]["diff"], []]


def test_accept_makes_the_current_fields_the_baseline_and_reemits_at_once() -> None:
    bed = Bed()
    bed.seen(view())
    bed.seen(view(memory=64))
    result = bed.tracker.accept(KEY, by="ops", reason="more memory approved")
    assert result["diff"] == [{"field": "memory", "before": 0, "after": 64}]
    last = bed.events[-1]
    assert last.attributes["baseline"] == "same" and last.attributes["drift"] == []
    entry = bed.tracker.baseline.get(KEY)
    assert entry is not None and entry.origin == "accepted" and entry.fields["memory"] == 64
    (_, rec), = [item for item in bed.audit if item[0] == "baseline"]
    assert rec["action"] == "accepted" and rec["by"] == "ops" and rec["key"] == KEY
    assert bed.metric("remedyd_security_accepted_total", kind="container") == 1


def test_a_waiver_holds_while_the_fingerprint_is_the_accepted_one() -> None:
    bed = Bed()
    bed.seen(view(caps=["SYS_ADMIN"]))
    bed.tracker.accept(KEY, checks=["DOCKER-CAP-ADD"], by="ops", reason="needs it")
    assert bed.events[-1].attributes["waived"] == ["DOCKER-CAP-ADD"]
    changed = bed.seen(view(caps=["SYS_ADMIN", "NET_ADMIN"]))
    assert changed is not None and changed.attributes["waived"] == []
    restored = bed.seen(view(caps=["SYS_ADMIN"]))
    assert restored is not None and restored.attributes["waived"] == ["DOCKER-CAP-ADD"]


def test_drift_made_while_away_is_found_on_the_first_sighting() -> None:
    baseline = Baseline()
    baseline.put(KEY, {"memory": 0, "capAdd": []}, "scan")
    bed = Bed(baseline)
    event = bed.seen(view(caps=["NET_ADMIN"]), cid="c2")
    assert event is not None and event.attributes["baseline"] == "drifted"
    assert event.attributes["drift"] == [
        {"field": "capAdd", "before": [], "after": ["NET_ADMIN"]}]
    assert len(bed.drift_records()) == 1


def test_a_recreated_container_is_emitted_again_under_its_new_id() -> None:
    bed = Bed()
    bed.seen(view(), cid="c1")
    again = bed.seen(view(), cid="c2")
    assert again is not None and again.subject.id == "c2"


def test_gone_ends_the_findings_and_keeps_the_baseline() -> None:
    bed = Bed()
    first = bed.seen(view())
    assert first is not None
    gone = bed.tracker.gone(first.subject)
    assert gone.action == "deleted" and gone.resolves == ("*",)
    assert bed.tracker.baseline.get(KEY) is not None and bed.tracker.tracked(KEY) is None
    with pytest.raises(KeyError):
        bed.tracker.accept(KEY)


def test_not_learning_leaves_unknown_objects_uncompared() -> None:
    bed = Bed(learn=False)
    event = bed.seen(view())
    assert event is not None and event.attributes["baseline"] == "none"
    assert bed.tracker.baseline.get(KEY) is None


def test_an_unusable_baseline_compares_nothing_and_refuses_accepts() -> None:
    bed = Bed(Baseline(error="b.json:1:1: not JSON"))
    bed.seen(view())
    event = bed.seen(view(memory=64))
    assert event is not None and event.attributes["baseline"] == "none"
    assert event.attributes["drift"] == [] and bed.drift_records() == []
    with pytest.raises(BaselineUnavailable, match="not JSON"):
        bed.tracker.accept(KEY)


# -- the Docker posture feeding the tracker -------------------------------------------------

class FakeSource:
    synced = True

    def __init__(self) -> None:
        self.observers: list[Any] = []
        self.inspected: list[Any] = []

    def observe(self, callback: Any) -> None:
        self.observers.append(callback)

    def on_inspected(self, callback: Any) -> None:
        self.inspected.append(callback)


class FakeClient:
    """Inspects that wait until released, so a test decides what happens meanwhile."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[str] = []

    async def inspect(self, cid: str) -> dict[str, Any]:
        self.calls.append(cid)
        await self.release.wait()
        if cid == "broken":
            raise OSError("connection reset")
        return {"Id": cid, "Name": f"/{cid}", "HostConfig": {"CapAdd": ["SYS_ADMIN"]}}


def docker(action: str, cid: str) -> Event:
    return Event(source="docker", kind="container", action=action,
                 subject=Ref(source="docker", kind="container", name=cid, id=cid),
                 id=f"{action}:{cid}", occurred_at=0.0, observed_at=0.0)


async def test_inspects_run_aside_coalesce_and_a_destroyed_container_stays_gone() -> None:
    bed = Bed()
    source, client = FakeSource(), FakeClient()
    posture = DockerPosture(source, client, bed.tracker, bed.metrics)  # type: ignore[arg-type]
    (observe,) = source.observers
    for action in ("create", "start", "update"):
        observe(docker(action, "web"))  # returns at once: the inspect is a task
    observe(docker("start", "broken"))
    observe(docker("start", "doomed"))
    observe(docker("destroy", "doomed"))
    assert client.calls == [] and posture.status()["inspecting"] == 3
    client.release.set()
    for _ in range(100):
        if not posture.status()["inspecting"]:
            break
        await asyncio.sleep(0.01)
    # create, then one more for the start and update that came meanwhile
    assert client.calls.count("web") == 2
    assert bed.tracker.tracked("docker/container/web") is not None
    assert bed.tracker.tracked("docker/container/doomed") is None
    assert posture.errors == 1
    assert bed.metric("remedyd_security_inspect_errors_total") == 1
    (listed,) = source.inspected
    listed({"Id": "doomed", "Name": "/doomed"})  # a listing racing the destroy
    assert bed.tracker.tracked("docker/container/doomed") is None
    listed({"Id": "other", "Name": "/other"})
    assert bed.events[-1].attributes["origin"] == "list"


async def test_a_rule_reload_shows_every_object_to_the_checks_again() -> None:
    from daemon.engine.ruleset import RuleSet
    from daemon.integrations.security import Reevaluate

    bed = Bed()
    reevaluate = Reevaluate(bed.tracker)
    reevaluate(RuleSet())  # the first load: nothing seen yet, nothing to do
    assert reevaluate._task is None
    for n in range(Reevaluate.CHUNK + 10):  # more than one chunk
        bed.seen(view(), cid=f"c{n}", name=f"web{n}")
    before = len(bed.events)
    reevaluate(RuleSet())
    for _ in range(100):
        if len(bed.events) == 2 * before:
            break
        await asyncio.sleep(0)
    assert {e.subject.name for e in bed.events[before:]} == {
        f"web{n}" for n in range(Reevaluate.CHUNK + 10)}
    assert all(e.attributes["baseline"] == "same" for e in bed.events[before:])
    await reevaluate.close()
