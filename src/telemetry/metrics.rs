//! Metrics: hook calls by service and status, rule durations and outcomes, cards by rule and
//! indicator, rule errors by kind, requests in flight. One OpenTelemetry meter provider per Cardinal,
//! read by the Prometheus `/metrics` endpoint and, when an OTLP endpoint is configured, exported.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _, UpDownCounter};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::terminology::Terminology;

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
            meter,
            provider,
            registry,
            observers: Mutex::new(Vec::new()),
        }
    }

    /// Exports the terminology cache's statistics (remote source only; local look-ups are in memory).
    pub fn observe_terminology(&self, terminology: Arc<Terminology>) {
        if terminology.stats().is_none() {
            return;
        }
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
            let t = terminology.clone();
            let counter = self
                .meter
                .u64_observable_counter(name)
                .with_description(description)
                .with_callback(move |observer| {
                    if let Some(stats) = t.stats() {
                        observer.observe(read(&stats), &[]);
                    }
                })
                .build();
            observers.push(Box::new(counter));
        }
        let t = terminology.clone();
        let latency = self
            .meter
            .f64_observable_counter("cardinal.terminology.remote.duration")
            .with_unit("s")
            .with_description("Total time spent waiting for the terminology server")
            .with_callback(move |observer| {
                if let Some(stats) = t.stats() {
                    observer.observe(stats.remote_latency_sum.as_secs_f64(), &[]);
                }
            })
            .build();
        observers.push(Box::new(latency));
        let t = terminology;
        let entries = self
            .meter
            .u64_observable_gauge("cardinal.terminology.cache.entries")
            .with_description("Entries in the terminology cache")
            .with_callback(move |observer| {
                if let Some(stats) = t.stats() {
                    observer.observe(stats.cached_entries, &[]);
                }
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

    /// A hook call refused by admission control.
    pub fn call_refused(&self, reason: &'static str) {
        self.refused.add(1, &[KeyValue::new("reason", reason)]);
    }

    /// A panic caught while serving a request (a defect: the request got a fixed 500 answer).
    pub fn panic(&self, place: &'static str) {
        self.panics.add(1, &[KeyValue::new("where", place)]);
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
