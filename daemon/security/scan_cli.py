"""`remedyd scan`: one-shot evaluation of the security checks against manifest files or
the live Docker and Kubernetes state, with the same rules, views and evaluator as the
daemon. Exit 0: nothing at or above --fail-on; 1: something is; 2: usage or input
errors (nothing could be read, bad rules or configuration)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TextIO, TypeVar

from daemon.core.events import Event, JSONValue
from daemon.core.rules import Rule
from daemon.engine.ruleset import RuleSet
from daemon.security.events import baseline_key, posture_event, subject_of, view_of
from daemon.security.findings import Finding, at_least, evaluate
from daemon.security.manifests import Loaded, Manifest, Source
from daemon.settings import Settings

T = TypeVar("T")

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class ScanError(Exception):
    """Nothing could be scanned; the message says why."""


@dataclass(slots=True)
class Scanned:
    """One object to evaluate: its platform, content, view and where it was read."""

    platform: str
    obj: dict[str, Any]
    view: dict[str, JSONValue]
    origin: str
    file: str = ""
    line: int = 0


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        return _scan(args, out, err)
    except ScanError as exc:
        for line in str(exc).splitlines():
            err.write(f"remedyd scan: {line}\n")
        return EXIT_ERROR
    finally:
        # Loading froze what it loaded; a caller that goes on (a test run calling main)
        # gets its collector back whole.
        gc.unfreeze()


def _scan(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    settings = _settings(args.config)
    ruleset = security_rules(args.rule_paths or settings.rules.paths, settings)
    # Input problems (message, file, line): SARIF reports them as tool notifications.
    notices: list[tuple[str, str, int]] = []
    scanned = _manifests(args.paths, err, notices, ruleset) if args.paths else []
    scanned.extend(_live(args, settings, err))
    if args.baseline is not None or args.write_baseline is not None:
        drift = _baseline(scanned, args.baseline, args.write_baseline, err)
    else:
        drift = {}
    findings = run_checks(ruleset, scanned, drift)
    rules = [compiled.rule for compiled in ruleset.rules]
    text = render(args.format, findings, rules, len(scanned), notices)
    if args.output is not None:
        try:
            args.output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise ScanError(f"cannot write {args.output}: {exc}") from None
        from daemon.security.report import summary_line

        err.write(f"remedyd scan: {summary_line(findings, len(scanned))}, "
                  f"written to {args.output}\n")
    else:
        out.write(text)
    floor = args.fail_on
    if floor is not None and any(at_least(f.severity, floor) for f in findings):
        return EXIT_FINDINGS
    return EXIT_OK


def _settings(path: Path | None) -> Settings:
    from daemon.core.errors import ConfigError
    from daemon.settings import load_settings

    try:
        return load_settings(path)
    except ConfigError as exc:
        raise ScanError("\n".join(f"config error: {line}"
                                  for line in str(exc).splitlines())) from None


def security_rules(paths: Sequence[str | Path], settings: Settings) -> RuleSet:
    """The `source: security` rules under `paths`, with `[security] params` applied."""
    from daemon.actions.params import ACTIONS
    from daemon.engine.ruleset import compile_rules
    from daemon.security.params import apply_params

    ruleset, errors = compile_rules(paths, ACTIONS)
    # A check that failed to load would pass silently in CI: no partial scan.
    if errors:
        raise ScanError("\n".join(str(error) for error in errors))
    checks = tuple(c for c in ruleset.rules if c.rule.source == "security")
    if not checks:
        raise ScanError(f"no `source: security` rules in {', '.join(map(str, paths))}")
    ruleset, errors = apply_params(RuleSet(rules=checks, files=ruleset.files),
                                   settings.security.params)
    if errors:
        raise ScanError("\n".join(str(error) for error in errors))
    return ruleset


# Below this much YAML a second reading process costs more than it saves.
PARALLEL_BYTES = 2 << 20


@dataclass(slots=True)
class _Read:
    """What reading some sources gave: the objects to check and what else was seen."""

    scanned: list[Scanned]
    loaded: Loaded
    policies: Counter[str]


def _manifests(paths: Sequence[str], err: TextIO, notices: list[tuple[str, str, int]],
               ruleset: RuleSet, workers: int | None = None) -> list[Scanned]:
    """The objects of `paths` with their views; large inputs (PARALLEL_BYTES and more,
    or any with `workers` given) are read by one process per CPU, each a contiguous
    share, a big file cut at document starts."""
    from daemon.security.manifests import sources

    # A check reading `object` needs the whole manifest; otherwise only the view and
    # the names are kept, and each raw object is garbage once its view is made.
    whole = any(compiled.uses_object for compiled in ruleset.rules)
    found = Loaded()
    # What is loaded lives until the process ends: the cyclic GC walking it again and
    # again while it grows doubled the load time (bench/security_scan.py), so it is off
    # while loading and the result is moved out of its sight (freeze) afterwards.
    gc.disable()
    try:
        groups = _groups(sources(paths, sys.stdin, found), workers)
        reads = _forked(_read, [(group, whole) for group in groups])
    finally:
        gc.freeze()
        gc.enable()
    scanned = [item for read in reads for item in read.scanned]
    problems = [*found.problems, *(p for read in reads for p in read.loaded.problems)]
    unchecked = sum((read.loaded.unchecked for read in reads), Counter[str]())
    policies = sum((read.policies for read in reads), Counter[str]())
    for problem in problems:
        err.write(f"remedyd scan: {problem}\n")
        notices.append((problem.message, problem.file, problem.line))
    if unchecked:
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(unchecked.items()))
        err.write(f"remedyd scan: not checked (no check reads these kinds): {kinds}\n")
    if not any(read.loaded.read_any for read in reads):
        raise ScanError(f"nothing could be read from {' '.join(paths)}")
    for item in scanned:
        if item.obj.get("kind") == "Namespace":
            # Only what is scanned is known: a Namespace with no NetworkPolicy in the
            # set has none as far as this scan can tell.
            item.view["networkPolicies"] = policies[_name(item.obj)]
    return scanned


def _groups(found: list[Source], workers: int | None) -> list[list[Source]]:
    """`found` in contiguous shares of about the same size, one per reading process."""
    from daemon.security.manifests import split

    total = sum(source.size for source in found)
    if workers is None:
        workers = _cpus() if total >= PARALLEL_BYTES else 1
    if workers <= 1 or not found:
        return [found]
    pieces = [piece for source in found for piece in (
        split(source, workers) if source.size * workers > total else [source])]
    groups: list[list[Source]] = [[] for _ in range(workers)]
    done = 0
    for piece in pieces:
        groups[min(done * workers // max(total, 1), workers - 1)].append(piece)
        done += piece.size
    return [group for group in groups if group]


def _read(group: list[Source], whole: bool) -> _Read:
    from daemon.security.manifests import read_source

    read = _Read([], Loaded(), Counter())

    def take(manifest: Manifest) -> None:
        obj = manifest.obj
        if manifest.kind == "NetworkPolicy":
            read.policies[_namespace(obj)] += 1
        view = view_of("kubernetes", obj)
        read.scanned.append(Scanned("kubernetes", obj if whole else _names(obj), view,
                                    "manifest", manifest.file, manifest.line))

    read.loaded.sink = take
    for source in group:
        read_source(source, read.loaded)
    read.loaded.sink = None  # a closure: it would not go through the pipe
    return read


def _names(obj: dict[str, Any]) -> dict[str, Any]:
    """What names an object (its subject), without its content."""
    metadata = obj.get("metadata") or {}
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
            "metadata": {key: metadata[key] for key in ("name", "namespace", "uid")
                         if key in metadata}}


def _live(args: argparse.Namespace, settings: Settings, err: TextIO) -> list[Scanned]:
    from daemon.security.live import LiveState, Unreachable, docker_state, kube_state

    docker, kube = bool(args.docker), bool(args.kubernetes)
    auto = not args.paths and not docker and not kube
    if auto:
        docker, kube = settings.docker.is_enabled(), settings.kubernetes.is_enabled()
        if not docker and not kube:
            raise ScanError("nothing to scan: no PATH, no --docker or --kubernetes, and "
                            "the configuration turns on neither [docker] (no DOCKER_HOST, "
                            "no /var/run/docker.sock) nor [kubernetes] (no in-cluster "
                            "service account, no KUBECONFIG, no ~/.kube/config)")
    if not docker and not kube:
        return []

    async def gather() -> list[LiveState | Unreachable]:
        tasks = []
        if docker:
            tasks.append(docker_state(settings.docker))
        if kube:
            tasks.append(kube_state(settings.kubernetes))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Unreachable):
                raise result
        return [r for r in results if isinstance(r, (LiveState, Unreachable))]

    results = asyncio.run(gather())
    failed = [str(r) for r in results if isinstance(r, Unreachable)]
    states = [r for r in results if isinstance(r, LiveState)]
    # Asked for explicitly, a platform that cannot be read fails the scan (CI would pass
    # on nothing); found by "auto", it fails it only when no platform could be read.
    if failed and (not auto or not states):
        raise ScanError("\n".join(["cannot read the live state:", *failed]))
    for message in failed:
        err.write(f"remedyd scan: skipped: {message}\n")
    scanned: list[Scanned] = []
    for state in states:
        for warning in state.warnings:
            err.write(f"remedyd scan: {warning}\n")
        for obj in state.objects:
            view = view_of(state.platform, obj)
            if state.network_policies is not None and obj.get("kind") == "Namespace":
                view["networkPolicies"] = state.network_policies[_name(obj)]
            scanned.append(Scanned(state.platform, obj, view, "scan"))
    return scanned


def _baseline(scanned: list[Scanned], read: Path | None, write: Path | None,
              err: TextIO) -> Drift:
    """Drift per scanned object (by position): (diff, baseline state, waived checks)
    against `read`; and the scanned objects' fields written to `write`."""
    from daemon.security.baseline import BaselineError, load_baseline, write_baseline
    from daemon.security.fields import diff, fingerprint, flatten

    fields = [flatten(item.view) for item in scanned]
    keys = [baseline_key(subject_of(item.platform, item.obj)) for item in scanned]
    found: Drift = {}
    if read is not None:
        if not read.exists():
            raise ScanError(f"{read}: no such baseline file")
        try:
            baseline = load_baseline(read)
        except BaselineError as exc:
            raise ScanError(str(exc)) from None
        for index, (key, flat) in enumerate(zip(keys, fields, strict=True)):
            entry = baseline.get(key)
            if entry is None:
                found[index] = ([], "none", [])
                continue
            changes = diff(entry.fields, flat)
            mark = fingerprint(flat)
            waived = [check for check, waiver in baseline.waivers_of(key).items()
                      if waiver.fingerprint == mark]
            found[index] = (changes, "drifted" if changes else "same", waived)
    if write is not None:
        entries: dict[str, dict[str, JSONValue]] = {}
        where: dict[str, list[str]] = {}
        for item, key, flat in zip(scanned, keys, fields, strict=True):
            entries[key] = flat
            where.setdefault(key, []).append(f"{item.file}:{item.line}" if item.file
                                             else item.platform)
        for key, places in where.items():
            if len(places) > 1:
                err.write(f"remedyd scan: {key} is in {len(places)} places "
                          f"({', '.join(places)}); the baseline keeps the last\n")
        try:
            count = write_baseline(write, entries)
        except OSError as exc:
            raise ScanError(f"cannot write the baseline {write}: {exc}") from None
        err.write(f"remedyd scan: wrote the baseline of {count} object(s) to {write}\n")
    return found


Drift = dict[int, tuple[list[dict[str, JSONValue]], str, list[str]]]
# Below this many objects a second process costs more than it saves.
PARALLEL_FROM = 2000


def run_checks(ruleset: RuleSet, scanned: Sequence[Scanned], drift: Drift | None = None,
               workers: int | None = None) -> list[Finding]:
    """Every finding on `scanned`, in scan order; split over `workers` processes (default:
    one per CPU for large scans), since evaluating the checks is CPU-bound and per object."""
    if workers is None:
        workers = _cpus() if len(scanned) >= PARALLEL_FROM else 1
    if workers <= 1:
        return _evaluate(ruleset, scanned, drift, 0, len(scanned))
    bounds = [len(scanned) * i // workers for i in range(workers + 1)]
    parts = _forked(_evaluate, [(ruleset, scanned, drift, lo, hi)
                                for lo, hi in itertools.pairwise(bounds)])
    return [finding for part in parts for finding in part]


def _cpus() -> int:
    return min(os.cpu_count() or 1, 4)


def _forked(work: Callable[..., T], calls: Sequence[tuple[Any, ...]]) -> list[T]:
    """`work(*call)` for each call, in order: the first in this process, each other in a
    forked child, which inherits its arguments (nothing is pickled on the way in; only
    the results come back through a pipe)."""
    if len(calls) <= 1:
        return [work(*call) for call in calls]
    context = multiprocessing.get_context("fork")
    children = []
    for call in calls[1:]:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_child, args=(send, work, call), daemon=True)
        child.start()
        send.close()
        children.append((child, receive))
    results = [work(*calls[0])]
    for child, receive in children:
        try:
            part = receive.recv()
        except EOFError:
            part = ScanError(f"a scanning process died (exit code {child.exitcode})")
        child.join()
        if isinstance(part, BaseException):
            raise part
        results.append(part)
    return results


def _child(send: Connection, work: Callable[..., Any], call: tuple[Any, ...]) -> None:
    try:
        send.send(work(*call))
    except Exception as exc:  # handed to the parent, which raises it
        send.send(ScanError(f"in a scanning process: {exc!r}"))
    finally:
        send.close()


def _evaluate(ruleset: RuleSet, scanned: Sequence[Scanned], drift: Drift | None,
              lo: int, hi: int) -> list[Finding]:
    """The findings on scanned[lo:hi]. The evaluator decides once per (check, subject):
    an object whose subject repeats (the same Deployment in two overlays, no uid) goes
    into a later round, so each copy is checked and located on its own."""
    now = time.time()
    rounds: list[tuple[list[Event], dict[str, tuple[str, int]]]] = []
    placed: dict[str, int] = {}
    for index in range(lo, hi):
        item = scanned[index]
        changes, state, waived = (drift or {}).get(index, ([], "none", []))
        event = posture_event(item.platform, item.obj, origin=item.origin, view=item.view,
                              drift=changes, baseline=state, waived=waived, now=now,
                              event_id=f"scan:{index}")
        key = event.subject.key
        round_ = placed.get(key, -1) + 1
        placed[key] = round_
        if round_ == len(rounds):
            rounds.append(([], {}))
        events, locations = rounds[round_]
        events.append(event)
        if item.file:
            locations[key] = (item.file, item.line)
    findings: list[Finding] = []
    for events, locations in rounds:
        findings.extend(evaluate(ruleset, events, locations))
    return findings


def render(fmt: str, findings: Sequence[Finding], rules: Sequence[Rule], objects: int,
           notices: Sequence[tuple[str, str, int]] = ()) -> str:
    from daemon.security import report

    if fmt == "json":
        return report.as_json(findings, objects)
    if fmt == "sarif":
        from daemon.security.sarif import sarif

        return sarif(findings, rules, notices)
    return report.table(findings, objects)


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def _namespace(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")
