"""`remedyd test`: the bundled packs' tests pass; a failing expectation is a readable diff
and exit 1; a bad test file is exit 2 naming the file, the test and the key; values read
as promtool reads them; time is a fake clock (a `for` fires when it elapses)."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.core.rules import discover
from daemon.engine.kpi import series_id
from daemon.testing.notation import Gap, NotationError, expand
from daemon.testing.run import main
from daemon.testing.series import SeriesError, parse_series

ROOT = Path(__file__).resolve().parents[1]
PACK_TESTS = sorted((ROOT / "rules" / "tests").glob("*.yaml"))

RESTART = """\
rules:
  - name: restart-unhealthy
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    for: {hold}
    cooldown: 2m
    actions:
      - docker.restart: {{}}
"""

UNHEALTHY = """\
      - at: {at}
        source: docker
        action: health_status
        subject: web
        attributes: {{health: unhealthy}}
"""


def run(*paths: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(paths), out, err)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, test: str, rules: str = RESTART.format(hold="0s")) -> Path:
    (tmp_path / "rules.yaml").write_text(rules)
    path = tmp_path / "rules.test.yaml"
    path.write_text(test)
    return path


# -- the bundled packs --------------------------------------------------------------------

def test_every_bundled_pack_has_tests_and_they_pass() -> None:
    packs = {p.name for p in (ROOT / "rules").glob("*.yaml")}
    tested = {p.name for p in PACK_TESTS}
    assert packs <= tested, f"packs without a test file in rules/tests/: {packs - tested}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMEDYD_")}
    done = subprocess.run([sys.executable, "-m", "daemon", "test", *map(str, PACK_TESTS)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(line.startswith("ok: ") for line in done.stdout.splitlines()), done.stdout


def test_test_files_beside_rules_are_not_loaded_as_rules(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: []\n")
    (tmp_path / "a.test.yaml").write_text("rule_files: [a.yaml]\n")
    (tmp_path / "b.test.yml").write_text("rule_files: [a.yaml]\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "a.yaml").write_text("rule_files: [../a.yaml]\n")
    assert discover([tmp_path]) == [tmp_path / "a.yaml"]
    assert not [p for p in discover([ROOT / "rules"]) if "test" in str(p.relative_to(ROOT))]


# -- failing, and bad files -------------------------------------------------------------

def test_a_failing_expectation_is_exit_1_and_a_diff_with_time_and_rule(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
rule_files: [rules.yaml]
tests:
  - name: cooldown
    input_events:
{UNHEALTHY.format(at="10s")}{UNHEALTHY.format(at="1m")}
    expect:
      - {{at: 10s, rule: restart-unhealthy, decision: act, actions: [docker.restart]}}
      - {{at: 1m, rule: restart-unhealthy, decision: act}}
""")
    code, out, _ = run(path)
    assert code == 1
    lines = [line.strip() for line in out.splitlines()]
    assert f"FAILED {path}: tests[0] ('cooldown')" in lines
    # As expected, then what was expected and what came instead, at that time.
    assert "at     10s  restart-unhealthy: decision act [docker.restart] on " \
        "docker/container/web" in lines
    assert "- at      1m  restart-unhealthy: decision act" in lines
    assert ("+ at      1m  restart-unhealthy: decision suppressed by cooldown [docker.restart] "
            "on docker/container/web (acted on this target 50.0s ago; cooldown 120s)") in lines
    assert lines[-1] == f"FAILED: {path}: 0 of 1 test(s) passed"


def test_an_unexpected_decision_fails_the_test(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
rule_files: [rules.yaml]
tests:
  - input_events:
{UNHEALTHY.format(at="0s")}
    expect: []
""")
    code, out, _ = run(path)
    assert code == 1
    assert "+ at      0s  restart-unhealthy: decision act [docker.restart]" in out


@pytest.mark.parametrize(("body", "named"), [
    ("tests:\n  - name: a\n    input_series:\n      - {series: 'up{job=\"x\"', rule: r, "
     "values: '1'}\n",
     "tests[0] ('a').input_series[0].series: 'up{job=\"x\"': expected '}' at column 11"),
    ("tests:\n  - input_series:\n      - {series: 'up', rule: r, values: '1 2+x3'}\n",
     "tests[0].input_series[0].values: '2+x3' (value 2) is not a number"),
    ("tests:\n  - input_events:\n      - {at: soon, source: docker, action: die, subject: w}\n",
     "tests[0].input_events[0].at: not a duration: 'soon'"),
    ("tests:\n  - input_events:\n      - {at: 1s, source: docker, action: die, subject: w, "
     "colour: red}\n", "tests[0].input_events[0].colour: unknown key"),
    ("tests:\n  - {}\n  - expect:\n      - {at: 1m, rule: restart-unhealthy}\n",
     "tests[1].expect[0]: an expectation has either `decision:`"),
    ("tests:\n  - expect:\n      - {at: 1m, rule: nope, decision: act}\n",
     "tests[0].expect[0].rule: no rule 'nope' in the rule files (rules: restart-unhealthy)"),
    ("tests:\n  - input_series:\n      - {series: 'up', rule: restart-unhealthy, values: '1'}\n",
     "tests[0].input_series[0].rule: rule 'restart-unhealthy' is a `source: docker` rule"),
    ("tests: []\n", "tests: List should have at least 1 item"),
])
def test_a_bad_test_file_is_exit_2_naming_the_file_test_and_key(
        tmp_path: Path, body: str, named: str) -> None:
    path = write(tmp_path, "rule_files: [rules.yaml]\n" + body)
    code, out, err = run(path)
    assert code == 2, out + err
    assert f"error: {path}: {named}" in err, err


def test_missing_rule_files_and_bad_yaml_are_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "rule_files: [gone.yaml]\ntests: [{}]\n")
    code, _, err = run(path)
    assert code == 2 and f"{path}: rule_files[0]: 'gone.yaml': no such file" in err
    path.write_text("rule_files: [rules.yaml\n")
    code, _, err = run(path)
    assert code == 2 and "invalid YAML" in err


def test_rules_that_do_not_load_fail_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "rule_files: [rules.yaml]\ntests: [{}]\n",
                 RESTART.format(hold="0s").replace("docker.restart", "docker.restrat"))
    code, out, _ = run(path)
    assert code == 1
    assert "the rules under test do not load" in out and "docker.restrat" in out


# -- the fake clock ---------------------------------------------------------------------

def test_a_for_fires_when_it_elapses_and_the_cooldown_runs_on_the_fake_clock(
        tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - input_events:
{UNHEALTHY.format(at="10s")}{UNHEALTHY.format(at="1m")}{UNHEALTHY.format(at="3m")}
    expect:
      - {{at: 1m40s, rule: restart-unhealthy, decision: act}}
""", RESTART.format(hold="90s"))
    code, out, err = run(path)
    assert code == 0, out + err


def test_repeats_within_the_coalescing_window_are_one_incident(tmp_path: Path) -> None:
    path = write(tmp_path, """\
rule_files: [rules.yaml]
tests:
  - input_events:
      - {at: 0s, source: docker, action: health_status, subject: web,
         attributes: {health: unhealthy}, repeat: 4, every: 1s}
    expect:
      - {at: 0s, rule: restart-unhealthy, decision: act}
""")
    assert run(path)[0] == 0


# -- promtool's notation ------------------------------------------------------------------

@pytest.mark.parametrize(("values", "samples"), [
    # The examples of promtool's documentation (unit testing for rules, <series>).
    ("-2+4x3", [-2.0, 2.0, 6.0, 10.0]),
    (" 1-2x4", [1.0, -1.0, -3.0, -5.0, -7.0]),
    (" 1x4", [1.0, 1.0, 1.0, 1.0, 1.0]),
    (" 1 _x3 stale", [1.0, Gap.MISSING, Gap.MISSING, Gap.MISSING, Gap.STALE]),
    ("1+0x6 0 0", [1.0] * 7 + [0.0, 0.0]),
    ("10+10x2 30+20x5", [10.0, 20.0, 30.0, 30.0, 50.0, 70.0, 90.0, 110.0, 130.0]),
    ("0x10 1e3 -Inf +Inf .5", [16.0, 1000.0, -math.inf, math.inf, 0.5]),
    ("_ 1x0", [Gap.MISSING, 1.0]),
    ("0.1+0.1x2", [0.1, 0.2, 0.30000000000000004]),  # added up, as Prometheus does
])
def test_expanding_notation(values: str, samples: list[float | Gap]) -> None:
    assert expand(values) == samples


def test_nan_is_a_value() -> None:
    (nan,) = expand("NaN")
    assert isinstance(nan, float) and math.isnan(nan)


@pytest.mark.parametrize("values", ["1+x3", "x3", "1+2", "stalex2", "1_x3", "one", "1x"])
def test_what_promtool_would_not_read_is_an_error(values: str) -> None:
    with pytest.raises(NotationError):
        expand(values)


def test_series_notation() -> None:
    assert parse_series('up{job="api", instance="a:1"}') == {
        "__name__": "up", "job": "api", "instance": "a:1"}
    assert parse_series("{service='api',}") == {"service": "api"}
    assert parse_series('x{a="q\\"uote\\n"}') == {"__name__": "x", "a": 'q"uote\n'}
    assert series_id(parse_series('{b="2", a="x\\"y"}')) == '{a="x\\"y",b="2"}'
    for bad in ("", "{a=b}", '{a="1"', '{a="1", a="2"}', 'up{"a"="1"}'):
        with pytest.raises(SeriesError):
            parse_series(bad)


# -- KPI series: a series is the query's answer at each evaluation -----------------------

KPI = """\
rules:
  - name: too-high
    source: kpi
    query: my_gauge
    {extra}
    when: event.attributes.value > 5.0
    actions:
      - notify.webhook: {{}}
"""


def kpi_test(tmp_path: Path, values: str, expect: str, extra: str = "on_missing: hold",
             interval: str = "30s") -> tuple[int, str]:
    path = write(tmp_path, f"""\
rule_files: [rules.yaml]
evaluation_interval: 30s
tests:
  - interval: {interval}
    input_series:
      - {{series: 'my_gauge{{job="api"}}', rule: too-high, values: '{values}'}}
    expect:
{expect}""", KPI.format(extra=extra))
    code, out, err = run(path)
    return code, out + err


def test_a_kpi_rule_decides_once_per_firing_and_missing_data_holds(tmp_path: Path) -> None:
    code, out = kpi_test(tmp_path, "9 9 _x3 9 1 9", """\
      - {at: 0s, rule: too-high, decision: act, target: '{__name__="my_gauge", job="api"}'}
      - {at: 0s, rule: too-high, state: firing}
      - {at: 3m, rule: too-high, state: resolved}
      - {at: 3m30s, rule: too-high, state: firing}
      - {at: 3m30s, rule: too-high, decision: act}
""")
    assert code == 0, out


@pytest.mark.parametrize("values", ["1 _ 1", "1 NaN 1", "1 stale 1"])
def test_no_answer_or_nan_is_a_missing_sample_that_on_missing_counts(
        tmp_path: Path, values: str) -> None:
    code, out = kpi_test(tmp_path, values, """\
      - {at: 30s, rule: too-high, decision: act}
      - {at: 1m, rule: too-high, state: resolved}
""", extra="on_missing: breach")
    assert code == 0, out


def test_a_rule_is_queried_at_its_own_interval(tmp_path: Path) -> None:
    # Samples every 30s; the rule polls every 1m and so never sees the odd ones.
    code, out = kpi_test(tmp_path, "1 9 1 9 1", "      []\n", extra="interval: 1m")
    assert code == 0, out
    code, out = kpi_test(tmp_path, "1 9 1 9 1 9 9", "      - {at: 3m, rule: too-high, "
                         "decision: act}\n", extra="interval: 1m")
    assert code == 0, out


def test_verbose_shows_the_state_changes_no_expectation_names(tmp_path: Path) -> None:
    path = write(tmp_path, f"""\
rule_files: [rules.yaml]
tests:
  - input_events:
{UNHEALTHY.format(at="10s")}
    expect:
      - {{at: 1m40s, rule: restart-unhealthy, decision: act}}
""", RESTART.format(hold="90s"))
    out, err = io.StringIO(), io.StringIO()
    assert main([path], out, err, verbose=True) == 0, out.getvalue() + err.getvalue()
    lines = [line.strip() for line in out.getvalue().splitlines()]
    assert "· at     10s  restart-unhealthy: state pending of docker/container/web" in lines
    assert "· at   1m40s  restart-unhealthy: state firing of docker/container/web" in lines
