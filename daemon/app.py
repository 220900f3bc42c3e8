"""Composition root: builds everything from Settings, owns the root tasks, signals, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.actions.base import Action
from daemon.actions.executor import Executor, ExecutorSettings
from daemon.actions.notify import Webhook
from daemon.actions.params import ACTIONS, CATALOG
from daemon.audit.log import AuditLog, AuditUnavailable, record_time
from daemon.bus import Bus
from daemon.clients.http import HttpClient
from daemon.core.rules import Rule
from daemon.engine.evaluator import Evaluator
from daemon.engine.lint import Available, lint
from daemon.engine.rule_status import RuleStatus
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.http.server import build_app, serve
from daemon.settings import Settings
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd")

AUDIT_RETRY_INTERVAL = 10.0
# How far back the audit log is read on start to restore cooldowns and budgets.
RESTORE_RECORDS = 20_000
_RESTORED_KEYS = ("kind", "decision", "rule", "time", "target")


class Daemon:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(registry)
        self.metrics.build.info({"version": __version__})
        self.bus = Bus(self.metrics, settings.engine.queue_size)
        self.audit = AuditLog(settings.audit.path, fsync=settings.audit.fsync)
        self.http_client = HttpClient()
        self.sources: list[Any] = []
        self._closers: list[Callable[[], Any]] = []
        self.actions: dict[str, Action] = {}
        self._build_sources_and_actions()
        self.catalog = self.action_catalog(settings)
        self.ruleset = RuleSet()
        self.rule_status = RuleStatus()
        self.evaluator = Evaluator(self.ruleset)
        safety = settings.safety
        self.executor = Executor(self.actions, self.audit, self.metrics, ExecutorSettings(
            dry_run=safety.dry_run, action_timeout=safety.action_timeout,
            max_attempts=safety.max_attempts, global_max=safety.max_actions,
            global_per=safety.max_actions_per))
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @staticmethod
    def action_catalog(settings: Settings) -> dict[str, type[Any]]:
        """Every action's parameter model, whether or not its source is enabled here."""
        return dict(CATALOG)

    def _build_sources_and_actions(self) -> None:
        webhook = Webhook(self.http_client, self.settings.notify.webhook_url)
        self.actions[webhook.name] = webhook
        docker = self.settings.docker
        if docker.is_enabled():
            # Imported here so a daemon without Docker never loads aiodocker.
            from daemon.actions.docker import docker_actions
            from daemon.clients.docker import DockerClient
            from daemon.sources.docker import DockerSource

            client = DockerClient(docker.resolved_url(), docker.request_timeout)
            self._closers.append(client.close)
            self.sources.append(DockerSource(client, self.bus.emit, self.metrics,
                                             docker.reconcile_interval))
            for action in docker_actions(client):
                self.actions[action.name] = action
        elif docker.enabled == "auto":
            log.warning("docker source off: [docker] enabled = \"auto\" found no DOCKER_HOST "
                        "and no /var/run/docker.sock; set enabled = true to insist")
        else:
            log.info("docker source off ([docker] enabled = false)")

    # -- what the HTTP layer reads ---------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        checks["rules"] = self.rule_status.readiness()
        checks["audit"] = {"ready": self.audit.healthy, "path": str(self.audit.path),
                           "error": None if self.audit.healthy else self.audit.last_error}
        for source in self.sources:
            status = source.status()
            checks[f"source:{source.name}"] = {"ready": status["synced"], **status}
        return {"ready": all(c["ready"] for c in checks.values()), "checks": checks}

    def rules_view(self) -> list[dict[str, Any]]:
        return [{"name": c.rule.name, "file": c.file, "line": c.line, "source": c.rule.source,
                 "description": c.rule.description, "when": c.rule.when, "for": c.rule.for_,
                 "cooldown": c.rule.cooldown, "dry_run": c.rule.dry_run,
                 "budget": c.rule.budget.model_dump() if c.rule.budget else None,
                 "actions": [{"name": a.name, "params": a.params} for a in c.rule.actions]}
                for c in self.ruleset.rules]

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        try:
            return self.audit.tail(limit)
        except AuditUnavailable:
            return []

    # -- lifecycle ---------------------------------------------------------------------------

    def load_rules(self) -> bool:
        """(Re)load every rule file; on any error keep the last good set. True on success."""
        # ACTIONS adds what each action applies to, checked against the rules' targets.
        ruleset, errors = load_ruleset(self.settings.rules.paths, {**self.catalog, **ACTIONS})
        if errors:
            self.rule_status.failed(errors, time.time())
            self.metrics.rule_reload_failures.inc()
            self.metrics.rule_reload_ok.set(0)
            for error in errors:
                log.error("rule error: %s", error)
            log.error("kept the previous rule set (%d rules)", len(self.ruleset.rules))
            return False
        self.ruleset = ruleset
        self.evaluator.swap(ruleset)
        warnings = lint(ruleset, Available(
            sources=frozenset(source.name for source in self.sources),
            actions=frozenset(self.actions), webhook_url=self.settings.notify.webhook_url))
        for warning in warnings:
            log.warning("%s", warning)
        self.rule_status.succeeded(len(ruleset.rules), warnings)
        self.metrics.rules_loaded.set(len(ruleset.rules))
        self.metrics.rule_reload_ok.set(1)
        log.info("loaded %d rules from %s", len(ruleset.rules), ", ".join(ruleset.files) or "-")
        return True

    def request_stop(self) -> None:
        self._stop.set()

    def _open_audit(self) -> bool:
        try:
            recovery = self.audit.open()
        except AuditUnavailable as exc:
            log.error("%s; actions are refused until it is writable", exc)
            self.metrics.audit_failures.inc()
            self.metrics.audit_healthy.set(0)
            return False
        if recovery.torn_bytes:
            log.warning("audit log %s had a torn last line (%d bytes, kept in %s); the chain "
                        "continues from record %d", self.audit.path, recovery.torn_bytes,
                        recovery.torn_saved_to, recovery.records)
        self.metrics.audit_healthy.set(1)
        return True

    def _restore_guards(self) -> None:
        def rule_named(name: str) -> Rule | None:
            compiled = self.ruleset.by_name(name)
            return compiled.rule if compiled else None

        now = time.time()
        horizon = now - self._guard_horizon()
        records: list[dict[str, Any]] = []
        try:
            # One pass from the end, only as far back as any cooldown or budget window
            # reaches; keep only what restore() reads of each decision.
            for record in self.audit.iter_backwards():
                if len(records) >= RESTORE_RECORDS or record_time(record) < horizon:
                    break
                if record.get("kind") == "decision":
                    records.append({k: record[k] for k in _RESTORED_KEYS if k in record})
        except AuditUnavailable:
            return
        records.reverse()  # oldest first, as the guards' windows expect
        restored = self.executor.restore(records, rule_named, now)
        if restored:
            log.info("restored cooldowns and budgets from %d audited decision(s)", restored)

    def _guard_horizon(self) -> float:
        windows = [self.settings.safety.max_actions_per]
        for compiled in self.ruleset.rules:
            windows.append(compiled.rule.cooldown)
            if compiled.rule.budget is not None:
                windows.append(compiled.rule.budget.per)
        return max(windows)

    def _lifecycle(self, what: str, **details: Any) -> None:
        if not self.audit.healthy:
            return
        try:
            self.audit.append("lifecycle", {"event": what, "version": __version__, **details})
        except (AuditUnavailable, RuntimeError) as exc:
            log.error("could not audit that the daemon %s: %s", what, exc)

    async def _keep_audit_open(self) -> None:
        while True:
            await asyncio.sleep(AUDIT_RETRY_INTERVAL)
            if self._open_audit():
                return

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
            await self._stop.wait()
            log.info("stopping")
        finally:
            await self.shutdown()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading rules")
        self.load_rules()

    async def start(self) -> None:
        audit_ok = self._open_audit()
        self.load_rules()
        self._restore_guards()
        self._lifecycle("started", rules=len(self.ruleset.rules),
                        dry_run=self.settings.safety.dry_run)
        stop_http = await serve(build_app(self, self.metrics), self.settings.server.host,
                                self.settings.server.port)
        self._closers.insert(0, stop_http)
        log.info("remedyd %s serving on http://%s/ (dry-run: %s)", __version__,
                 self.settings.server.listen, self.settings.safety.dry_run)
        if not audit_ok:
            self._tasks.append(asyncio.create_task(self._keep_audit_open(), name="audit-open"))
        self._tasks.append(asyncio.create_task(self._engine_loop(), name="engine"))
        for source in self.sources:
            self._tasks.append(asyncio.create_task(self._run_source(source),
                                                   name=f"source-{source.name}"))

    async def _run_source(self, source: Any) -> None:
        while True:
            try:
                await source.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("source %s crashed; restarting it in 5s", source.name)
                await asyncio.sleep(5)

    async def _engine_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.evaluator.next_due()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                event = await asyncio.wait_for(self.bus.get(), timeout)
            except TimeoutError:
                event = None
            now = loop.time()
            decisions = [] if event is None else self.evaluator.evaluate(event, now)
            decisions += self.evaluator.due(now)
            for problem in self.evaluator.take_problems():
                self.metrics.rule_errors.labels(problem.rule).inc()
                log.debug("rule %s: %s", problem.rule, problem.message)
            if event is not None and decisions:
                self.metrics.decision_lag.observe(max(0.0, time.time() - event.occurred_at))
            for decision in decisions:
                self.executor.submit(decision)

    async def shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        cancelled = await self.executor.drain(self.settings.safety.shutdown_timeout)
        if cancelled:
            log.warning("cancelled %d action(s) still running at the shutdown deadline",
                        cancelled)
        self._lifecycle("stopped", cancelled_actions=cancelled)
        for close in self._closers:
            with contextlib.suppress(Exception):
                await close()
        await self.http_client.close()
        self.audit.close()
        log.info("stopped")

