"""What an operator sees on a host where no Docker engine answers."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import DaemonProcess, wait_for
from tests.kube import tls
from tests.kube.server import KubeApiServer

RULES = """
rules:
  - name: heal
    source: docker
    when: event.action == "health_status" && event.attributes.health == "unhealthy"
    actions: [docker.restart: {}]
"""


def test_serves_and_reports_the_unreachable_engine(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, RULES, docker_url=f"unix://{tmp_path}/no-docker.sock")
    daemon.start(wait_ready=False)
    try:
        wait_for(lambda: daemon.metric("remedyd_source_reconnects_total", source="docker") >= 2,
                 20, "remedyd to keep retrying the engine")
        answer = daemon.get("/readyz")
        assert answer is not None and answer[0] == 503
        report = json.loads(answer[1])
        docker = report["checks"]["source:docker"]
        assert docker["ready"] is False and "no-docker.sock" in docker["peer"]
        assert report["checks"]["rules"] == {"ready": True, "count": 1}
        assert daemon.metric("remedyd_source_connected", source="docker") == 0
        assert daemon.get("/healthz") == (200, b'{"status": "ok"}')
        assert "no-docker.sock" in daemon.log()
    finally:
        assert daemon.stop() == 0


def test_api_lists_rules_and_audit_records(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, RULES).start()
    try:
        answer = daemon.get("/api/v1/rules")
        assert answer is not None and answer[0] == 200
        [rule] = json.loads(answer[1])["rules"]
        assert rule["name"] == "heal" and rule["line"] == 3
        assert rule["actions"] == [{"name": "docker.restart", "params": {}}]
        assert daemon.get("/api/v1/audit?limit=0") is not None
        assert daemon.get("/api/v1/audit?limit=0")[0] == 400  # type: ignore[index]
        answer = daemon.get("/api/v1/audit?limit=5")
        assert answer is not None and answer[0] == 200
        records = json.loads(answer[1])["records"]
        assert [r["kind"] for r in records] == ["lifecycle"]
        assert records[0]["event"] == "started"
    finally:
        daemon.stop()
    kinds = [r["kind"] for r in daemon.audit()]
    assert kinds == ["lifecycle", "lifecycle"]
    assert daemon.verify_audit().returncode == 0


def test_starts_with_broken_rules_unready_and_recovers_on_sighup(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, RULES.replace("docker.restart", "docker.restrat"))
    daemon.start(wait_ready=False)
    try:
        wait_for(lambda: daemon.readiness() is not None, 10, "/readyz to answer")
        report = daemon.readiness()
        assert report["ready"] is False
        assert "unknown action 'docker.restrat'" in report["checks"]["rules"]["errors"][0]
        (daemon.rules_dir / "rules.yaml").write_text(RULES)
        daemon.signal(signal.SIGHUP)
        wait_for(daemon.ready, 10, "the fixed rules to load on SIGHUP")
        assert daemon.metric("remedyd_rules_loaded") == 1
    finally:
        daemon.stop()


def test_start_restores_spent_budgets_from_the_audit_log(tmp_path: Path) -> None:
    from daemon.audit import AuditLog

    budgeted = RULES.replace("    actions:", "    budget: {max: 3, per: 1h}\n    actions:")
    daemon = DaemonProcess(tmp_path, budgeted)
    target = {"source": "docker", "kind": "container", "name": "db", "id": "d" * 64,
              "namespace": ""}
    with AuditLog(daemon.audit_path) as audit:
        for decision in ("act", "act", "suppressed", "act"):
            audit.append("decision", {"incident": "x", "rule": "heal", "target": target,
                                      "decision": decision})
        audit.append("decision", {"incident": "y", "rule": "gone", "target": target,
                                  "decision": "act"})
    daemon.start(wait_ready=False)
    try:
        wait_for(lambda: "restored cooldowns and budgets" in daemon.log(), 10,
                 "the daemon to restore its guards")
        assert "from 3 audited decision(s)" in daemon.log()
    finally:
        daemon.stop()
    assert daemon.verify_audit().returncode == 0


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    first = DaemonProcess(tmp_path / "a", RULES).start()
    try:
        second = DaemonProcess(tmp_path / "b", RULES,
                               extra={"server": {"listen": f"127.0.0.1:{first.port}"}})
        result = subprocess.run([sys.executable, "-m", "daemon", "run", "--config",
                                 str(second.config)], capture_output=True, text=True,
                                timeout=30, cwd=second.workdir)
        assert result.returncode == 2
        assert (f"config error: {second.config}: server.listen: cannot listen on "
                f"127.0.0.1:{first.port}: Address already in use") in result.stderr
        assert first.ready()
    finally:
        first.stop()


@pytest.mark.skipif(not tls.available(), reason="needs the openssl CLI")
@pytest.mark.parametrize("form", ["token and CA file", "client certificate and CA data"])
async def test_a_kubernetes_daemon_imports_no_kubernetes_asyncio(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    """36 MiB of resident memory: remedyd loads these credentials itself."""
    pki = tls.make_pki(tmp_path / "pki")
    server = KubeApiServer()
    server.bed.tokens["t0ken"] = "remedyd"
    server.bed.anonymous = False
    await server.start(ssl_context=pki.server_context())
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    cluster, user = ({"certificate-authority": str(pki.ca)}, {"token": "t0ken"}) \
        if form.startswith("token") else (
        {"certificate-authority-data": b64(pki.ca)},
        {"client-certificate-data": b64(pki.client_cert), "client-key-data": b64(pki.client_key)})
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server.url, **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    # Every module the daemon imports is named on its stderr (the log).
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    daemon = DaemonProcess(tmp_path / "d", RULES, extra={"kubernetes": {
        "enabled": True, "kubeconfig": str(kubeconfig)}})
    try:
        await asyncio.to_thread(daemon.start)  # ready: every kind listed, over TLS
    finally:
        await asyncio.to_thread(daemon.stop)
        await server.stop()
    imported = [line.rsplit("|", 1)[-1].strip() for line in daemon.log().splitlines()
                if line.startswith("import time:")]
    assert "daemon.clients.kubernetes" in imported
    assert not [m for m in imported if m.startswith("kubernetes_asyncio")]
    assert {e.user for e in server.bed.log.entries if e.path == "/api/v1/pods"} == {
        "remedyd" if form.startswith("token") else tls.CLIENT_USER}
