"""Rule files as an operator writes them, and `remedyd check` as they would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.actions.params import ACTIONS
from daemon.app import Daemon
from daemon.core.conditions import required_actions
from daemon.core.rules import NO_RULES, SOURCE_KINDS
from daemon.engine.ruleset import load_ruleset
from daemon.settings import Settings
from tests.harness import DaemonProcess, wait_for

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
    # A configuration where every bundled action can work, so only errors are printed.
    env = dict(os.environ, REMEDYD_DOCKER__ENABLED="true", REMEDYD_KUBERNETES__ENABLED="true",
               REMEDYD_NOTIFY__WEBHOOK_URL="http://127.0.0.1:9/hook",
               REMEDYD_PROBES='[{"name": "api", "url": "http://127.0.0.1:9/health"}]',
               REMEDYD_PROMETHEUS__URL="http://127.0.0.1:9/prometheus")
    return subprocess.run([sys.executable, "-m", "daemon", "check", *map(str, paths)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_rules_pass_check() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    # 15 remediation rules; the security pack: 32 Kubernetes and image checks and 21 Docker
    # checks in security.yaml
    assert result.stdout.splitlines()[-1] == "ok: 68 rules in 5 file(s)"
    assert "warning" not in result.stdout


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
    # A key looked up in an attribute that is a map: the map is what is read.
    ('"app" in event.attributes.labels && event.attributes.root', {"labels", "root"}),
    ('"app" in event.attributes["labels"]', {"labels"}),
    ("event.attributes.exists(k, k.startsWith('x'))", None),
    ("size(event.attributes) > 3", None),
    ('event["attributes"]["name"] == "web"', None),
])
def test_conditions_name_the_attributes_they_read(condition: str, keys: set[str] | None) -> None:
    from daemon.core.conditions import attribute_keys

    found = attribute_keys(condition)
    assert (set(found) if found is not None else None) == keys


# -- a file with no rules is a mistake unless it says so -------------------------------

@pytest.mark.parametrize("text", [
    "",
    "# bundled rules for the lakehouse\n# (the rest of the file was lost)\n",
    "rules:\n",
    "# header\nrules:\n# - name: restart-unhealthy\n",
    "{}\n",
    "rules: ~\n",
], ids=["empty", "only-comments", "rules-key-only", "cut-after-rules-key", "empty-mapping",
        "rules-null"])
def test_a_file_with_no_rules_is_an_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    ruleset, errors = load_ruleset([path], CATALOG)
    assert ruleset.rules == ()
    assert [str(e) for e in errors] == [
        f"{path}: no rules (write `rules: []` for a file that has none on purpose)"]


def test_a_file_cut_inside_a_rule_is_an_error(tmp_path: Path) -> None:
    cut = GOOD[:GOOD.index("    actions:")]
    _, errors = load_ruleset([write(tmp_path, cut)], CATALOG)
    assert len(errors) == 1 and "actions: Field required" in str(errors[0]), errors


def test_an_explicit_empty_list_is_no_rules_on_purpose(tmp_path: Path) -> None:
    write(tmp_path, "# nothing here yet\nrules: []\n", "a.yaml")
    write(tmp_path, GOOD, "b.yaml")
    ruleset, errors = load_ruleset([tmp_path], CATALOG)
    assert not errors and [r.rule.name for r in ruleset.rules] == ["restart-unhealthy"]
    ruleset, errors = load_ruleset([tmp_path / "a.yaml"], CATALOG)
    assert not errors and ruleset.rules == ()


def test_a_directory_without_rule_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("rules live here\n")
    _, errors = load_ruleset([tmp_path], CATALOG)
    assert [str(e) for e in errors] == [f"{tmp_path}: no rule files (*.yaml, *.yml)"]


# -- an action must be able to act on what its rule's events are about -----------------

@pytest.mark.parametrize("change", [
    ("source: docker", "source: probe"),
    ("    when:", "    match: {kind: image}\n    when:"),
    ('when: event.action ==', 'when: event.kind == "network" && event.action =='),
], ids=["probe-source", "match-kind-image", "condition-kind-network"])
def test_an_action_that_cannot_act_on_the_rules_targets_is_a_load_error(
        tmp_path: Path, change: tuple[str, str]) -> None:
    _, errors = load_ruleset([write(tmp_path, GOOD.replace(*change))], ACTIONS)
    assert len(errors) == 1, errors
    message = str(errors[0])
    assert message.startswith(f"{tmp_path / 'rules.yaml'}:3: rule 'restart-unhealthy': ")
    assert "docker.restart" in message and "docker/container" in message


def test_escalation_actions_must_fit_the_target_too(tmp_path: Path) -> None:
    text = (GOOD.replace("docker.restart: {timeout: 5s}", "notify.webhook: {}")
            .replace("source: docker", "source: probe")
            + "    budget: {max: 1, per: 1h, then: [docker.kill: {}]}\n")
    _, errors = load_ruleset([write(tmp_path, text)], ACTIONS)
    assert len(errors) == 1 and "budget.then: docker.kill" in str(errors[0]), errors


def test_notifications_apply_to_any_target(tmp_path: Path) -> None:
    text = (GOOD.replace("docker.restart: {timeout: 5s}", "notify.webhook: {}")
            .replace("source: docker", "source: probe"))
    ruleset, errors = load_ruleset([write(tmp_path, text)], ACTIONS)
    assert not errors and len(ruleset.rules) == 1


def test_container_actions_fit_container_rules(tmp_path: Path) -> None:
    text = GOOD.replace("when: event.action", 'when: event.kind == "container" && event.action')
    ruleset, errors = load_ruleset([write(tmp_path, text)], ACTIONS)
    assert not errors and len(ruleset.rules) == 1


def test_the_catalog_describes_each_implemented_action() -> None:
    from daemon.actions.docker import docker_actions
    from daemon.actions.kube.catalog import kube_actions
    from daemon.actions.notify import Webhook
    from daemon.actions.notify_alertmanager import AlertmanagerNotify
    from daemon.actions.notify_apprise import AppriseNotify

    implemented = [*docker_actions(object()), Webhook(object(), None),  # type: ignore[arg-type]
                   AppriseNotify(), AlertmanagerNotify(object(), None, None, ""),  # type: ignore[arg-type]
                   *kube_actions(object(), object())]  # type: ignore[arg-type]
    assert sorted(a.name for a in implemented) == sorted(ACTIONS)
    for action in implemented:
        info = ACTIONS[action.name]
        assert (info.params, info.applies_to, info.mutating) == (
            action.Params, action.applies_to, action.mutating), action.name
        assert CATALOG[action.name] is info.params


def test_the_docker_source_emits_the_kinds_rules_are_checked_against() -> None:
    from daemon.sources.docker import EVENT_FILTERS

    assert tuple(EVENT_FILTERS["type"]) == SOURCE_KINDS["docker"]


# -- what a running daemon says about its rules ------------------------------------------

def test_a_reload_that_finds_no_rules_keeps_the_set_and_says_so(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, GOOD).start()
    path = daemon.rules_dir / "rules.yaml"
    try:
        for failures, text in enumerate(["", "# cut short\n", "rules:\n"], start=1):
            path.write_text(text)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda n=failures: daemon.metric(  # type: ignore[misc]
                "remedyd_rule_reload_failures_total") == n, 10, f"reload failure {failures}")
            answer = daemon.get("/readyz")
            assert answer is not None and answer[0] == 200, answer
            rules = json.loads(answer[1])["checks"]["rules"]
            assert rules["count"] == 1
            failed = rules["last_failed_reload"]
            assert failed["errors"] == [f"{path}: {NO_RULES}"]
            assert failed["time"].endswith("Z")
        assert daemon.metric("remedyd_rules_loaded") == 1
        path.write_text("rules: []\n")
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.metric("remedyd_rules_loaded") == 0, 10, "the empty set")
        rules = daemon.readiness()["checks"]["rules"]
        assert rules == {"ready": True, "count": 0}
    finally:
        assert daemon.stop() == 0


def test_a_warning_many_rules_share_is_one_log_line_and_each_is_on_readyz(
        tmp_path: Path) -> None:
    text = "rules:\n" + "".join(
        f"  - name: notify-{n}\n    source: webhook\n    when: event.action == \"x{n}\"\n"
        f"    actions:\n      - notify.webhook: {{}}\n" for n in range(5))
    daemon = DaemonProcess(tmp_path, text).start()  # no webhook url anywhere
    try:
        answer = daemon.get("/readyz")
        assert answer is not None
        warnings = json.loads(answer[1])["checks"]["rules"]["warnings"]
        shared = [w for w in warnings if "notify.webhook has no url" in w]
        assert [w.split(": rule ")[1].split(":")[0] for w in shared] == [
            f"'notify-{n}'" for n in range(5)]
        logged = [line for line in daemon.log().splitlines()
                  if "notify.webhook has no url" in line]
        assert len(logged) == 1, logged
        assert "5 rules ('notify-0', 'notify-1', 'notify-2' and 2 more)" in logged[0]
        assert "`remedyd check` lists each" in logged[0]
    finally:
        daemon.stop()


def test_rules_that_cannot_work_here_are_listed_on_readyz(tmp_path: Path) -> None:
    text = GOOD + "    budget: {max: 1, per: 1h, then: [notify.webhook: {}]}\n"
    daemon = DaemonProcess(tmp_path, text).start()  # Docker off, no webhook url
    try:
        answer = daemon.get("/readyz")
        assert answer is not None and answer[0] == 200
        warnings = json.loads(answer[1])["checks"]["rules"]["warnings"]
        where = f"{daemon.rules_dir / 'rules.yaml'}:3: rule 'restart-unhealthy': warning: "
        assert warnings == [
            where + "source 'docker' is not enabled in this configuration ([docker] enabled); "
            "the rule never fires",
            where + "action docker.restart is not available: its integration is off "
            "([docker] enabled)",
            where + "notify.webhook has no url and [notify] webhook_url is not set; "
            "the notification cannot be sent",
        ]
        assert "warning: " + warnings[0].split("warning: ")[1] in daemon.log()
    finally:
        daemon.stop()


def test_a_reload_with_a_misfit_action_is_refused(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, GOOD).start()
    try:
        (daemon.rules_dir / "rules.yaml").write_text(GOOD.replace("source: docker",
                                                                  "source: probe"))
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: "last_failed_reload" in daemon.readiness()["checks"]["rules"], 10,
                 "the reload to fail")
        [error] = daemon.readiness()["checks"]["rules"]["last_failed_reload"]["errors"]
        assert "rule 'restart-unhealthy': actions: docker.restart acts on docker/container" in (
            error)
    finally:
        daemon.stop()


def test_a_condition_naming_an_undeclared_param_is_refused_at_load(tmp_path: Path) -> None:
    """Rules whose params agree share one CEL context, so a misspelt `params.x` would
    read another rule's value; it is refused where it is written instead."""
    path = write(tmp_path, """rules:
  - name: a
    source: docker
    params: {limit: 3}
    when: event.attributes.x == params.limt || event.attributes.y == params["other"]
    actions:
      - notify.webhook: {url: "http://127.0.0.1:1/x"}
""")
    result = check(path)
    assert result.returncode == 1
    assert "rule 'a': when: params limt, other not declared in `params`" in result.stdout
