"""remedyd run | check | audit verify|tail | version"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from daemon import __version__

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
    audit = sub.add_parser("audit", help="inspect an audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain and the checkpoint")
    verify.add_argument("path", type=Path)
    verify.add_argument("--checkpoint", type=Path, help="the log's checkpoint, best a copy "
                        "kept off-host (default: PATH.checkpoint when it exists)")
    tail = audit_sub.add_parser("tail", help="print the newest records")
    tail.add_argument("path", type=Path)
    tail.add_argument("-n", "--limit", type=int, default=20)
    sub.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"remedyd {__version__}")
        return EXIT_OK
    if args.command == "audit":
        return _audit(args)
    if args.command == "check":
        return _check(args)
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
    logging.basicConfig(level=settings.log.level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
    summary = f"ok: {len(ruleset.rules)} rules in {len(ruleset.files)} file(s)"
    print(summary + (f", {len(warnings)} warning(s)" if warnings else ""))
    return EXIT_PROBLEMS if warnings and args.strict else EXIT_OK


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
