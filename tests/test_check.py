"""`remedyd check` as an operator runs it: every problem on its own line, and warnings for
rules that load but cannot work with this configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import write_config

ROOT = Path(__file__).resolve().parents[1]

RESTART = """
  - name: {name}
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    actions:
      - docker.restart: {{timeout: 5s}}
"""
NOTIFY = """
  - name: {name}
    source: {source}
    when: event.action == "oom"
    actions:
      - notify.webhook: {params}
"""


def rules(*bodies: str) -> str:
    return "rules:" + "".join(bodies)


def check(tmp_path: Path, text: str, *args: str, docker: bool | None = None,
          webhook_url: str | None = None) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    groups: dict[str, dict[str, Any]] = {"docker": {"enabled": docker},
                                         "notify": {"webhook_url": webhook_url}}
    config = write_config(tmp_path / "remedyd.toml", groups)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    return subprocess.run([sys.executable, "-m", "daemon", "check", "--config", str(config),
                           *args, str(path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.strip().splitlines()


# -- every problem, one line each -------------------------------------------------------

def test_every_broken_rule_of_a_file_gets_its_own_line(tmp_path: Path) -> None:
    text = rules(RESTART.format(name="a").replace("docker.restart", "docker.restrat"),
                 RESTART.format(name="b"),
                 RESTART.format(name="c").replace("== \"unhealthy\"", "== = \"x\""),
                 RESTART.format(name="d").replace("source: docker", "source: dokcer"))
    result = check(tmp_path, text, docker=True)
    assert result.returncode == 1
    path = tmp_path / "rules.yaml"
    found = lines(result)
    assert len(found) == 3, found
    assert found[0].startswith(f"{path}:2: rule 'a': actions: unknown action 'docker.restrat'")
    assert found[1].startswith(f"{path}:14: rule 'c': when: ")
    assert found[2].startswith(f"{path}:20: rule 'd': source: unknown source 'dokcer'")


def test_every_problem_of_one_rule_is_reported(tmp_path: Path) -> None:
    text = rules(RESTART.format(name="a")
                 .replace("event.action ==", "evnt.action ==")
                 .replace("docker.restart: {timeout: 5s}",
                          "docker.restart: {timeout: soon}\n      - docker.kil: {}"))
    result = check(tmp_path, text, docker=True)
    assert result.returncode == 1
    found = lines(result)
    where = f"{tmp_path / 'rules.yaml'}:2: rule 'a': "
    assert all(line.startswith(where) for line in found), found
    assert len(found) == 3, found
    assert "unknown variable(s) evnt" in found[0]
    assert "docker.restart: timeout" in found[1]
    assert "unknown action 'docker.kil'" in found[2]


def test_every_bad_field_of_one_rule_is_reported(tmp_path: Path) -> None:
    text = rules(RESTART.format(name="a").replace("source: docker",
                                                  "source: dokcer\n    cooldwn: 1m"))
    result = check(tmp_path, text, docker=True)
    assert result.returncode == 1
    found = " | ".join(lines(result))
    assert "unknown source 'dokcer'" in found and "cooldwn" in found, found


# -- rules that load but cannot work here ------------------------------------------------

def test_a_notification_with_no_url_anywhere_is_a_warning(tmp_path: Path) -> None:
    text = rules(NOTIFY.format(name="oom", source="docker", params="{}"))
    result = check(tmp_path, text, docker=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result)[0] == (
        f"{tmp_path / 'rules.yaml'}:2: rule 'oom': warning: notify.webhook has no url "
        "and [notify] webhook_url is not set; the notification cannot be sent")
    assert lines(result)[-1] == "ok: 1 rules in 1 file(s), 1 warning(s)"
    assert check(tmp_path, text, "--strict", docker=True).returncode == 1


@pytest.mark.parametrize("params", ["{url: 'http://127.0.0.1:9/hook'}", "{}"])
def test_a_notification_with_a_url_is_clean(tmp_path: Path, params: str) -> None:
    text = rules(NOTIFY.format(name="oom", source="docker", params=params))
    result = check(tmp_path, text, "--strict", docker=True, webhook_url="http://127.0.0.1:9/x"
                   if params == "{}" else None)
    assert result.returncode == 0, result.stdout
    assert lines(result) == ["ok: 1 rules in 1 file(s)"]


def test_a_rule_whose_source_is_off_is_a_warning(tmp_path: Path) -> None:
    text = rules(NOTIFY.format(name="slow-queries", source="probe", params="{}"))
    result = check(tmp_path, text, docker=True, webhook_url="http://127.0.0.1:9/x")
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result)[0] == (
        f"{tmp_path / 'rules.yaml'}:2: rule 'slow-queries': warning: source 'probe' is not "
        "enabled in this configuration ([[probes]]); the rule never fires")
    assert check(tmp_path, text, "--strict", docker=True,
                 webhook_url="http://127.0.0.1:9/x").returncode == 1


def test_docker_rules_with_docker_off_warn_for_source_and_action(tmp_path: Path) -> None:
    result = check(tmp_path, rules(RESTART.format(name="heal")), docker=False)
    assert result.returncode == 0, result.stdout + result.stderr
    where = f"{tmp_path / 'rules.yaml'}:2: rule 'heal': warning: "
    assert lines(result)[:2] == [
        where + "source 'docker' is not enabled in this configuration ([docker] enabled); "
        "the rule never fires",
        where + "action docker.restart is not available: its integration is off "
        "([docker] enabled)",
    ]
    assert check(tmp_path, rules(RESTART.format(name="heal")), docker=True).returncode == 0


def test_the_bundled_rules_are_clean_with_a_full_configuration(tmp_path: Path) -> None:
    result = check(tmp_path, (ROOT / "rules" / "docker.yaml").read_text(), "--strict",
                   docker=True, webhook_url="http://127.0.0.1:9/x")
    assert result.returncode == 0, result.stdout
    assert lines(result) == ["ok: 3 rules in 1 file(s)"]


GATED = """
  - name: gated
    source: docker
    when: event.action == "oom"
    unless: ['ALERTS{alertname="Maintenance"}']
    actions:
      - notify.webhook: {}
        verify: {within: 1m, query: 'up{job="api"} == 1'}
"""


def test_gates_and_verify_queries_without_prometheus_are_warnings(tmp_path: Path) -> None:
    result = check(tmp_path, rules(GATED), docker=True, webhook_url="http://127.0.0.1:9/x")
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = lines(result)
    prefix = f"{tmp_path / 'rules.yaml'}:2: rule 'gated': warning: "
    assert prefix + ("unless: needs [prometheus] url; without it these gates are not checked "
                     "and the rule acts as if none blocked it") in warnings
    assert prefix + ("actions: notify.webhook: verify.query needs [prometheus] url; without "
                     "it the verification comes out unknown and the ladder stops there"
                     ) in warnings


def test_a_kpi_rule_without_prometheus_names_the_setting(tmp_path: Path) -> None:
    text = rules("""
  - name: slow
    source: kpi
    query: 'up == 0'
    actions:
      - notify.webhook: {}
""")
    result = check(tmp_path, text, docker=True, webhook_url="http://127.0.0.1:9/x")
    assert lines(result)[0].endswith(
        "warning: source 'kpi' is not enabled in this configuration ([prometheus] url); "
        "the rule never fires"), result.stdout
