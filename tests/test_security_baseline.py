"""The baseline file: loaded at start, never lost, written atomically and debounced."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from daemon.security.baseline import (
    Baseline,
    BaselineError,
    Persister,
    load_baseline,
    open_baseline,
    write_baseline,
)


def test_missing_file_is_an_empty_baseline(tmp_path: Path) -> None:
    baseline = load_baseline(tmp_path / "none.json")
    assert baseline.usable and baseline.objects == {}


def test_written_baseline_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    count = write_baseline(path, {"docker/container/web": {"privileged": False}}, now=0.0)
    assert count == 1
    doc = json.loads(path.read_text())
    assert doc["version"] == 1 and doc["written_at"] == "1970-01-01T00:00:00Z"
    assert doc["objects"]["docker/container/web"] == {
        "fields": {"privileged": False}, "origin": "scan", "at": "1970-01-01T00:00:00Z"}
    loaded = load_baseline(path)
    entry = loaded.get("docker/container/web")
    assert entry is not None and entry.fields == {"privileged": False} and entry.origin == "scan"


def test_corrupt_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text('{"version": 1,\n "objects": {,}}\n')
    with pytest.raises(BaselineError, match=rf"{path}:2:"):
        load_baseline(path)


def test_wrong_shape_names_the_place(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"version": 1, "objects": {"k": {"fields": 3}}}))
    with pytest.raises(BaselineError, match=r"objects\.k"):
        load_baseline(path)


def test_unusable_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    path.write_text("not json")

    async def run() -> None:
        baseline = open_baseline(path)
        assert not baseline.usable and str(path) in (baseline.error or "")
        persister = Persister(baseline, interval=0.0)
        baseline.put("docker/container/x", {"a": 1}, "learned")
        await persister.close()

    asyncio.run(run())
    assert path.read_text() == "not json"


def test_writes_are_debounced_and_flushed_on_close(tmp_path: Path) -> None:
    path = tmp_path / "b.json"

    async def run() -> Persister:
        baseline = Baseline(path=path)
        persister = Persister(baseline, interval=60.0)
        baseline.put("k1", {"a": 1}, "learned")
        for _ in range(50):  # the first write is due at once
            if persister.writes:
                break
            await asyncio.sleep(0.01)
        assert persister.writes == 1
        for n in range(20):
            baseline.put(f"k{n}", {"a": n}, "learned")
        await asyncio.sleep(0)
        # The rest waits for the interval (the write is pending, the file as it was)...
        assert persister.writes == 1 and persister.pending
        assert list(json.loads(path.read_text())["objects"]) == ["k1"]
        await persister.close()  # ...or the shutdown
        return persister

    persister = asyncio.run(run())
    assert persister.writes == 2
    assert len(json.loads(path.read_text())["objects"]) == 20
    assert not list(tmp_path.glob("*.tmp"))
