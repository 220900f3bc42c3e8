"""deploy/compose: a valid Compose file whose remedyd service is hardened, mounts what its
configuration names, and shows the opt-in scope on an example service."""

from __future__ import annotations

import copy
import importlib.resources
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from daemon.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy/compose/docker-compose.yml"
CONFIG = ROOT / "deploy/compose/remedyd.toml"


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def compose_schema_errors(document: dict[str, Any]) -> list[str]:
    # The Compose specification's schema as check-jsonschema vendors it: nothing is
    # fetched at test time.
    schema_file = (importlib.resources.files("check_jsonschema")
                   / "builtin_schemas/vendor/compose-spec.json")
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(document)]


def compose_plugin() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           timeout=30)
    return docker if probe.returncode == 0 else None


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert compose_schema_errors(compose()) == []
    # The schema is the one that refuses what Compose refuses.
    broken = copy.deepcopy(compose())
    broken["services"]["remedyd"]["group_add"] = "docker"
    broken["services"]["remedyd"]["restart_policy"] = "always"
    errors = compose_schema_errors(broken)
    assert any(e.startswith("services/remedyd/group_add") for e in errors), errors
    assert any("restart_policy" in e for e in errors), errors


def test_docker_compose_config_accepts_the_file() -> None:
    docker = compose_plugin()
    if docker is None:
        pytest.skip("no `docker compose` plugin here; the schema test above checks the file")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "DOCKER_GID": "999"})
    assert result.returncode == 0, result.stderr


def test_remedyd_runs_read_only_with_the_socket_read_only_and_its_state_in_a_volume() -> None:
    service = compose()["services"]["remedyd"]
    volumes = service["volumes"]
    assert "/var/run/docker.sock:/var/run/docker.sock:ro" in volumes
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert service["cap_drop"] == ["ALL"]
    assert service["user"] == "10001" and service["group_add"] == ["${DOCKER_GID:-999}"]
    state = [v for v in volumes if v.split(":")[1] == "/var/lib/remedyd"]
    assert state == ["remedyd-state:/var/lib/remedyd"]
    assert "remedyd-state" in compose()["volumes"]
    assert service["ports"] == ["127.0.0.1:9464:9464"]
    # The image's check: /healthz at the configured listen address.
    assert service["healthcheck"]["test"] == ["CMD", "remedyd", "health"]


def test_the_mounted_configuration_is_the_one_remedyd_reads() -> None:
    service = compose()["services"]["remedyd"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
    here = COMPOSE.parent
    assert (here / mounts["/etc/remedyd/config.toml"]).resolve() == CONFIG
    assert (here / mounts["/etc/remedyd/rules"]).resolve() == ROOT / "rules"
    config_at = service["command"][service["command"].index("--config") + 1]
    assert config_at == "/etc/remedyd/config.toml"

    settings = load_settings(CONFIG)
    assert settings.docker.scope == "labelled"
    assert settings.docker.url == service["environment"]["REMEDYD_DOCKER__URL"]
    assert settings.rules.paths == ["/etc/remedyd/rules"]
    assert Path(settings.audit.path).parent == Path("/var/lib/remedyd")
    assert settings.server.port == 9464


def test_the_example_service_opts_in_by_label() -> None:
    app = compose()["services"]["app"]
    assert app["labels"]["remedyd.enable"] == "true"
    assert app["healthcheck"]["test"]


def readme_compose_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("\n## Docker Compose\n"):text.index("\n## Rules\n")]
    return [block.split("\n```", 1)[0] for block in section.split("```yaml\n")[1:]]


def test_the_readme_compose_example_is_valid_and_as_hardened_as_the_file() -> None:
    service_block = readme_compose_blocks()[0]
    example = yaml.safe_load(service_block)
    assert compose_schema_errors(example) == []
    shipped = compose()["services"]["remedyd"]
    remedyd = example["services"]["remedyd"]
    for key in ("user", "group_add", "read_only", "tmpfs", "cap_drop", "security_opt",
                "mem_limit", "pids_limit", "command", "ports"):
        assert remedyd[key] == shipped[key], key
    targets = {v.split(":")[1]: v for v in remedyd["volumes"]}
    assert targets.keys() == {v.split(":")[1] for v in shipped["volumes"]}
    assert targets["/var/run/docker.sock"].endswith(":ro")
    assert example["services"]["app"]["labels"] == {"remedyd.enable": "true"}



def test_the_readme_rule_on_compose_labels_acts_on_its_service_only(tmp_path: Path) -> None:
    from daemon.actions.params import ACTIONS
    from daemon.engine.evaluator import Evaluator
    from daemon.engine.ruleset import load_ruleset
    from tests.rulekit import docker_event

    (tmp_path / "compose.yaml").write_text(readme_compose_blocks()[1])
    ruleset, errors = load_ruleset([str(tmp_path)], ACTIONS)
    assert errors == []
    evaluator = Evaluator(ruleset)

    def decided(container: str, **labels: str) -> bool:
        event = docker_event("health_status: unhealthy", container=container, **labels)
        return bool(evaluator.evaluate(event, 0.0))

    lake = {"com.docker.compose.project": "lake"}
    assert decided("a" * 64, **lake, **{"com.docker.compose.service": "minio"})
    assert not decided("b" * 64, **lake, **{"com.docker.compose.service": "postgres"})
    assert not decided("c" * 64)  # not started by Compose
    assert evaluator.problems == []
