"""`remedyd scan`'s table and JSON reports of a list of findings."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from daemon.core.rules import SEVERITIES, Severity
from daemon.security.events import baseline_key
from daemon.security.findings import Finding

_RANK = {severity: index for index, severity in enumerate(SEVERITIES)}
# Most severe first: the lines a reader must act on come at the top.
_HEADER = ("SEVERITY", "CHECK", "OBJECT", "LOCATION", "CONTROL")


def ordered(findings: Sequence[Finding]) -> list[Finding]:
    """By severity (critical first), then check id, object and location."""
    return sorted(findings, key=lambda f: (-_RANK[f.severity], f.check,
                                           baseline_key(f.subject), f.file, f.line))


def counts(findings: Sequence[Finding]) -> dict[Severity, int]:
    found: dict[Severity, int] = {severity: 0 for severity in reversed(SEVERITIES)}
    for finding in findings:
        found[finding.severity] += 1
    return found


def location(finding: Finding) -> str:
    if finding.file:
        return f"{finding.file}:{finding.line}" if finding.line else finding.file
    return finding.platform or "-"


def summary_line(findings: Sequence[Finding], objects: int) -> str:
    per = ", ".join(f"{n} {severity}" for severity, n in counts(findings).items())
    noun = "finding" if len(findings) == 1 else "findings"
    return f"{len(findings)} {noun} ({per}) in {objects} object(s)"


def table(findings: Sequence[Finding], objects: int) -> str:
    rows = [(f.severity, f.check, baseline_key(f.subject), location(f), f.control)
            for f in ordered(findings)]
    lines: list[str] = []
    if rows:
        widths = [max(len(row[i]) for row in [_HEADER, *rows]) for i in range(len(_HEADER))]
        lines.append(_row(_HEADER, widths))
        for finding, row in zip(ordered(findings), rows, strict=True):
            lines.append(_row(row, widths))
            # What changed is the point of a drift finding: shown under it.
            lines.extend(f"    {_change(change)}" for change in finding.drift)
        lines.append("")
    lines.append(summary_line(findings, objects))
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
                     ).rstrip()


def _change(change: Any) -> str:
    if not isinstance(change, dict):
        return json.dumps(change)
    before = json.dumps(change.get("before"))
    after = json.dumps(change.get("after"))
    return f"{change.get('field')}: {before} -> {after}"


def as_json(findings: Sequence[Finding], objects: int) -> str:
    document: dict[str, Any] = {
        "findings": [{**finding.as_dict(), "object": baseline_key(finding.subject)}
                     for finding in ordered(findings)],
        "summary": {"total": len(findings), "objects": objects,
                    **{severity: n for severity, n in counts(findings).items()}},
    }
    return json.dumps(document, indent=2, sort_keys=False) + "\n"
