"""Rule files as an operator writes them, and `remedyd check` as they would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.core.conditions import required_actions
from daemon.engine.ruleset import load_ruleset
from daemon.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CATALOG = Daemon.action_catalog(Settings())

GOOD = """
rules:
  - name: restart-unhealthy
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    actions:
      - docker.restart: {timeout: 5s}
"""


def check(*paths: Path | str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon", "check", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_rules_pass_check() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok: 3 rules")


def test_malformed_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD + "  - name: [unclosed\n")
    result = check(path)
    assert result.returncode == 1
    assert f"{path}: line 9: invalid YAML" in result.stdout


def test_bad_cel_names_file_line_and_rule(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace('== "unhealthy"', '== = "unhealthy"'))
    result = check(path)
    assert result.returncode == 1
    line = result.stdout.strip()
    assert line.startswith(f"{path}:3: rule 'restart-unhealthy': when: ")
    assert "Syntax error" in line


@pytest.mark.parametrize(("change", "expected"), [
    (("docker.restart", "docker.restrat"), "unknown action 'docker.restrat'"),
    (("timeout: 5s", "timeout: soon"), "docker.restart: timeout"),
    (("source: docker", "source: dokcer"), "unknown source 'dokcer'"),
    (("    actions:", "    cooldwn: 1m\n    actions:"), "cooldwn: Extra inputs are not permitted"),
    (("event.action ==", "evnt.action =="), "unknown variable(s) evnt"),
])
def test_rule_mistakes_are_named(tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    result = check(path)
    assert result.returncode == 1
    assert "restart-unhealthy" in result.stdout
    assert expected in result.stdout, result.stdout


def test_every_broken_file_is_reported_one_line_each(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("docker.restart", "docker.nope"), "a.yaml")
    write(tmp_path, "rules: {}\n", "b.yaml")
    write(tmp_path, GOOD.replace("restart-unhealthy", "other"), "c.yaml")
    result = check(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(str(tmp_path / "a.yaml"))
    assert lines[1].startswith(str(tmp_path / "b.yaml"))


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    _, errors = load_ruleset([tmp_path], CATALOG)
    assert len(errors) == 1
    assert "already used in" in str(errors[0]) and "a.yaml" in str(errors[0])


def test_a_broken_set_loads_nothing(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, "rules:\n  - name: x\n", "b.yaml")
    ruleset, errors = load_ruleset([tmp_path], CATALOG)
    assert errors and ruleset.rules == ()


def test_budget_escalation_actions_are_checked_at_load(tmp_path: Path) -> None:
    text = GOOD + "    budget: {max: 2, per: 1h, then: [notify.webhook: {retries: 99}]}\n"
    _, errors = load_ruleset([write(tmp_path, text)], CATALOG)
    assert "budget.then: notify.webhook: retries" in str(errors[0])


@pytest.mark.parametrize(("condition", "actions"), [
    ('event.action == "die"', {"die"}),
    ('event.kind == "container" && event.action == "oom"', {"oom"}),
    ('(event.action == "die") && event.attributes.exitCode != "0"', {"die"}),
    ('event.action in ["die", "oom"] && true', {"die", "oom"}),
    ('event.action == "die" || event.action == "oom"', None),
    ('event.attributes.x == "a && event.action == \\"die\\""', None),
    ("true", None),
])
def test_rules_are_indexed_by_the_action_their_condition_requires(
        condition: str, actions: set[str] | None) -> None:
    found = required_actions(condition)
    assert (set(found) if found is not None else None) == actions


def test_macros_bind_their_own_variables(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace(
        'event.attributes.health == "unhealthy"',
        'event.attributes.exists(k, k.startsWith("com.docker"))'))
    result = check(path)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(("condition", "keys"), [
    ('event.attributes.health == "unhealthy"', {"health"}),
    ('event.attributes["com.docker.compose.service"] == "db"', {"com.docker.compose.service"}),
    ('"exitCode" in event.attributes && event.attributes.exitCode != "0"', {"exitCode"}),
    ('event.action == "die"', set()),
    ("event.attributes.exists(k, k.startsWith('x'))", None),
    ("size(event.attributes) > 3", None),
    ('event["attributes"]["name"] == "web"', None),
])
def test_conditions_name_the_attributes_they_read(condition: str, keys: set[str] | None) -> None:
    from daemon.core.conditions import attribute_keys

    found = attribute_keys(condition)
    assert (set(found) if found is not None else None) == keys
