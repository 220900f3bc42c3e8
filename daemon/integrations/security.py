"""Security posture: the posture tracker fed by the Docker and Kubernetes sources, the
baseline it compares with, and the findings API. Built after the Docker and Kubernetes
integrations, whose sources it taps (`BuildContext.provided`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from daemon.engine.ruleset import RuleSet
from daemon.integrations.base import BuildContext, Integration, Plugged, Switch
from daemon.security.tracker import PostureTracker
from daemon.settings import Settings

log = logging.getLogger("remedyd.security")


class SecurityIntegration(Integration):
    name = "security"
    event_sources = ("security",)

    def enabled(self) -> Switch:
        setting = self.settings.security.enabled
        if setting is False:
            return Switch(False, "security posture off ([security] enabled = false)")
        platforms = [name for name, on in (("docker", self.settings.docker.is_enabled()),
                                           ("kubernetes", self.settings.kubernetes.is_enabled()))
                     if on]
        if setting is True or platforms:
            # "auto" is on with either platform: with no security rule loaded the
            # tracker only keeps the baseline, which costs one compare per change.
            return Switch(True, "security posture on: watching "
                          f"{' and '.join(platforms) or 'no platform'}, baseline "
                          f"{baseline_path(self.settings)}")
        return Switch(False, 'security posture off: [security] enabled = "auto" found '
                      "neither Docker nor Kubernetes on")

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.security.api import CurrentFindings, security_routes
        from daemon.security.api_doc import security_api
        from daemon.security.baseline import Persister, open_baseline

        security = self.settings.security
        baseline = open_baseline(baseline_path(self.settings))
        persister = Persister(baseline)
        ctx.stack.push_async_callback(persister.close)
        tracker = PostureTracker(ctx.emit, baseline, _auditor(ctx), ctx.metrics,
                                 learn=security.learn)
        findings = CurrentFindings(ctx.metrics)
        reevaluate = Reevaluate(tracker)
        ctx.stack.push_async_callback(reevaluate.close)
        plugged = Plugged(routes=security_routes(findings, tracker,
                                                 self.settings.server.api_token),
                          api=security_api(), on_state=[findings.on_state],
                          on_rules=[findings.on_rules, reevaluate])
        docker_source = ctx.provided.get("docker.source")
        docker_client = ctx.provided.get("docker.client")
        if docker_source is not None and docker_client is not None:
            from daemon.sources.docker_posture import DockerPosture

            plugged.sources.append(DockerPosture(docker_source, docker_client, tracker,
                                                 ctx.metrics))
        kube_source = ctx.provided.get("kubernetes.source")
        if kube_source is not None:
            from daemon.sources.kube_posture import KubePosture

            plugged.sources.append(KubePosture(kube_source, tracker))
        return plugged


class Reevaluate:
    """On a rule reload, every object's posture is emitted again, so a new or changed
    check sees objects that will not change on their own (the engine keeps the state of
    the rules that stay: what fires keeps firing, no second notification). In chunks,
    letting the engine drain the bus in between, so a large cluster is not dropped."""

    CHUNK = 256

    def __init__(self, tracker: PostureTracker) -> None:
        self.tracker = tracker
        self._task: asyncio.Task[None] | None = None

    def __call__(self, ruleset: RuleSet) -> None:
        if not len(self.tracker):
            return  # the first load, before any source ran
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = asyncio.get_running_loop().create_task(self._run(),
                                                            name="security-reevaluate")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        keys = self.tracker.keys()
        for start in range(0, len(keys), self.CHUNK):
            for key in keys[start:start + self.CHUNK]:
                self.tracker.reemit(key)
            await asyncio.sleep(0)
        log.info("rules reloaded: the security checks looked again at %d object(s)",
                 len(keys))


def baseline_path(settings: Settings) -> Path:
    """`[security] baseline`; unset, beside the audit log (the defaults agree: var/), so
    a daemon given its own audit directory keeps its baseline there too."""
    if "baseline" in settings.security.model_fields_set:
        return settings.security.baseline
    return settings.audit.path.parent / settings.security.baseline.name


def _auditor(ctx: BuildContext) -> Callable[[str, Mapping[str, Any]], None]:
    """The tracker's audit callback: the daemon's audit log when one is open (never in
    `remedyd check`); a record that cannot be written is logged, never raised into a
    source."""
    executor = ctx.executor

    def audit(kind: str, record: Mapping[str, Any]) -> None:
        if executor is None:
            return
        if not executor.audit_gate.writable:
            log.error("audit log not writable: the %s record of %s is lost", kind,
                      record.get("key"))
            return
        try:
            executor.audit.append(kind, record)
        except Exception as exc:
            executor.audit_gate.failed()
            log.error("could not audit the %s record of %s: %s", kind, record.get("key"), exc)

    return audit
