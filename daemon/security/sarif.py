"""`remedyd scan --format sarif`: SARIF 2.1.0, one run, shaped for GitHub code scanning.

Every loaded check is a reporting descriptor (so a check that found nothing is still
known to the viewer); each finding a result pointing at the manifest file and line, or,
for live objects, at the object's key as a logical location. `partialFingerprints`
identify a finding by check, object and file (not by line), so an alert stays the same
alert when lines move above it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from daemon import __version__
from daemon.core.rules import Rule, Severity
from daemon.security.events import baseline_key
from daemon.security.findings import Finding
from daemon.security.report import ordered

SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
VERSION = "2.1.0"
# SARIF has three levels; GitHub shows `security-severity` (a CVSS-like score) as
# critical (>= 9.0), high (>= 7.0), medium (>= 4.0) or low.
LEVELS: dict[Severity, str] = {"critical": "error", "high": "error", "medium": "warning",
                               "low": "note"}
SECURITY_SEVERITY: dict[Severity, str] = {"critical": "9.5", "high": "8.0", "medium": "5.5",
                                          "low": "3.0"}
FINGERPRINT = "remedydFinding/v1"
STDIN_FILE = "<stdin>"


def sarif(findings: Sequence[Finding], rules: Sequence[Rule],
          notifications: Sequence[tuple[str, str, int]] = (),
          cwd: Path | None = None) -> str:
    """The SARIF log of `findings` for the security `rules` that were evaluated;
    `notifications` (message, file, line) are input problems, reported as the
    invocation's tool notifications."""
    cwd = cwd or Path.cwd()
    checks = [rule for rule in rules if rule.security is not None]
    index = {rule.security.id: i for i, rule in enumerate(checks) if rule.security}
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "remedyd", "version": __version__,
                            "semanticVersion": __version__,
                            "rules": [_descriptor(rule) for rule in checks]}},
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": [
            _notification(message, file, line, cwd) for message, file, line in notifications]}],
        "results": [_result(finding, index, cwd) for finding in ordered(findings)
                    if finding.check in index],
        "columnKind": "unicodeCodePoints",
    }
    log = {"$schema": SCHEMA, "version": VERSION, "runs": [run]}
    return json.dumps(log, indent=2) + "\n"


def _descriptor(rule: Rule) -> dict[str, Any]:
    check = rule.security
    assert check is not None
    description = " ".join(rule.description.split()) or rule.name
    short = description.split(". ")[0].rstrip(".")
    return {
        "id": check.id,
        "name": rule.name,
        "shortDescription": {"text": short},
        "fullDescription": {"text": description},
        "help": {"text": check.remediation,
                 "markdown": f"**Remediation:** {check.remediation}\n\n"
                             f"Control: {check.control}"},
        "defaultConfiguration": {"level": LEVELS[check.severity]},
        "properties": {"severity": check.severity, "control": check.control,
                       "security-severity": SECURITY_SEVERITY[check.severity],
                       "tags": ["security", check.control]},
    }


def _result(finding: Finding, index: dict[str, int], cwd: Path) -> dict[str, Any]:
    key = baseline_key(finding.subject)
    logical = {"fullyQualifiedName": key, "name": finding.subject.name, "kind": "resource"}
    location: dict[str, Any] = {"logicalLocations": [logical]}
    if finding.file and finding.file != STDIN_FILE:
        location["physicalLocation"] = {
            "artifactLocation": {"uri": artifact_uri(finding.file, cwd),
                                 "uriBaseId": "%SRCROOT%"},
            "region": {"startLine": max(finding.line, 1)}}
    text = f"{key}: {finding.description or finding.rule}".rstrip()
    if finding.drift:
        fields = ", ".join(str(change.get("field")) for change in finding.drift
                           if isinstance(change, dict))
        text += f" Changed from the baseline: {fields}."
    text += f" ({finding.control}) Fix: {finding.remediation}"
    identity = "\0".join((finding.check, key, finding.file))
    return {
        "ruleId": finding.check,
        "ruleIndex": index[finding.check],
        "level": LEVELS[finding.severity],
        "message": {"text": " ".join(text.split())},
        "locations": [location],
        "partialFingerprints": {FINGERPRINT: hashlib.sha256(identity.encode()).hexdigest()},
        "properties": {"severity": finding.severity, "platform": finding.platform,
                       **({"drift": finding.drift} if finding.drift else {})},
    }


def _notification(message: str, file: str, line: int, cwd: Path) -> dict[str, Any]:
    note: dict[str, Any] = {"level": "warning", "message": {"text": message}}
    if file and file != STDIN_FILE:
        physical: dict[str, Any] = {"artifactLocation": {"uri": artifact_uri(file, cwd),
                                                         "uriBaseId": "%SRCROOT%"}}
        if line:
            physical["region"] = {"startLine": line}
        note["locations"] = [{"physicalLocation": physical}]
    return note


def artifact_uri(file: str, cwd: Path) -> str:
    """`file` relative to `cwd`, as a URI reference (`/`-separated, percent-encoded)."""
    relative = os.path.relpath(os.path.abspath(file), cwd)
    return quote(Path(relative).as_posix())
