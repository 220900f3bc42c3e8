"""remedyd run | check | test | replay | rbac | audit verify|tail | scan | security | health |
version

Every --config defaults to $REMEDYD_CONFIG (the container image sets it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from daemon import CONFIG_FILE_VARIABLE, __version__

if TYPE_CHECKING:
    # Imported where used: `remedyd version` and `audit` load none of this.
    from daemon.engine.ruleset import RuleSet
    from daemon.kube.rbac import PolicyRule
    from daemon.settings import Settings

EXIT_OK, EXIT_PROBLEMS, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="remedyd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("--config", type=Path, help="TOML configuration file")
    run.add_argument("--dry-run", action="store_true", help="decide and audit, never act")
    check = sub.add_parser("check", help="validate the configuration and rule files")
    check.add_argument("--config", type=Path)
    check.add_argument("--strict", action="store_true",
                       help="exit 1 on warnings too (rules that cannot work here)")
    check.add_argument("rule_paths", nargs="*", help="rule files or directories "
                       "(default: [rules] paths from the configuration)")
    test = sub.add_parser("test", help="run rule test files (YAML, as `promtool test "
                          "rules` reads them) on a fake clock; nothing is executed")
    test.add_argument("files", nargs="+", type=Path, metavar="FILE")
    test.add_argument("-v", "--verbose", action="store_true",
                      help="print what happened in passing tests too")
    replay = sub.add_parser("replay", help="run rules over recorded events on a fake clock "
                            "and print per rule what they would have decided (next to what "
                            "was decided then, from an audit log)")
    replay.add_argument("--config", type=Path, help="its [rules] paths, [safety] and [notify] "
                        "limits apply")
    replay.add_argument("--rules", dest="rule_paths", action="extend", nargs="+", default=[],
                        metavar="PATH", help="rule file or directory (repeatable; default: "
                        "[rules] paths from the configuration)")
    recorded = replay.add_mutually_exclusive_group(required=True)
    recorded.add_argument("--audit", type=Path, metavar="FILE",
                          help="an audit log: the events its decisions were made on")
    recorded.add_argument("--events", type=Path, metavar="FILE.jsonl", action="append",
                          help="raw events: `docker events --format '{{json .}}'` lines "
                          "and/or Kubernetes watch events ({\"type\": ..., \"object\": ...}); "
                          "repeatable, merged in time order")
    replay.add_argument("-v", "--verbose", action="store_true",
                        help="list every rule's decisions, not only the changed ones")
    rbac = sub.add_parser("rbac", help="print the least-privilege ClusterRole (YAML) for "
                          "the watched kinds and the loaded rules' Kubernetes actions")
    rbac.add_argument("--config", type=Path)
    rbac.add_argument("--service-account", metavar="NAMESPACE/NAME", type=_service_account,
                      help="also print a ClusterRoleBinding granting it to this service account")
    rbac.add_argument("rule_paths", nargs="*", help="rule files or directories "
                      "(default: [rules] paths from the configuration)")
    audit = sub.add_parser("audit", help="inspect an audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain and the checkpoint")
    verify.add_argument("path", type=Path)
    verify.add_argument("--checkpoint", type=Path, help="the log's checkpoint, best a copy "
                        "kept off-host (default: PATH.checkpoint when it exists)")
    tail = audit_sub.add_parser("tail", help="print the newest records")
    tail.add_argument("path", type=Path)
    tail.add_argument("-n", "--limit", type=int, default=20)
    scan = sub.add_parser("scan", help="evaluate the security checks once, against the live "
                          "Docker and/or Kubernetes state or against manifest files")
    scan.add_argument("paths", nargs="*", metavar="PATH", help="manifest files or directories "
                      "(YAML, multi-document, List kinds); `-` reads stdin (kustomize "
                      "build | remedyd scan -); none: the live state")
    scan.add_argument("--config", type=Path, help="its [docker], [kubernetes], [rules] and "
                      "[security] settings apply")
    scan.add_argument("--rules", dest="rule_paths", action="extend", nargs="+", default=[],
                      metavar="PATH", help="rule file or directory (repeatable; default: the "
                      "`source: security` rules of [rules] paths)")
    scan.add_argument("--docker", action="store_true", help="scan the live Docker containers")
    scan.add_argument("--kubernetes", action="store_true",
                      help="scan the live Kubernetes objects")
    scan.add_argument("--format", choices=("table", "json", "sarif"), default="table")
    scan.add_argument("-o", "--output", type=Path, metavar="FILE",
                      help="write the report here instead of stdout")
    scan.add_argument("--fail-on", choices=("low", "medium", "high", "critical"),
                      default=None, help="exit 1 when a finding is at least this severe")
    scan.add_argument("--baseline", type=Path, metavar="FILE",
                      help="also report drift from this baseline")
    scan.add_argument("--write-baseline", type=Path, metavar="FILE",
                      help="write the scanned objects' security fields as the approved "
                      "baseline ([security] baseline reads it)")
    security = sub.add_parser("security", help="the running daemon's security findings and "
                              "baseline")
    security_sub = security.add_subparsers(dest="security_command", required=True)
    findings = security_sub.add_parser("findings", help="list the current findings")
    accept = security_sub.add_parser("accept", help="accept an object's current security "
                                     "state into the baseline (ends its drift finding) or, "
                                     "with --check, accept those findings on it as they are")
    accept.add_argument("object", metavar="OBJECT", help="docker/container/NAME or "
                        "kubernetes/KIND/[NAMESPACE/]NAME, as findings name it")
    accept.add_argument("--check", dest="checks", action="append", default=[],
                        metavar="ID", help="a check id to accept on it (repeatable)")
    accept.add_argument("--reason", default="", help="why (kept in the audit log)")
    accept.add_argument("--by", default="", help="who accepts (default: $USER)")
    for command in (findings, accept):
        command.add_argument("--config", type=Path, help="its [server] listen and api_token")
        command.add_argument("--url", help="the daemon's HTTP address (default: from "
                             "[server] listen)")
    health = sub.add_parser("health", help="exit 0 if the daemon on this host answers /healthz "
                            "(with --ready: /readyz), else 1: for HEALTHCHECK and probes")
    health.add_argument("--ready", action="store_true", help="ask /readyz instead")
    health.add_argument("--config", type=Path, help="its [server] listen")
    health.add_argument("--url", help="the daemon's HTTP address (default: from [server] listen)")
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "config", False) is None and os.environ.get(CONFIG_FILE_VARIABLE):
        args.config = Path(os.environ[CONFIG_FILE_VARIABLE])
    if args.command == "version":
        print(f"remedyd {__version__}")
        return EXIT_OK
    if args.command == "audit":
        return _audit(args)
    if args.command == "check":
        return _check(args)
    if args.command == "rbac":
        return _rbac(args)
    if args.command == "test":
        from daemon.testing.run import main as run_tests

        return run_tests(args.files, sys.stdout, sys.stderr, args.verbose)
    if args.command == "replay":
        from daemon.testing.replay import main as replay

        return replay(args.rule_paths, args.config, args.audit, args.events or [],
                      sys.stdout, sys.stderr, args.verbose)
    if args.command == "scan":
        from daemon.security.scan_cli import main as scan

        return scan(args, sys.stdout, sys.stderr)
    if args.command == "security":
        from daemon.security.client_cli import main as security

        return security(args, sys.stdout, sys.stderr)
    if args.command == "health":
        from daemon.http.health_cli import main as health

        return health(args, sys.stdout, sys.stderr)
    return _run(args)


def _load(path: Path | None) -> object:
    from daemon.core.errors import ConfigError
    from daemon.settings import load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"config error: {line}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from daemon.settings import Settings

    settings = _load(args.config)
    if not isinstance(settings, Settings):
        return EXIT_CONFIG
    if args.dry_run:
        settings.safety.dry_run = True
    from daemon.telemetry import logs, redact

    # Secrets are masked from the first line on, the daemon's own start included.
    redact.register(redact.secrets_of(settings))
    logs.configure(settings.log.level, settings.log.format)
    from daemon.app import Daemon
    from daemon.http.server import ListenError

    async def runner() -> int:
        return await Daemon(settings).run()

    try:
        return asyncio.run(runner())
    except ListenError as exc:
        # The address is valid but not usable here: still the configuration's fault.
        print(f"config error: {settings.origin('server.listen')}: server.listen: {exc}",
              file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:
        logging.getLogger("remedyd").error("cannot start: %s", exc)
        return EXIT_PROBLEMS


def _check(args: argparse.Namespace) -> int:
    from daemon.settings import Settings

    settings = _load(args.config)
    if not isinstance(settings, Settings):
        return EXIT_CONFIG
    # Not daemon.app: checking builds no clients, and works where the daemon's
    # integrations would not start.
    from daemon.actions.params import ACTIONS
    from daemon.engine.lint import lint
    from daemon.engine.ruleset import compile_rules
    from daemon.integrations.registry import available

    ruleset, errors = compile_rules(args.rule_paths or settings.rules.paths, ACTIONS)
    warnings = lint(ruleset, available(settings))
    problems: list[object] = [*errors, *warnings]
    for problem in sorted(problems, key=_position):
        print(problem)
    if errors:
        return EXIT_PROBLEMS
    if _uses_kubernetes(ruleset):
        from daemon.kube.rbac import describe

        print(f"kubernetes: the rules need: {describe(_needs(settings, ruleset))}")
        if local := _local_needs(settings):
            print(f"kubernetes: in remedyd's namespace: {describe(local)}")
    summary = f"ok: {len(ruleset.rules)} rules in {len(ruleset.files)} file(s)"
    print(summary + (f", {len(warnings)} warning(s)" if warnings else ""))
    return EXIT_PROBLEMS if warnings and args.strict else EXIT_OK


def _rbac(args: argparse.Namespace) -> int:
    from daemon.engine.ruleset import compile_rules
    from daemon.kube import rbac
    from daemon.settings import Settings

    settings = _load(args.config)
    if not isinstance(settings, Settings):
        return EXIT_CONFIG
    from daemon.actions.params import ACTIONS

    paths = args.rule_paths or settings.rules.paths
    ruleset, errors = compile_rules(paths, ACTIONS)
    if errors:
        # A role for half the rules would fail at the first action of the other half.
        for error in sorted(errors, key=_position):
            print(error, file=sys.stderr)
        return EXIT_PROBLEMS
    documents = [rbac.cluster_role(_needs(settings, ruleset))]
    if args.service_account is not None:
        documents.append(rbac.cluster_role_binding(*args.service_account))
    if local := _local_needs(settings):
        namespace = settings.kubernetes.leader_election.resolved_namespace()
        if args.service_account is not None:
            namespace = args.service_account[0]
        documents.append(rbac.role(local, namespace))
        if args.service_account is not None:
            documents.append(rbac.role_binding(*args.service_account))
    from daemon.integrations.kubernetes import watched_kinds

    header = ["remedyd rbac: list/watch on the [kubernetes] kinds "
              f"({', '.join(watched_kinds(settings))})",
              f"and what the Kubernetes actions of {len(ruleset.rules)} rule(s) in "
              f"{', '.join(map(str, paths))} need"]
    sys.stdout.write(rbac.render(documents, header))
    return EXIT_OK


def _service_account(value: str) -> tuple[str, str]:
    from daemon.kube.rbac import service_account

    try:
        return service_account(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _needs(settings: Settings, ruleset: RuleSet) -> list[PolicyRule]:
    """The RBAC rules for the watched kinds and every Kubernetes action the rules run."""
    from daemon.actions.params import ACTIONS
    from daemon.engine.ruleset import steps_of, targets_of
    from daemon.integrations.kubernetes import watched_kinds
    from daemon.kube.rbac import required

    steps = [(ACTIONS[spec.name], targets_of(compiled.rule)) for compiled in ruleset.rules
             for _, spec in steps_of(compiled.rule) if spec.name in ACTIONS]
    return required(watched_kinds(settings), steps)


def _local_needs(settings: Settings) -> list[PolicyRule]:
    """The rules in remedyd's own namespace: its Lease and its state ConfigMap."""
    from daemon.kube.rbac import local

    kube = settings.kubernetes
    # "auto" may turn it on where the role is applied (in a cluster): grant the Lease.
    return local(kube.leader_election.lease_name if kube.leader_election.enabled is not False
                 else None,
                 kube.state.configmap_name if kube.state.store == "configmap" else None)


def _uses_kubernetes(ruleset: RuleSet) -> bool:
    from daemon.actions.params import ACTIONS
    from daemon.engine.ruleset import steps_of

    return any(compiled.rule.source == "kubernetes" or any(
        ACTIONS[spec.name].permissions for _, spec in steps_of(compiled.rule)
        if spec.name in ACTIONS) for compiled in ruleset.rules)


def _position(problem: object) -> tuple[str, int]:
    """File, then line: a warning sorts among the errors of the same file."""
    where = str(problem).split(": ", 1)[0]
    file, _, line = where.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (where, 0)


def _audit(args: argparse.Namespace) -> int:
    from daemon.audit.log import AuditLog

    if args.audit_command == "verify":
        return _audit_verify(args.path, args.checkpoint)
    for record in AuditLog(args.path).tail(args.limit):
        print(json.dumps(record, ensure_ascii=False))
    return EXIT_OK


def _audit_verify(path: Path, checkpoint: Path | None) -> int:
    from daemon.audit.checkpoint import default_checkpoint_path
    from daemon.audit.verify import verify

    if checkpoint is None:
        default = default_checkpoint_path(path)
        if default.exists():
            checkpoint = default
        else:
            print(f"checkpoint: none ({default} does not exist); a cut tail goes unseen")
    result = verify(path, checkpoint=checkpoint)
    if result.checkpoint is not None:
        print(f"checkpoint: {checkpoint} (seq {result.checkpoint.seq})")
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if result.open_intents:
        count = len(result.open_intents)
        shown = ", ".join(f"seq {seq} (incident {incident})"
                          for seq, incident in result.open_intents[:10])
        more = f", and {count - 10} more" if count > 10 else ""
        print(f"warning: {count} open intent(s) (decision without outcome): {shown}{more}",
              file=sys.stderr)
    if result.ok:
        print(f"ok: {result.records} records, chain intact")
        return EXIT_OK
    print(f"{path}: {result.reason}", file=sys.stderr)
    return EXIT_PROBLEMS
