"""Composition root: builds everything from Settings, owns the root tasks, signals, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry

from daemon import __version__
from daemon.actions.base import Action
from daemon.actions.executor import REMEMBERED, Executor, ExecutorSettings
from daemon.actions.flapping import FlappingGuard
from daemon.actions.ladder import Ladder
from daemon.actions.params import ACTIONS, CATALOG
from daemon.actions.scope import SCOPE_LABEL, ScopeGuard
from daemon.actions.verify import PromQuery
from daemon.audit import open_intents
from daemon.audit.log import AuditLog, AuditUnavailable, record_time
from daemon.bus import Bus
from daemon.clients.http import HttpClient
from daemon.core.redact import redact
from daemon.core.rules import Rule
from daemon.engine.changes import StateChange
from daemon.engine.evaluator import Evaluator
from daemon.engine.lint import lint, summarise
from daemon.engine.rule_status import RuleStatus
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.http.server import build_app, serve
from daemon.integrations.base import BuildContext, Integration, Source, Switch
from daemon.integrations.registry import INTEGRATIONS, available
from daemon.security.params import apply_params
from daemon.settings import Settings
from daemon.supervisor import Supervisor
from daemon.systemd import Systemd
from daemon.telemetry import redact as secrets
from daemon.telemetry import tracing
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd")

AUDIT_RETRY_INTERVAL = 10.0
AUDIT_CHECKPOINT_LOG_INTERVAL = 600.0
# The checkpoint (an fsync'd rename) is written this long after a burst of records, so it
# never runs between an intent and its action's request; a crash leaves it that far behind.
CHECKPOINT_DELAY = 0.05
# How far back the audit log is read on start to restore cooldowns and budgets.
RESTORE_RECORDS = 20_000
_RESTORED_KEYS = ("kind", "incident", "decision", "rule", "time", "target", "actions",
                  "kept")
# A second SIGTERM/SIGINT cancels in-flight actions; this long after it the process exits
# whatever is still running.
FORCED_EXIT_AFTER = 3.0
EXIT_FATAL = 1


def _remembered_steps(outcome: Mapping[str, Any]) -> list[dict[str, Any]]:
    steps = outcome.get("steps")
    return [{"action": step.get("action"), "outcome": step["outcome"],
             "details": step["details"]}
            for step in (steps if isinstance(steps, list) else ())
            if isinstance(step, dict) and step.get("outcome") in REMEMBERED
            and step.get("details")]


class Daemon:
    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics(registry)
        self.metrics.build.info({"version": __version__})
        secrets.register(secrets.secrets_of(settings))
        self.bus = Bus(self.metrics, settings.engine.queue_size)
        self.audit = AuditLog(settings.audit.path, fsync=settings.audit.fsync,
                              checkpoint=settings.audit.checkpoint,
                              scrub=secrets.scrub_value)
        self.http_client = HttpClient()
        self._stack = AsyncExitStack()
        self.sources: list[Source] = []
        self.actions: dict[str, Action] = {}
        self.integrations: dict[str, Switch] = {}
        self._before_acting: list[Callable[[], Awaitable[None]]] = []
        self._on_rules: list[Callable[[RuleSet], None]] = []
        self.routes: list[web.AbstractRouteDef] = []
        self.api: dict[str, dict[str, Any]] = {}  # the routes' OpenAPI path items
        self.ruleset = RuleSet()
        self.rule_status = RuleStatus()
        self.evaluator = Evaluator(self.ruleset)
        safety = settings.safety
        self.executor = Executor({}, self.audit, self.metrics, ExecutorSettings(
            dry_run=safety.dry_run, action_timeout=safety.action_timeout,
            max_attempts=safety.max_attempts, global_max=safety.max_actions,
            global_per=safety.max_actions_per, notify_max=settings.notify.max_notifications,
            notify_per=settings.notify.max_notifications_per,
            coalesce_window=safety.coalesce_window))
        # OpenTelemetry only when OTEL_* asks for an exporter (off, it is not imported).
        self.executor.tracer = tracing.from_environment(os.environ)
        # Decisions made while a rule's state flaps are audited as suppressed by it.
        self.executor.insert_guard(FlappingGuard(), before="superseded")
        self.state_hooks: list[Callable[[StateChange], None]] = []
        self._plug_integrations()
        if settings.docker.scope == "labelled" and self.integrations["docker"].on:
            self.executor.insert_guard(ScopeGuard(), before="dry_run")  # said even in dry run
            log.info("[docker] scope = labelled: only containers labelled %s=true are "
                     "restarted, stopped, killed or paused", SCOPE_LABEL)
        # Ladders: a verification hears the rule's state resolving and the subject's events.
        self.ladder = Ladder(self.executor, prometheus=self._verify_prometheus(),
                             notify_url=settings.notify.webhook_url)
        self.state_hooks.append(self.ladder.on_state)
        # A decision refused for now (a gate, a silence) is decided again on the next
        # sample while the rule's state still fires.
        self.executor.on_refused_for_now.append(
            lambda decision: self.evaluator.rearm(decision.rule.name,
                                                  decision.event.subject.key))
        self.supervisor = Supervisor(self.metrics, self._fatal)
        self._stop = asyncio.Event()
        self.draining = False
        self._announced = False
        self.exit_code = 0
        self.systemd = Systemd(os.environ)

    def _verify_prometheus(self) -> PromQuery | None:
        """Where `verify.query` asks (None: [prometheus] url unset, such a verification is
        unknown); the client library is imported only then."""
        prometheus = self.settings.prometheus
        if not prometheus.url:
            return None
        from daemon.actions.verify_prometheus import PrometheusSamples
        from daemon.clients.prometheus import PrometheusClient

        return PrometheusSamples(PrometheusClient(self.http_client, prometheus.url,
                                                  prometheus.headers, prometheus.timeout))

    @staticmethod
    def action_catalog(settings: Settings) -> dict[str, type[Any]]:
        """Every action's parameter model, whether or not its source is enabled here."""
        return dict(CATALOG)

    def _plug_integrations(self) -> None:
        ctx = BuildContext(emit=self.bus.emit, metrics=self.metrics, http=self.http_client,
                           stack=self._stack, resubmit=self.executor.resubmit,
                           executor=self.executor, restore=self.restore_records)
        self._stack.push_async_callback(self.http_client.close)
        for cls in INTEGRATIONS:
            integration: Integration = cls(self.settings)
            switch = self.integrations[integration.name] = integration.enabled()
            log.log(logging.WARNING if switch.surprising else logging.INFO, "%s", switch.why)
            if not switch.on:
                continue
            plugged = integration.build(ctx)
            self.sources.extend(plugged.sources)
            for action in plugged.actions:
                self.actions[action.name] = action
            for guard, before in plugged.guards:
                self.executor.insert_guard(guard, before)
            self._before_acting.extend(plugged.before_acting)
            self._on_rules.extend(plugged.on_rules)
            self.routes.extend(plugged.routes)
            self.api.update(plugged.api)
            self.state_hooks.extend(plugged.on_state)
        self.executor.actions = dict(self.actions)

    # -- what the HTTP layer reads ---------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        checks: dict[str, Any] = {}
        checks["rules"] = self.rule_status.readiness()
        checks["audit"] = self.executor.audit_gate.status()
        leader: bool | None = None  # with leader election: whether this replica acts
        for source in self.sources:
            status = source.status()
            checks[f"source:{source.name}"] = {"ready": bool(status["synced"]), **status}
            leader = status.get("leader", leader)
        for name, task in self.supervisor.status().items():
            checks[f"task:{name}"] = {"ready": task["running"], **task}
        if self.draining:
            checks["draining"] = {"ready": False, "reason": "the daemon is shutting down"}
        report = {"ready": all(c["ready"] for c in checks.values()), "checks": checks}
        return report if leader is None else {**report, "leader": leader}

    def rules_view(self) -> list[dict[str, Any]]:
        return [{"name": c.rule.name, "file": c.file, "line": c.line, "source": c.rule.source,
                 "description": c.rule.description, "when": c.rule.when, "for": c.rule.for_,
                 "cooldown": c.rule.cooldown, "dry_run": c.rule.dry_run,
                 "budget": c.rule.budget.model_dump() if c.rule.budget else None,
                 "actions": [{"name": a.name, "params": redact(a.params)}
                             for a in c.rule.actions]}
                for c in self.ruleset.rules]

    def audit_tail(self, limit: int) -> list[dict[str, Any]]:
        try:
            return self.audit.tail(limit)
        except AuditUnavailable:
            return []

    # -- lifecycle ---------------------------------------------------------------------------

    def load_rules(self) -> bool:
        """(Re)load every rule file; on any error keep the last good set. True on success."""
        # ACTIONS: each action's parameters and what it applies to, checked against rules.
        ruleset, errors = load_ruleset(self.settings.rules.paths, ACTIONS)
        if not errors:
            ruleset, errors = apply_params(ruleset, self.settings.security.params)
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
        for hook in self._on_rules:
            hook(ruleset)
        warnings = lint(ruleset, available(self.settings))
        for line in summarise(warnings):
            log.warning("%s", line)
        self.rule_status.succeeded(len(ruleset.rules), warnings)
        self.metrics.rules_loaded.set(len(ruleset.rules))
        self.metrics.rule_reload_ok.set(1)
        log.info("loaded %d rules from %s", len(ruleset.rules), ", ".join(ruleset.files) or "-")
        return True

    def _open_audit(self) -> bool:
        try:
            recovery = self.audit.open()
        except AuditUnavailable as exc:
            log.error("%s; actions are refused until it is writable", exc)
            self.executor.audit_gate.failed()
            return False
        if recovery.checkpoint_problem:
            log.error("audit log %s: %s", self.audit.path, recovery.checkpoint_problem)
        if recovery.torn_bytes:
            log.warning("audit log %s had a torn last line (%d bytes, kept in %s); the chain "
                        "continues from record %d", self.audit.path, recovery.torn_bytes,
                        recovery.torn_saved_to, recovery.records)
        self.metrics.audit_healthy.set(1)
        return True

    def _rule_named(self, name: str) -> Rule | None:
        compiled = self.ruleset.by_name(name)
        return compiled.rule if compiled else None

    def restore_records(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Cooldowns, budgets and remembered steps from records read elsewhere (the
        Kubernetes shared state); an incident already restored or decided here counts once."""
        return self.executor.restore(records, self._rule_named, time.time())

    def _restore_guards(self) -> None:
        now = time.time()
        horizon = now - self._guard_horizon()
        records: list[dict[str, Any]] = []
        try:
            # One pass from the end over the newest records, keeping only what restore()
            # reads: decisions as far back as any cooldown or budget window reaches, and
            # outcomes' successful steps from all of them, since what an action must not
            # repeat (a rollback onto the revision it left) does not age out with a window.
            for scanned, record in enumerate(self.audit.iter_backwards()):
                if scanned >= RESTORE_RECORDS:
                    break
                kind = record.get("kind")
                if kind == "decision" and record_time(record) >= horizon:
                    records.append({k: record[k] for k in _RESTORED_KEYS if k in record})
                elif kind == "outcome" and (steps := _remembered_steps(record)):
                    records.append({"kind": kind, "time": record.get("time"), "steps": steps})
        except AuditUnavailable:
            return
        records.reverse()  # oldest first, as the guards' windows expect
        restored = self.executor.restore(records, self._rule_named, now)
        if restored:
            log.info("restored cooldowns and budgets from %d audited decision(s)", restored)

    def _guard_horizon(self) -> float:
        windows = [self.settings.safety.max_actions_per, self.settings.notify.max_notifications_per]
        for compiled in self.ruleset.rules:
            windows.append(compiled.rule.cooldown)
            if compiled.rule.budget is not None:
                windows.append(compiled.rule.budget.per)
        return max(windows)

    def _lifecycle(self, what: str, **details: Any) -> None:
        if not self.executor.audit_gate.writable:
            return
        try:
            self.audit.append("lifecycle", {"event": what, "version": __version__, **details})
        except (AuditUnavailable, RuntimeError) as exc:
            self.executor.audit_gate.failed()
            log.error("could not audit that the daemon %s: %s", what, exc)

    async def _keep_audit_writable(self) -> None:
        """Probe an unwritable audit log until it takes the recovery record; export and
        now and then log the newest record's seq and hash, so a cut tail can be proven
        from outside the host."""
        last_logged = time.monotonic()
        while True:
            await asyncio.sleep(AUDIT_RETRY_INTERVAL)
            self.executor.audit_gate.try_recover()
            # Guard state of targets no window can see any more goes, so memory stays flat.
            self.executor.book.sweep(self.executor.clock(), self._guard_horizon())
            self.metrics.audit_last_seq.set(self.audit.last_seq)
            if self.audit.checkpoint_error:
                log.error("audit checkpoint: %s", self.audit.checkpoint_error)
            if time.monotonic() - last_logged >= AUDIT_CHECKPOINT_LOG_INTERVAL:
                last_logged = time.monotonic()
                log.info("audit checkpoint: seq %d hash %s", self.audit.last_seq,
                         self.audit.last_hash)

    async def _close_interrupted(self) -> None:
        """Intents a previous run left without an outcome (SIGKILL, power cut) get one."""
        if not self.executor.audit_gate.writable:
            return
        try:
            intents = open_intents(self.audit)
        except AuditUnavailable as exc:
            log.error("could not look for interrupted decisions: %s", exc)
            return
        closed = await self.executor.close_interrupted(intents)
        if closed:
            log.warning("closed %d decision(s) a previous run left open as interrupted",
                        closed)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        # Pinging from the start: a start that wedges the loop is restarted too.
        self.systemd.start_watchdog()
        try:
            await self.start()
            self.systemd.announce_when_ready(self.readiness)
            await self._stop.wait()
            log.info("stopping")
        finally:
            await self.shutdown()
            await self.systemd.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def request_stop(self) -> None:
        if self.draining:
            # Second signal: an operator who means it. In-flight actions are cancelled
            # (and audited as such); whatever still hangs after that is cut off.
            log.warning("second stop signal: cancelling in-flight actions and exiting")
            for task in list(self.executor.in_flight):
                task.cancel()
            asyncio.get_running_loop().call_later(FORCED_EXIT_AFTER, os._exit, 128 + 15)
            return
        self.draining = True
        self.systemd.stopping()
        self._stop.set()

    def _fatal(self, task: str) -> None:
        self.exit_code = EXIT_FATAL
        self.request_stop()

    def _on_sighup(self) -> None:
        log.info("SIGHUP: reloading rules")
        self.systemd.reloading()
        loaded = self.load_rules()
        self.systemd.reloaded(f"reloaded: {len(self.ruleset.rules)} rules" if loaded else
                              f"reload failed, kept {len(self.ruleset.rules)} rules")

    async def start(self) -> None:
        # Bind first: a taken port is a configuration error, and nothing is audited as
        # started before the daemon can be reached.
        stop_http = await serve(build_app(self, self.metrics, self.routes, self.api),
                                self.settings.server.host, self.settings.server.port)
        self._stack.push_async_callback(stop_http)
        loop = asyncio.get_running_loop()
        self.audit.schedule_checkpoints(
            lambda write: loop.call_later(CHECKPOINT_DELAY, write))
        self._open_audit()
        self.load_rules()
        self._restore_guards()
        await self._close_interrupted()
        for callback in self._before_acting:
            try:
                await callback()
            except Exception as exc:  # the audit-log restore stands
                log.error("before acting: %s failed: %s",
                          getattr(callback, "__qualname__", callback), exc)
        self.metrics.audit_last_seq.set(self.audit.last_seq)
        self._announced = True
        self._lifecycle("started", rules=len(self.ruleset.rules),
                        dry_run=self.settings.safety.dry_run)
        log.info("remedyd %s serving on http://%s/ (dry-run: %s)", __version__,
                 self.settings.server.listen, self.settings.safety.dry_run)
        self.supervisor.spawn("audit", self._keep_audit_writable)
        self.supervisor.spawn("engine", self._engine_loop)
        for source in self.sources:
            self.supervisor.spawn(f"source-{source.name}", source.run)

    async def _engine_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            deadline = self.evaluator.next_due()
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                # Not wait_for: on 3.11 it can swallow a cancel that lands as an event
                # arrives, and the loop would then wait on through a shutdown.
                async with asyncio.timeout(timeout):
                    event = await self.bus.get()
            except TimeoutError:
                event = None
            now = loop.time()
            received = time.time() if self.executor.tracer.enabled else 0.0
            decisions = [] if event is None else self.evaluator.evaluate(event, now)
            if event is not None:
                self.ladder.observe(event)
            decisions += self.evaluator.due(now)
            for problem in self.evaluator.take_problems():
                self.metrics.rule_errors.labels(problem.rule).inc()
                log.debug("rule %s: %s", problem.rule, problem.message)
            for change in self.evaluator.take_changes():
                self._state_changed(change)
            if event is not None and decisions:
                self.metrics.decision_lag.observe(max(0.0, time.time() - event.occurred_at))
            if received and decisions:
                evaluated = time.time()
                for decision in decisions:
                    # A decision due later (a `for:` elapsing) was not this event's doing.
                    if event is not None and decision.event is event:
                        self.executor.tracer.begin(decision, received, evaluated)
            for decision in decisions:
                self.executor.submit(decision)

    def _state_changed(self, change: StateChange) -> None:
        """Audit a rule's change of state for a subject, then tell whoever waits on it; a
        failure of either is logged, never the end of the engine loop."""
        self.metrics.rule_state_changes.labels(change.rule, change.change).inc()
        if self.executor.audit_gate.writable:
            try:
                self.audit.append("state", change.summary())
            except (AuditUnavailable, RuntimeError) as exc:
                self.executor.audit_gate.failed()
                log.error("could not audit that rule %s went %s for %s: %s", change.rule,
                          change.change, change.subject.name, exc)
        for hook in self.state_hooks:
            try:
                hook(change)
            except Exception:
                log.exception("a state hook failed on rule %s (%s)", change.rule,
                              change.change)

    async def shutdown(self) -> None:
        self.draining = True
        await self.supervisor.stop()
        await self.ladder.close()
        cancelled = await self.executor.drain(self.settings.safety.shutdown_timeout)
        if cancelled:
            log.warning("cancelled %d action(s) still running at the shutdown deadline",
                        cancelled)
        if self._announced:  # a daemon that never started (port taken) says nothing
            self._lifecycle("stopped", cancelled_actions=cancelled)
        await self._stack.aclose()
        self.audit.close()
        self.executor.tracer.shutdown()
        log.info("stopped")
