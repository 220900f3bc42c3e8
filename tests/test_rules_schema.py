"""The rule keys KPI rules, ladders and time semantics add: checked at load, errors named."""

from __future__ import annotations

from pathlib import Path

from daemon.actions.params import ACTIONS
from daemon.engine.ruleset import load_ruleset

KPI = """\
rules:
  - name: api-error-ratio
    source: kpi
    query: 'sum by (service) (rate(http_requests_total{code=~"5.."}[1m]))'
    interval: 15s
    params: {threshold: 0.001}
    when: event.attributes.value > params.threshold
    clear_when: event.attributes.value < params.threshold / 2
    for: 2m
    keep_firing_for: 1m
    flap: {changes: 4, within: 10m}
    unless: ['ALERTS{alertname="Maintenance"}']
    actions:
      - docker.restart: {}
        verify: {within: 2m}
    escalate:
      - notify.webhook: {url: "http://127.0.0.1:9/x"}
"""


def load(tmp_path: Path, text: str) -> tuple[list[str], list[str]]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    ruleset, errors = load_ruleset([path], ACTIONS)
    return [r.rule.name for r in ruleset.rules], [str(e) for e in errors]


def test_a_kpi_rule_with_a_ladder_loads(tmp_path: Path) -> None:
    names, errors = load(tmp_path, KPI.replace("docker.restart: {}", "notify.webhook: {}"))
    assert errors == [] and names == ["api-error-ratio"]


def test_a_kpi_rule_without_a_query_is_refused(tmp_path: Path) -> None:
    text = "\n".join(line for line in KPI.splitlines() if "query:" not in line)
    _, errors = load(tmp_path, text.replace("docker.restart: {}", "notify.webhook: {}"))
    assert len(errors) == 1 and "needs a `query` (PromQL)" in errors[0], errors


def test_a_broken_clear_when_names_its_key(tmp_path: Path) -> None:
    text = KPI.replace("docker.restart: {}", "notify.webhook: {}").replace(
        "params.threshold / 2", "params.threshold /")
    _, errors = load(tmp_path, text)
    assert len(errors) == 1 and "clear_when:" in errors[0], errors


def test_a_verify_until_is_compiled_at_load(tmp_path: Path) -> None:
    text = KPI.replace("docker.restart: {}", "notify.webhook: {}").replace(
        "verify: {within: 2m}", "verify: {within: 2m, until: 'nope.x > 1'}")
    _, errors = load(tmp_path, text)
    assert len(errors) == 1 and "verify.until: unknown variable(s) nope" in errors[0], errors


def test_escalation_steps_must_fit_the_target(tmp_path: Path) -> None:
    _, errors = load(tmp_path, KPI.replace("notify.webhook: {url", "docker.kill: {signal"))
    assert any("escalate: docker.kill" in e for e in errors), errors


def test_an_action_with_two_names_is_refused(tmp_path: Path) -> None:
    text = KPI.replace("docker.restart: {}\n", "docker.restart: {}\n        docker.stop: {}\n")
    _, errors = load(tmp_path, text)
    assert any("exactly one key" in e for e in errors), errors


def test_a_kpi_rule_acts_on_the_target_its_labels_name(tmp_path: Path) -> None:
    text = KPI.replace("    unless:", "    target: {kind: docker/container, "
                       "name: '{{ $labels.service }}'}\n    unless:")
    names, errors = load(tmp_path, text)
    assert errors == [] and names == ["api-error-ratio"]


def test_a_target_template_with_more_than_labels_is_refused(tmp_path: Path) -> None:
    text = KPI.replace("    unless:", "    target: {kind: docker/container, "
                       "name: '{{ .Value }}'}\n    unless:")
    _, errors = load(tmp_path, text)
    assert len(errors) == 1 and "target.name" in errors[0], errors
