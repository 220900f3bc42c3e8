"""Every metric remedyd exports, built on an injected registry so tests get a fresh one."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # The process as well as the daemon (CPU, memory, fds, GC), as every exporter shows.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build = Info("remedyd_build", "Version of the running daemon.", registry=r)
        self.events = Counter("remedyd_events_total",
                              "Events received, by source, kind and action.",
                              ["source", "kind", "action"], registry=r)
        self.rule_matches = Counter("remedyd_rule_matches_total",
                                    "Decisions made by a rule (before guards).", ["rule"],
                                    registry=r)
        self.rule_errors = Counter("remedyd_rule_evaluation_errors_total",
                                   "Condition evaluations that failed (counted as no match).",
                                   ["rule"], registry=r)
        self.actions = Counter("remedyd_actions_total", "Actions run, by rule, action and outcome.",
                               ["rule", "action", "outcome"], registry=r)
        self.suppressed = Counter("remedyd_decisions_suppressed_total",
                                  "Decisions not acted on, by the guard that refused them.",
                                  ["rule", "guard"], registry=r)
        self.task_crashes = Counter("remedyd_task_crashes_total",
                                    "Root tasks (engine, sources) that raised and were "
                                    "restarted.", ["task"], registry=r)
        self.coalesced = Counter("remedyd_decisions_coalesced_total",
                                 "Repeat decisions of one rule on one target folded into the "
                                 "open incident.", ["rule"], registry=r)
        self.escalations = Counter("remedyd_escalations_total",
                                   "Budget escalations fired.", ["rule"], registry=r)
        # Ladders: whether each verified repair held.
        self.verifications = Counter("remedyd_verifications_total",
                                     "Verifications of a repair, by rule and outcome "
                                     "(recovered, not_recovered, unknown).", ["rule", "outcome"],
                                     registry=r)
        self.paused = Gauge("remedyd_paused_subjects",
                            "Subjects a rule is paused on: its ladder ended without a repair "
                            "that held.", registry=r)
        self.action_duration = Histogram("remedyd_action_duration_seconds",
                                         "Time an action took, retries included.", ["action"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.decision_lag = Histogram("remedyd_event_to_decision_seconds",
                                      "From when an event occurred to the engine's decision.",
                                      buckets=_LATENCY_BUCKETS, registry=r)
        self.source_connected = Gauge("remedyd_source_connected",
                                      "1 while a source is connected to its peer.", ["source"],
                                      registry=r)
        self.source_synced = Gauge("remedyd_source_synced",
                                   "1 once a source has listed current state since connecting.",
                                   ["source"], registry=r)
        self.reconnects = Counter("remedyd_source_reconnects_total",
                                  "Times a source lost its peer and reconnected.", ["source"],
                                  registry=r)
        self.gaps = Counter("remedyd_source_gaps_total",
                            "Event gaps detected, by why: overflow (the engine no longer held "
                            "them), skipped (a replay found them), state (a listing showed them).",
                            ["source", "reason"], registry=r)
        self.recovered = Counter("remedyd_source_recovered_events_total",
                                 "Events the stream never delivered, emitted from a replay or "
                                 "made up from a listing.", ["source", "via"], registry=r)
        self.reconciles = Counter("remedyd_source_reconciles_total",
                                  "Full state listings taken to catch up with missed events.",
                                  ["source"], registry=r)
        self.queue_depth = Gauge("remedyd_queue_depth", "Events waiting for the engine.",
                                 registry=r)
        self.queue_drops = Counter("remedyd_queue_dropped_total",
                                   "Events dropped because the queue was full.", ["source"],
                                   registry=r)
        self.rule_reload_failures = Counter("remedyd_rule_reload_failures_total",
                                            "Rule loads that failed; the last good set was kept.",
                                            registry=r)
        self.rules_loaded = Gauge("remedyd_rules_loaded", "Rules in the active rule set.",
                                  registry=r)
        self.rule_reload_ok = Gauge("remedyd_rule_reload_last_success",
                                    "1 if the last rule (re)load succeeded.", registry=r)
        self.audit_failures = Counter("remedyd_audit_write_failures_total",
                                      "Audit writes that failed; actions are refused meanwhile.",
                                      registry=r)
        self.audit_healthy = Gauge("remedyd_audit_writable",
                                   "1 while the audit log accepts writes.", registry=r)
        self.leader = Gauge("remedyd_leader",
                            "1 while this replica holds the Kubernetes Lease and acts as "
                            "leader (renewed in time, state restored).", registry=r)
        self.audit_last_seq = Gauge("remedyd_audit_last_seq",
                                    "Seq of the newest audit record: a copy of the checkpoint "
                                    "kept off the host shows a cut tail.", registry=r)
        # -- probes ([[probes]], daemon/sources/probes.py) --
        self.probe_up = Gauge("remedyd_probe_up",
                              "1 if the probe's last check passed, 0 if it failed (the "
                              "failed/recovered events count N and M checks in a row).",
                              ["probe"], registry=r)
        self.probe_duration = Histogram("remedyd_probe_duration_seconds",
                                        "How long a probe's checks took (a timeout counts "
                                        "as long as the timeout).", ["probe"],
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.probe_checks = Counter("remedyd_probe_checks_total",
                                    "Probe checks, by result: ok, or why one failed (timeout, "
                                    "refused, dns, tls, status, body, error).",
                                    ["probe", "result"], registry=r)
        # -- inbound webhooks and Alertmanager silences -------------------------------------
        self.webhook_requests = Counter("remedyd_webhook_requests_total",
                                        "Inbound webhook requests, by endpoint and the HTTP "
                                        "status answered.", ["endpoint", "code"], registry=r)
        self.webhook_alerts = Counter("remedyd_webhook_alerts_total",
                                      "Alertmanager alerts received, by status and outcome: "
                                      "accepted, duplicate (a re-delivery), dropped (the "
                                      "engine's queue was full; answered 503 for a retry).",
                                      ["status", "outcome"], registry=r)
        self.webhook_handovers = Counter("remedyd_webhook_handovers_total",
                                         "Webhooks a follower got and handed to the leader, "
                                         "by result: handed_over (answered with the "
                                         "leader's answer), leader_unreachable, "
                                         "no_leader_address (both answered 503).",
                                         ["result"], registry=r)
        self.webhook_truncated = Counter("remedyd_webhook_truncated_alerts_total",
                                         "Alerts Alertmanager left out of its notifications "
                                         "(webhook_config max_alerts), by receiver.",
                                         ["receiver"], registry=r)
        self.silence_fetches = Counter("remedyd_alertmanager_silence_fetches_total",
                                       "Reads of Alertmanager's silences, by outcome (ok, "
                                       "error).", ["outcome"], registry=r)
        # KPI source (source: kpi rules): what each rule's last query did.
        self.kpi_query_state = Gauge("remedyd_kpi_query_state",
                                     "1 for the state of a KPI rule's last query (ok, empty, "
                                     "nan, unreachable, error), 0 for the others.",
                                     ["rule", "state"], registry=r)
        self.kpi_queries = Counter("remedyd_kpi_queries_total",
                                   "KPI rule queries, by result (ok, empty, nan, unreachable, "
                                   "error; skipped: the previous poll was still running).",
                                   ["rule", "result"], registry=r)
        self.kpi_query_duration = Histogram("remedyd_kpi_query_duration_seconds",
                                            "Time a KPI rule's query took, failed ones too.",
                                            buckets=_LATENCY_BUCKETS, registry=r)
        # -- rule states (daemon/engine/alerts.py), as audited ------------------------------
        self.rule_state_changes = Counter("remedyd_rule_state_changes_total",
                                          "Changes of a rule's state for a subject, by change: "
                                          "pending, firing, resolved, flapping, "
                                          "flapping_ended.", ["rule", "change"], registry=r)
        # -- security posture (daemon/security) -------------------------------------------
        self.security_findings = Gauge("remedyd_security_findings",
                                       "Security findings firing now, by check id and "
                                       "severity.", ["check", "severity"], registry=r)
        self.security_drift_events = Counter("remedyd_security_drift_events_total",
                                             "Objects found to differ from their baseline "
                                             "(a new or different field diff), by object "
                                             "kind.", ["kind"], registry=r)
        self.security_accepted = Counter("remedyd_security_accepted_total",
                                         "Changes an operator accepted into the baseline or "
                                         "waived, by object kind.", ["kind"], registry=r)
        self.security_baseline_objects = Gauge("remedyd_security_baseline_objects",
                                               "Objects in the security baseline.",
                                               registry=r)
        self.security_inspect_errors = Counter("remedyd_security_inspect_errors_total",
                                               "Container inspects for the security posture "
                                               "that failed (the container is looked at "
                                               "again on its next event or listing).",
                                               registry=r)
