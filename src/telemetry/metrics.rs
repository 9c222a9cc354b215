//! Metrics: hook calls by service and status, rule durations and outcomes, cards by rule and
//! indicator, rule errors by kind, requests in flight. One OpenTelemetry meter provider per Cardinal,
//! read by the Prometheus `/metrics` endpoint and, when an OTLP endpoint is configured, exported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::terminology::RemoteTerminology;

/// Bucket bounds in seconds: CDS Hooks answers are sub-millisecond to a few hundred milliseconds.
const SECONDS_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Cardinal's instruments.
pub struct Metrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    hook_duration: Histogram<f64>,
    rule_duration: Histogram<f64>,
    rule_evaluations: Counter<u64>,
    rule_errors: Counter<u64>,
    cards: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    refused: Counter<u64>,
    panics: Counter<u64>,
    silent_cards: Counter<u64>,
    suppressed_cards: Counter<u64>,
    candidate_evaluations: Counter<u64>,
    candidate_disagreements: Counter<u64>,
    reloads: Counter<u64>,
    reload_duration: Histogram<f64>,
    auth_rejected: Counter<u64>,
    audit_records: Counter<u64>,
    store_records: Counter<u64>,
    /// Observable instruments, kept alive with their callbacks.
    observers: Mutex<Vec<Box<dyn std::any::Any + Send + Sync>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Prometheus only (tests, CLI), or Prometheus plus OTLP export when `otlp` is set (needs a Tokio
    /// runtime).
    pub fn new(otlp: bool) -> Self {
        let registry = prometheus::Registry::new();
        let mut builder = SdkMeterProvider::builder().with_resource(super::resource());
        match opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .build()
        {
            Ok(exporter) => builder = builder.with_reader(exporter),
            Err(e) => tracing::warn!(error = %e, "Prometheus metrics unavailable"),
        }
        if otlp {
            match opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .build()
            {
                Ok(exporter) => builder = builder.with_periodic_exporter(exporter),
                Err(e) => tracing::warn!(error = %e, "OTLP metric export disabled"),
            }
        }
        let provider = builder.build();
        let meter = provider.meter("cardinal");
        Self {
            hook_duration: meter
                .f64_histogram("cardinal.hook.duration")
                .with_unit("s")
                .with_description("CDS Hooks calls, by service and HTTP-equivalent status")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            rule_duration: meter
                .f64_histogram("cardinal.rule.duration")
                .with_unit("s")
                .with_description("Rule runs, by service, rule and outcome")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            rule_evaluations: meter
                .u64_counter("cardinal.rule.evaluations")
                .with_description(
                    "Rule runs, by service, rule and outcome (fired, not-fired, unknown: stopped on a condition undecided for absent data, error)",
                )
                .build(),
            rule_errors: meter
                .u64_counter("cardinal.rule.errors")
                .with_description("Rules stopped by an error, by service, rule and kind")
                .build(),
            cards: meter
                .u64_counter("cardinal.cards")
                .with_description("Cards returned, by service, rule and indicator")
                .build(),
            in_flight: meter
                .i64_up_down_counter("cardinal.hook.in_flight")
                .with_description("CDS Hooks calls being evaluated")
                .build(),
            refused: meter
                .u64_counter("cardinal.calls.refused")
                .with_description(
                    "Hook calls refused by admission control, by reason (queue_full, deadline, draining)",
                )
                .build(),
            panics: meter
                .u64_counter("cardinal.panics")
                .with_description("Panics caught while serving a request, by where (http, grpc, evaluation)")
                .build(),
            silent_cards: meter
                .u64_counter("cardinal.rule.silent_cards")
                .with_description(
                    "Cards a silent rule would have returned (not shown), by service, rule and indicator",
                )
                .build(),
            suppressed_cards: meter
                .u64_counter("cardinal.cards.suppressed")
                .with_description(
                    "Cards held back because the patient saw them within the rule's suppress_repeat_hours, by service and rule",
                )
                .build(),
            candidate_evaluations: meter
                .u64_counter("cardinal.candidate.evaluations")
                .with_description("Candidate rule runs, by service, rule and outcome")
                .build(),
            candidate_disagreements: meter
                .u64_counter("cardinal.candidate.disagreements")
                .with_description(
                    "Calls where a candidate rule and the rule in use disagreed, by service and rule",
                )
                .build(),
            reloads: meter
                .u64_counter("cardinal.rule_set.reloads")
                .with_description(
                    "Rule-set reloads, by trigger (signal, watch, admin) and result (swapped, unchanged, rejected)",
                )
                .build(),
            reload_duration: meter
                .f64_histogram("cardinal.rule_set.reload.duration")
                .with_unit("s")
                .with_description("Time from a reload's start to its swap or rejection")
                .with_boundaries(vec![0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
                .build(),
            auth_rejected: meter
                .u64_counter("cardinal.auth.rejected")
                .with_description(
                    "Calls refused with 401 / UNAUTHENTICATED, by reason (expired, signature, replayed, ...)",
                )
                .build(),
            audit_records: meter
                .u64_counter("cardinal.audit.records")
                .with_description(
                    "Audit records, by outcome (written, failed, dropped_full, dropped_no_writer)",
                )
                .build(),
            store_records: meter
                .u64_counter("cardinal.store.records")
                .with_description(
                    "Store records, by outcome (written, failed, dropped_full, dropped_no_writer, feedback, feedback_failed)",
                )
                .build(),
            meter,
            provider,
            registry,
            observers: Mutex::new(Vec::new()),
        }
    }

    /// Exports the terminology cache's statistics (remote source only; local look-ups are in memory).
    /// The server's client outlives rule-set reloads, so its counters keep counting across them.
    pub fn observe_terminology(&self, remote: Option<Arc<RemoteTerminology>>) {
        let Some(remote) = remote else {
            return;
        };
        type Read = fn(&crate::terminology::TerminologyStats) -> u64;
        let counters: [(&'static str, &'static str, Read); 6] = [
            (
                "cardinal.terminology.cache.hits",
                "Terminology answers served from the cache",
                |s| s.hits,
            ),
            (
                "cardinal.terminology.cache.misses",
                "Terminology look-ups the cache could not answer",
                |s| s.misses,
            ),
            (
                "cardinal.terminology.cache.evictions",
                "Cache entries dropped for capacity",
                |s| s.evictions,
            ),
            (
                "cardinal.terminology.stale_answers",
                "Answers served stale because the server failed",
                |s| s.stale_answers,
            ),
            (
                "cardinal.terminology.remote.calls",
                "Requests sent to the terminology server",
                |s| s.remote_calls,
            ),
            (
                "cardinal.terminology.remote.errors",
                "Failed requests to the terminology server",
                |s| s.remote_errors,
            ),
        ];
        let mut observers = match self.observers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (name, description, read) in counters {
            let t = remote.clone();
            let counter = self
                .meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |observer| {
                    observer.observe(read(&t.stats()), &[]);
                })
                .build();
            observers.push(Box::new(counter));
        }
        let t = remote.clone();
        let latency = self
            .meter
            .f64_observable_counter("cardinal.terminology.remote.duration")
            .with_unit("s")
            .with_description("Total time spent waiting for the terminology server")
            .with_callback(move |observer| {
                observer.observe(t.stats().remote_latency_sum.as_secs_f64(), &[]);
            })
            .build();
        observers.push(Box::new(latency));
        let t = remote;
        let entries = self
            .meter
            .u64_observable_gauge("cardinal.terminology.cache.entries")
            .with_description("Entries in the terminology cache")
            .with_callback(move |observer| {
                observer.observe(t.stats().cached_entries, &[]);
            })
            .build();
        observers.push(Box::new(entries));
    }

    /// The meter, for instruments owned by other parts (terminology cache, prefetch).
    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn hook_call(&self, service: &str, status: u16, duration: Duration) {
        self.hook_duration.record(
            duration.as_secs_f64(),
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }

    pub fn rule_run(&self, service: &str, rule: &str, outcome: &str, duration: Duration) {
        let attributes = [
            KeyValue::new("service", service.to_owned()),
            KeyValue::new("rule", rule.to_owned()),
            KeyValue::new("outcome", outcome.to_owned()),
        ];
        self.rule_duration
            .record(duration.as_secs_f64(), &attributes);
        self.rule_evaluations.add(1, &attributes);
    }

    pub fn rule_error(&self, service: &str, rule: &str, kind: &str) {
        self.rule_errors.add(
            1,
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("rule", rule.to_owned()),
                KeyValue::new("kind", kind.to_owned()),
            ],
        );
    }

    pub fn card(&self, service: &str, rule: &str, indicator: &str) {
        self.cards.add(
            1,
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("rule", rule.to_owned()),
                KeyValue::new("indicator", indicator.to_owned()),
            ],
        );
    }

    /// A card held back because the patient saw it within its rule's window.
    pub fn card_suppressed(&self, service: &str, rule: &str) {
        self.suppressed_cards.add(
            1,
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("rule", rule.to_owned()),
            ],
        );
    }

    /// A card a silent rule produced (recorded, never returned).
    pub fn silent_card(&self, service: &str, rule: &str, indicator: &str) {
        self.silent_cards.add(
            1,
            &[
                KeyValue::new("service", service.to_owned()),
                KeyValue::new("rule", rule.to_owned()),
                KeyValue::new("indicator", indicator.to_owned()),
            ],
        );
    }

    /// A candidate rule's run, and whether it disagreed with the rule in use.
    pub fn candidate_run(&self, service: &str, rule: &str, outcome: &str, disagreed: bool) {
        let service = KeyValue::new("service", service.to_owned());
        let rule = KeyValue::new("rule", rule.to_owned());
        self.candidate_evaluations.add(
            1,
            &[
                service.clone(),
                rule.clone(),
                KeyValue::new("outcome", outcome.to_owned()),
            ],
        );
        if disagreed {
            self.candidate_disagreements.add(1, &[service, rule]);
        }
    }

    /// A finished rule-set reload.
    pub fn rule_set_reload(&self, trigger: &'static str, result: &'static str, took: Duration) {
        let attributes = [
            KeyValue::new("trigger", trigger),
            KeyValue::new("result", result),
        ];
        self.reloads.add(1, &attributes);
        self.reload_duration.record(took.as_secs_f64(), &attributes);
    }

    /// A hook call refused by admission control.
    pub fn call_refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A panic caught while serving a request (a defect: the request got a fixed 500 answer).
    pub fn panic(&self, place: &'static str) {
        self.panics.add(1, &[KeyValue::new("where", place)]);
    }

    /// A call refused by authentication, with the fixed reason.
    pub fn auth_rejected(&self, reason: &'static str) {
        self.auth_rejected
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// Audit records written, or not.
    pub fn audit_records(&self, outcome: &'static str, count: u64) {
        self.audit_records
            .add(count, &[KeyValue::new("outcome", outcome)]);
    }

    /// Exports whether the audit sink is failing (1) or writing (0).
    pub fn observe_audit(&self, failing: impl Fn() -> bool + Send + Sync + 'static) {
        let gauge = self
            .meter
            .u64_observable_gauge("cardinal.audit.failing")
            .with_description("1 while the audit trail cannot be written")
            .with_callback(move |observer| observer.observe(u64::from(failing()), &[]))
            .build();
        let mut observers = match self.observers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        observers.push(Box::new(gauge));
    }

    /// Store records written, or not.
    pub fn store_records(&self, outcome: &'static str, count: u64) {
        self.store_records
            .add(count, &[KeyValue::new("outcome", outcome)]);
    }

    /// Exports whether the store is failing (1) or writing (0).
    pub fn observe_store(&self, failing: impl Fn() -> bool + Send + Sync + 'static) {
        let gauge = self
            .meter
            .u64_observable_gauge("cardinal.store.failing")
            .with_description("1 while call records cannot be written to the store (queue full or database failing)")
            .with_callback(move |observer| observer.observe(u64::from(failing()), &[]))
            .build();
        self.keep(Box::new(gauge));
    }

    /// Exports each active rule's firing-rate drift: today's rate over its trailing baseline, and
    /// whether it is flagged. `drift` gives `(service, rule, ratio, flagged)`.
    pub fn observe_drift(
        &self,
        drift: impl Fn() -> Vec<(String, String, f64, bool)> + Send + Sync + 'static,
    ) {
        let drift = Arc::new(drift);
        let ratios = Arc::clone(&drift);
        let ratio = self
            .meter
            .f64_observable_gauge("cardinal.rule.drift.ratio")
            .with_description("A rule's firing rate today over its trailing baseline")
            .with_callback(move |observer| {
                for (service, rule, ratio, _) in ratios() {
                    observer.observe(
                        ratio,
                        &[
                            KeyValue::new("service", service),
                            KeyValue::new("rule", rule),
                        ],
                    );
                }
            })
            .build();
        let flagged = self
            .meter
            .u64_observable_gauge("cardinal.rule.drifting")
            .with_description(
                "1 while a rule's firing rate has moved beyond the drift factor, or stopped",
            )
            .with_callback(move |observer| {
                for (service, rule, _, flagged) in drift() {
                    observer.observe(
                        u64::from(flagged),
                        &[
                            KeyValue::new("service", service),
                            KeyValue::new("rule", rule),
                        ],
                    );
                }
            })
            .build();
        self.keep(Box::new(ratio));
        self.keep(Box::new(flagged));
    }

    fn keep(&self, instrument: Box<dyn std::any::Any + Send + Sync>) {
        let mut observers = match self.observers.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        observers.push(instrument);
    }

    /// Counts a call in flight until the returned guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.in_flight.add(1, &[]);
        InFlight(&self.in_flight)
    }

    /// The Prometheus text exposition of every metric.
    pub fn prometheus_text(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_default()
    }

    /// Pushes pending OTLP metrics (at shutdown).
    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

pub struct InFlight<'a>(&'a UpDownCounter<i64>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.add(-1, &[]);
    }
}
