"""No configured secret leaves remedyd: a real daemon with every kind of credential set,
driven through a remediation (an Alertmanager alert -> a notification to a receiver
whose URL has a password) and through the error paths (wrong webhook credentials, a bad
signature, an unreachable Prometheus sent its header, a failing receiver, a config
error); then its log (text and JSON), its audit log and every GET of its API are
searched for each secret. With traces exported over OTLP/HTTP to a loopback receiver,
the JSON log's decision lines carry the incident and trace id the spans have."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.harness import ROOT, DaemonProcess, WebhookSink, free_port, wait_for, write_config
from tests.webhookkit import alert, notification, signed

API_TOKEN = "api-SECRET-token-0123456789"
AM_TOKEN = "am-SECRET-bearer-24680"
AM_USER, AM_PASSWORD = "alertmanager", "am-SECRET-basic-13579"
HMAC_SECRET = "hmac-SECRET-generic-abcdef"
PROM_TOKEN = "prom-SECRET-header-55555"
AM_HEADER = "amhdr-SECRET-77777"
NOTIFY_PASSWORD = "notify-SECRET-pass-31415"
SECRETS = (API_TOKEN, AM_TOKEN, AM_PASSWORD, HMAC_SECRET, PROM_TOKEN, AM_HEADER,
           NOTIFY_PASSWORD)

RULES = """
rules:
  - name: page-on-alert
    description: pages whoever [notify] webhook_url names
    when: event.attributes.labels.remedyd_test == "secrets"
    source: webhook
    match: {kind: alert, action: [firing]}
    actions:
      - notify.webhook: {message: "an alert fired"}
  - name: errors-high
    source: kpi
    query: 'sum(rate(http_requests_total{code=~"5.."}[1m]))'
    interval: 1s
    when: event.attributes.value > 0.01
    actions:
      - notify.webhook: {}
"""


class Receiver:
    """Loopback HTTP: OTLP/HTTP traces on POST /v1/traces, Alertmanager's silences on GET
    (none), anything else 404. Records the spans and the headers it was sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend(scope.spans)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                receiver.headers.append(dict(self.headers))
                answer = b"[]" if self.path.startswith("/api/v2/silences") else b"{}"
                self.send_response(200 if answer == b"[]" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Receiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, WebhookSink]]:
    with Receiver() as otlp, WebhookSink(fail_first=1) as sink:
        yield otlp, sink


def answers(daemon: DaemonProcess) -> dict[str, str]:
    """Every GET the API serves without a path parameter, and /readyz."""
    got = daemon.get("/api/v1/openapi.json")
    assert got is not None and got[0] == 200
    spec = json.loads(got[1])
    paths = [p for p, ops in spec["paths"].items() if "get" in ops and "{" not in p]
    assert "/api/v1/audit" in paths and "/api/v1/rules" in paths
    out = {}
    for path in [*paths, "/readyz", "/api/v1/audit?limit=1000"]:
        answer = daemon.get(path)
        assert answer is not None, path
        out[path] = answer[1].decode(errors="replace")
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_secret_in_logs_audit_or_api(tmp_path: Path, fmt: str,
                                        receivers: tuple[Receiver, WebhookSink]) -> None:
    otlp, sink = receivers
    hook = sink.url.replace("http://", f"http://remedyd:{NOTIFY_PASSWORD}@")
    daemon = DaemonProcess(tmp_path / "d", RULES, webhook_url=hook, extra={
        "server": {"api_token": API_TOKEN},
        "log": {"format": fmt},
        "webhooks": {"alertmanager": True, "alertmanager_token": AM_TOKEN,
                     "alertmanager_username": AM_USER, "alertmanager_password": AM_PASSWORD},
    }, env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{otlp.url}/v1/traces",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "remedyd-test"})
    # Written by hand: write_config has no inline or nested tables. Nothing listens at
    # the Prometheus URL: every KPI poll fails, with the header on it.
    with daemon.config.open("a") as config:
        config.write(f'[webhooks.generic.ci]\nsecret = "{HMAC_SECRET}"\n'
                     f'[prometheus]\nurl = "http://127.0.0.1:{free_port()}"\n'
                     f'headers = {{Authorization = "Bearer {PROM_TOKEN}"}}\n'
                     f'[alertmanager]\nurl = "{otlp.url}"\n'
                     f'headers = {{X-Scope-OrgID = "{AM_HEADER}"}}\n')
    daemon.start()
    try:
        hooks = f"{daemon.url}/webhooks"
        body = json.dumps(notification(alert("SecretsTest", remedyd_test="secrets"))).encode()
        assert post(f"{hooks}/alertmanager", body, {"Authorization": "Bearer wrong"}) == 401
        assert post(f"{hooks}/alertmanager", body,
                    {"Authorization": basic(AM_USER, "wrong")}) == 401
        assert post(f"{hooks}/generic/ci", b'{"a": 1}',
                    signed(b'{"a": 1}', "not-the-secret-at-all")) == 401
        assert post(f"{hooks}/alertmanager", body, {"Authorization": f"Bearer {AM_TOKEN}"}) == 200
        wait_for(lambda: sink.bodies, 30, "the notification (its first try fails)")
        [decided] = [r for r in daemon.audit("decision") if r["rule"] == "page-on-alert"]
        wait_for(lambda: [r for r in daemon.audit("outcome")
                          if r["incident"] == decided["incident"]], 10, "the outcome")
        wait_for(lambda: "kpi rule errors-high: query unreachable" in daemon.log(), 10,
                 "a failed KPI poll in the log")
        wait_for(lambda: any(s.trace_id.hex() == decided["trace_id"] for s in otlp.spans),
                 10, "the incident's spans at the OTLP receiver")
        served = answers(daemon)
    finally:
        daemon.stop()
    assert any(h.get("X-Scope-OrgID") == AM_HEADER for h in otlp.headers)  # it was sent

    log = daemon.log()
    audit = daemon.audit_path.read_text()
    for secret in SECRETS:
        assert secret not in log, (secret, log)
        assert secret not in audit, (secret, audit)
        for path, text in served.items():
            assert secret not in text, (secret, path, text)
    assert "remedyd:***@127.0.0.1" in audit or "***@127.0.0.1" in audit or hook not in audit

    names = {s.name for s in otlp.spans if s.trace_id.hex() == decided["trace_id"]}
    assert {"incident", "intake", "evaluate", "guard silence",
            "action notify.webhook", "attempt"} <= names
    if fmt == "json":
        entries = [json.loads(line) for line in log.splitlines() if line.strip()]
        about = [e for e in entries if e.get("incident") == decided["incident"]]
        assert any(e["logger"] == "remedyd.executor" for e in about), about
        assert all(e["trace_id"] == decided["trace_id"] for e in about)
        assert all({"time", "level", "logger", "message"} <= e.keys() for e in entries)
    else:
        assert f"incident={decided['incident']} trace={decided['trace_id']}" in log


def test_a_config_error_names_the_key_but_never_echoes_a_secret(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.toml", {
        "server": {"api_token": "SECRET-short"},
        # A username without its password: the check on the whole [webhooks] table.
        "webhooks": {"alertmanager": True, "alertmanager_token": AM_TOKEN,
                     "alertmanager_username": AM_USER},
        "prometheus": {"url": f"https://user:{NOTIFY_PASSWORD}@127.0.0.1:1", "timeout": 0},
        "alertmanager": {"headers": f"Bearer {PROM_TOKEN}"},
    })
    for command in ("run", "check"):
        result = subprocess.run([sys.executable, "-m", "daemon", command, "--config",
                                 str(config)], capture_output=True, text=True, timeout=60,
                                cwd=ROOT)
        assert result.returncode == 2, result
        said = result.stdout + result.stderr
        assert "server.api_token" in said and "webhooks" in said, said
        assert "alertmanager.headers" in said and "prometheus.timeout" in said, said
        for secret in (*SECRETS, "SECRET-short"):
            assert secret not in said, (secret, said)
