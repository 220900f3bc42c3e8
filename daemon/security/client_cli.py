"""`remedyd security findings|accept`: the running daemon's security API from the shell."""

from __future__ import annotations

import argparse
import getpass
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any, TextIO

from daemon.http.address import daemon_url
from daemon.security.api import ACCEPT_PATH, FINDINGS_PATH

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
TIMEOUT = 10.0


class ClientError(Exception):
    pass


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        url, token = _where(args)
        if args.security_command == "findings":
            _print_findings(_call(url + FINDINGS_PATH, None, None), out)
            return EXIT_OK
        body = {"object": args.object, "checks": list(args.checks), "reason": args.reason,
                "by": args.by or _user()}
        answer = _call(url + ACCEPT_PATH, body, token)
        _print_accepted(answer.get("accepted") or {}, out)
        return EXIT_OK
    except ClientError as exc:
        err.write(f"remedyd: {exc}\n")
        return EXIT_FAILED


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


def _where(args: argparse.Namespace) -> tuple[str, str | None]:
    """The daemon's base URL and the API token, from --url and --config."""
    from daemon.core.errors import ConfigError
    from daemon.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        raise ClientError(f"config error: {exc}") from None
    return daemon_url(settings.server, args.url), settings.server.api_token


def _call(url: str, body: dict[str, Any] | None, token: str | None) -> dict[str, Any]:
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers,
                                     method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            answer: dict[str, Any] = json.loads(response.read() or b"{}")
            return answer
    except urllib.error.HTTPError as exc:
        raise ClientError(_refusal(url, exc, token)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ClientError(f"cannot reach the daemon at {url}: {reason} (is remedyd running? "
                          "--url or [server] listen of --config says where)") from None
    except ValueError as exc:
        raise ClientError(f"{url} answered something that is not JSON: {exc}") from None


def _refusal(url: str, exc: urllib.error.HTTPError, token: str | None) -> str:
    try:
        message = str(json.loads(exc.read()).get("error") or "")
    except (ValueError, AttributeError, OSError):
        message = ""
    if exc.code == 401:
        hint = ("no [server] api_token in the configuration given (--config)" if not token
                else "the token of --config is not the daemon's [server] api_token")
        return f"the daemon refused: {message or 'unauthorised'} ({hint})"
    return f"the daemon answered HTTP {exc.code}: {message or exc.reason}"


def _when(stamp: Any) -> str:
    if not isinstance(stamp, (int, float)):
        return "-"
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _print_findings(answer: dict[str, Any], out: TextIO) -> None:
    findings = answer.get("findings") or []
    if not findings:
        out.write("no security findings\n")
        return
    rows = [("SEVERITY", "CHECK", "OBJECT", "SINCE", "CONTROL")]
    rows += [(str(f.get("severity", "")), str(f.get("check", "")), str(f.get("object", "")),
              _when(f.get("since")), str(f.get("control", ""))) for f in findings]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.write("  ".join([*cells, row[-1]]).rstrip() + "\n")
        finding = findings[index - 1] if index else {}
        for change in finding.get("drift") or []:
            out.write(f"    {change.get('field')}: {json.dumps(change.get('before'))} -> "
                      f"{json.dumps(change.get('after'))}\n")
    out.write(f"{len(findings)} finding(s)\n")


def _print_accepted(accepted: dict[str, Any], out: TextIO) -> None:
    what = (f"waived {', '.join(accepted.get('checks') or [])} on" if accepted.get("checks")
            else "accepted the current state of")
    out.write(f"{what} {accepted.get('key', '?')} into the baseline (audited)\n")
    for change in accepted.get("diff") or []:
        out.write(f"  {change.get('field')}: {json.dumps(change.get('before'))} -> "
                  f"{json.dumps(change.get('after'))}\n")
