"""README.md lists every bundled security check, exactly as the rule files say it
(scripts/security-checks-table regenerates the table)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon.actions.params import ACTIONS
from daemon.engine.ruleset import load_ruleset

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "security-checks-table"
START, END = "<!-- security-checks:start -->", "<!-- security-checks:end -->"


def generated(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=30, check=True)
    return done.stdout


def readme_table(text: str) -> str:
    _, start, rest = text.partition(START)
    table, end, _ = rest.partition(END)
    assert start and end, "README.md has no security-checks markers"
    return table.lstrip("\n")


def test_the_readme_holds_exactly_the_generated_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_table(readme) == generated(), (
        "README.md's security checks table is stale: run "
        "scripts/security-checks-table --update README.md")
    section = readme.index("## Security checks")
    assert section < readme.index(START) < readme.index("## Configuration")


def test_the_table_has_one_row_per_check_of_every_security_rule_file() -> None:
    files = sorted((ROOT / "rules").glob("security*.yaml"))
    ruleset, errors = load_ruleset(files, ACTIONS)
    assert not errors, errors
    checks = [c.rule.security for c in ruleset.rules if c.rule.security is not None]
    rows = generated().splitlines()[2:]
    assert len(rows) == len(checks)
    for check in checks:
        row = next(r for r in rows if r.startswith(f"| `{check.id}` |"))
        assert f"| {check.severity} |" in row and check.control in row, row


def test_update_rewrites_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n", encoding="utf-8")
    generated("--update", str(readme))
    text = readme.read_text(encoding="utf-8")
    assert text.startswith("# T\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")
    assert readme_table(text) == generated() and "old" not in text
