"""Intents (act/escalate decisions) left without an outcome are found and reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.audit import AuditLog, open_intents, verify
from daemon.cli import main


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


def decide(log: AuditLog, incident: str, decision: str) -> None:
    log.append("decision", {"incident": incident, "rule": "r", "decision": decision})


def close(log: AuditLog, incident: str) -> None:
    log.append("outcome", {"incident": incident, "outcome": "success"})


def test_open_intents_are_the_acts_and_escalations_without_outcome(log_path: Path) -> None:
    with AuditLog(log_path, fsync=False) as log:
        decide(log, "inc-1", "act")
        decide(log, "inc-2", "act")
        decide(log, "inc-3", "suppressed")  # no action, so nothing to close
        decide(log, "inc-4", "escalate")
        close(log, "inc-1")
        decide(log, "inc-5", "act")
        log.append("lifecycle", {"event": "stopped"})

        found = open_intents(log)
    assert [(r["seq"], r["incident"]) for r in found] == [(2, "inc-2"), (4, "inc-4"), (6, "inc-5")]
    assert found[0]["decision"] == "act" and found[1]["decision"] == "escalate"
    assert [r["incident"] for r in open_intents(log_path)] == ["inc-2", "inc-4", "inc-5"]


def test_open_intents_reads_only_as_far_back_as_the_horizon(log_path: Path) -> None:
    with AuditLog(log_path, fsync=False) as log:
        decide(log, "old", "act")
        for _ in range(50):
            log.append("lifecycle", {"event": "noise"})
        decide(log, "new", "act")
    assert [r["incident"] for r in open_intents(log_path, horizon_records=10)] == ["new"]
    assert [r["incident"] for r in open_intents(log_path)] == ["old", "new"]
    with pytest.raises(ValueError, match="horizon_records"):
        open_intents(log_path, horizon_records=0)


def test_an_outcome_before_its_intent_does_not_close_it(log_path: Path) -> None:
    with AuditLog(log_path, fsync=False) as log:
        close(log, "inc-1")
        decide(log, "inc-1", "act")
    assert [r["seq"] for r in open_intents(log_path)] == [2]


def test_open_intents_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert open_intents(tmp_path / "none.jsonl") == []


def test_verify_warns_about_open_intents_without_failing(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with AuditLog(log_path, fsync=False) as log:
        decide(log, "inc-1", "act")
        decide(log, "inc-2", "escalate")
        close(log, "inc-1")
        decide(log, "inc-3", "act")

    result = verify(log_path)
    assert result.ok and [seq for seq, _ in result.open_intents] == [2, 4]

    assert main(["audit", "verify", str(log_path)]) == 0
    out, err = capsys.readouterr()
    assert "ok: 4 records, chain intact" in out
    assert (
        "warning: 2 open intent(s) (decision without outcome): "
        "seq 2 (incident inc-2), seq 4 (incident inc-3)"
    ) in err


def test_verify_of_a_closed_log_has_no_warning(
    log_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with AuditLog(log_path, fsync=False) as log:
        decide(log, "inc-1", "act")
        close(log, "inc-1")
    assert main(["audit", "verify", str(log_path)]) == 0
    assert "warning" not in capsys.readouterr().err
