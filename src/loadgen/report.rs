//! The report of a run, as a text table for people and as JSON (`--json`) for scripts and the
//! tests. The JSON field names are a contract: tests and measurement scripts read them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Instant;

use serde::Serialize;

use super::client::{Class, FirstCards, TransportError};
use super::run::{LoadModel, LoadOptions};
use super::stats::{LatencySummary, Recorder, SecondsSummary};

/// Latency of answered calls, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// Every answered call.
    pub all: Option<LatencySummary>,
    /// HTTP 200 / gRPC OK.
    pub accepted: Option<LatencySummary>,
    /// HTTP 503 / gRPC UNAVAILABLE: how long a refusal took.
    pub refused: Option<LatencySummary>,
}

/// A card as compared between answers.
#[derive(Debug, Clone, Serialize)]
pub struct CardSummary {
    pub indicator: String,
    pub summary: String,
}

/// The report of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub service: String,
    /// `http` or `grpc`.
    pub protocol: &'static str,
    /// `closed` or `open`.
    pub model: &'static str,
    pub connections: usize,
    pub threads: usize,
    /// Open model: the requested rate (requests/s).
    pub target_rate: Option<f64>,
    pub warmup_s: f64,
    /// From the end of the warm-up to the last answer.
    pub elapsed_s: f64,
    /// Measured requests sent (= completed + transport_errors).
    pub sent: u64,
    /// Open model: requests due in the measured time (= sent + backlog).
    pub due: Option<u64>,
    /// Open model: requests due but never sent, because every connection was still busy when the
    /// run ended.
    pub backlog: Option<u64>,
    /// Requests answered with any status (= the sum of `statuses`).
    pub completed: u64,
    pub transport_errors: u64,
    /// The rate requests actually went out at (requests/s): below `target_rate`, the generator or
    /// its connection pool could not keep up.
    pub send_rate: f64,
    /// Answers per second that arrived in the measured time (a warm-up request's answer that
    /// arrived then included: the server delivered it then).
    pub throughput: f64,
    /// Accepted (200 / OK) answers per second, counted the same way.
    pub goodput: f64,
    pub accepted: u64,
    pub refused: u64,
    pub latency_ms: Latencies,
    /// Open model: how late requests were sent after their scheduled time (ms).
    pub schedule_lag_ms: Option<LatencySummary>,
    /// Answers by HTTP status or gRPC code.
    pub statuses: BTreeMap<String, u64>,
    /// Transport errors by kind (every kind listed).
    pub errors: BTreeMap<&'static str, u64>,
    /// Connections opened, including reconnects after the server closed one (HTTP).
    pub connections_opened: u64,
    /// Accepted answers whose cards (indicator + summary, in any order) differ from the first
    /// accepted answer's.
    pub card_mismatches: u64,
    /// Accepted answers whose body is not a CDS Hooks response.
    pub unreadable_responses: u64,
    /// Answers carrying a rule diagnostic (a rule that could not be evaluated).
    pub diagnostics: u64,
    /// Answers with a diagnostic, by their first diagnostic's `rule: kind`.
    pub diagnostic_kinds: BTreeMap<String, u64>,
    /// The first accepted answer's cards, which the others are compared with.
    pub reference_cards: Vec<CardSummary>,
}

fn round(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

impl LoadReport {
    pub(super) fn new(
        options: &LoadOptions,
        r: &Recorder,
        first: &FirstCards,
        measure_from: Instant,
        connections_opened: u64,
        due: Option<u64>,
    ) -> Self {
        let elapsed = r
            .last_done
            .map(|t| t.saturating_duration_since(measure_from).as_secs_f64())
            .unwrap_or_default();
        let per_second = |n: u64| {
            if elapsed > 0.0 {
                round(n as f64 / elapsed, 1)
            } else {
                0.0
            }
        };
        let send_rate = match (r.first_send, r.last_send) {
            (Some(first), Some(last)) if r.sent > 1 && last > first => {
                round((r.sent - 1) as f64 / (last - first).as_secs_f64(), 1)
            }
            _ => per_second(r.sent),
        };
        let accepted = r.count(Class::Accepted);
        Self {
            url: options.target.url.clone(),
            service: options.workload.service.clone(),
            protocol: options.protocol.as_str(),
            model: match options.model {
                LoadModel::Closed => "closed",
                LoadModel::Open { .. } => "open",
            },
            connections: options.connections,
            threads: options.threads,
            target_rate: match options.model {
                LoadModel::Closed => None,
                LoadModel::Open { rate } => Some(rate),
            },
            warmup_s: options.warmup.as_secs_f64(),
            elapsed_s: round(elapsed, 3),
            sent: r.sent,
            due,
            backlog: due.map(|d| d.saturating_sub(r.sent)),
            completed: r.answered,
            transport_errors: r.transport_errors(),
            send_rate,
            throughput: per_second(r.window_answered),
            goodput: per_second(r.window_accepted),
            accepted,
            refused: r.count(Class::Refused),
            latency_ms: Latencies {
                all: LatencySummary::of(&r.all),
                accepted: LatencySummary::of(&r.accepted),
                refused: LatencySummary::of(&r.refused),
            },
            schedule_lag_ms: match options.model {
                LoadModel::Closed => None,
                LoadModel::Open { .. } => LatencySummary::of(&r.lag),
            },
            statuses: r
                .statuses
                .iter()
                .map(|(s, n)| (s.key().into_owned(), *n))
                .collect(),
            errors: TransportError::ALL
                .iter()
                .map(|k| (k.as_str(), r.errors.get(k.index()).copied().unwrap_or(0)))
                .collect(),
            connections_opened,
            card_mismatches: r.card_mismatches,
            unreadable_responses: r.unreadable,
            diagnostics: r.diagnostics,
            diagnostic_kinds: r.diagnostic_kinds.clone(),
            reference_cards: first
                .get()
                .map(|cards| {
                    cards
                        .iter()
                        .map(|(indicator, summary)| CardSummary {
                            indicator: indicator.clone(),
                            summary: summary.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

fn latency_row(f: &mut fmt::Formatter<'_>, name: &str, s: Option<&LatencySummary>) -> fmt::Result {
    match s {
        Some(s) => writeln!(
            f,
            "  {name:<16} {:>9} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            s.count, s.mean, s.p50, s.p90, s.p99, s.p999, s.max
        ),
        None => writeln!(f, "  {name:<16} {:>9}", 0),
    }
}

fn counts<K: fmt::Display>(items: impl Iterator<Item = (K, u64)>) -> String {
    let parts: Vec<String> = items
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let model = match self.target_rate {
            Some(rate) => format!("open model at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "cardinal bench: {} {model}, {} connections, {} thread(s): {} service {}",
            self.protocol, self.connections, self.threads, self.url, self.service
        )?;
        writeln!(
            f,
            "measured       {:.2} s (after {:.2} s of warm-up)",
            self.elapsed_s, self.warmup_s
        )?;
        let due = match (self.due, self.backlog) {
            (Some(due), Some(backlog)) => format!(" of {due} due (backlog never sent: {backlog})"),
            _ => String::new(),
        };
        writeln!(
            f,
            "requests       sent {}{due}, answered {}, transport errors {}",
            self.sent, self.completed, self.transport_errors
        )?;
        writeln!(
            f,
            "rate (req/s)   sent {:.1}, throughput {:.1}, goodput (accepted) {:.1}",
            self.send_rate, self.throughput, self.goodput
        )?;
        writeln!(
            f,
            "latency (ms)     {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "count", "mean", "p50", "p90", "p99", "p99.9", "max"
        )?;
        latency_row(f, "all answers", self.latency_ms.all.as_ref())?;
        latency_row(f, "accepted", self.latency_ms.accepted.as_ref())?;
        latency_row(f, "refused", self.latency_ms.refused.as_ref())?;
        if let Some(lag) = &self.schedule_lag_ms {
            latency_row(f, "schedule lag", Some(lag))?;
        }
        writeln!(
            f,
            "statuses       {}",
            counts(self.statuses.iter().map(|(k, n)| (k, *n)))
        )?;
        writeln!(
            f,
            "errors         {}",
            counts(self.errors.iter().map(|(k, n)| (k, *n)))
        )?;
        writeln!(
            f,
            "connections    {} opened (reconnects included)",
            self.connections_opened
        )?;
        let reference: Vec<String> = self
            .reference_cards
            .iter()
            .map(|c| format!("[{}] {}", c.indicator, c.summary))
            .collect();
        writeln!(
            f,
            "cards          {} accepted answer(s) differ from the first ({} card(s){}{}); {} unreadable",
            self.card_mismatches,
            reference.len(),
            if reference.is_empty() { "" } else { ": " },
            reference.join("; "),
            self.unreadable_responses
        )?;
        writeln!(
            f,
            "diagnostics    {} answer(s) carry a rule diagnostic{}{}",
            self.diagnostics,
            if self.diagnostics > 0 { ": " } else { "" },
            counts(self.diagnostic_kinds.iter().map(|(k, n)| (k, *n))).trim_start_matches("none")
        )
    }
}

/// The report of an idle-connection run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleReport {
    pub url: String,
    /// Connections asked for.
    pub requested: usize,
    /// TCP handshakes that completed. The kernel completes them before the server accepts, so
    /// `--idle-after-request` is the proof that the server took each one.
    pub connected: usize,
    pub connect_errors: BTreeMap<&'static str, u64>,
    /// With `--idle-after-request`: answers by status, and failed requests.
    pub request_statuses: BTreeMap<String, u64>,
    pub request_errors: u64,
    /// Seconds the connections were held after the last one was opened.
    pub held_s: f64,
    /// Connections the server closed while they were held (or before).
    pub closed_by_server: usize,
    /// When the server closed them, in seconds after each was opened.
    pub closed_after_s: Option<SecondsSummary>,
    /// Connections still open at the end.
    pub open_at_end: usize,
    /// Seconds it took to open all connections.
    pub connect_s: f64,
    /// Each handshake's time; above a second, the server's accept backlog was full and the
    /// kernel resent the SYN.
    pub connect_time_s: Option<SecondsSummary>,
    /// This process's open-file limit during the run.
    pub nofile_limit: u64,
    /// With `--server-pid`: the server's resident memory (KiB) before, with the connections
    /// open, and 1 s after they were closed.
    pub server_pid: Option<u32>,
    pub server_rss_kib: Option<RssReport>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssReport {
    pub before: u64,
    pub with_connections: u64,
    pub after: u64,
    /// (with − before) / connections held, in bytes.
    pub per_connection_bytes: Option<u64>,
}

impl fmt::Display for IdleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cardinal bench: {} idle connections to {}",
            self.requested, self.url
        )?;
        writeln!(
            f,
            "connected      {} in {:.2} s; connect errors: {}",
            self.connected,
            self.connect_s,
            counts(self.connect_errors.iter().map(|(k, n)| (k, *n)))
        )?;
        if let Some(c) = &self.connect_time_s {
            writeln!(
                f,
                "handshake      min {:.3} s, median {:.3} s, max {:.3} s",
                c.min, c.p50, c.max
            )?;
        }
        if !self.request_statuses.is_empty() || self.request_errors > 0 {
            writeln!(
                f,
                "one request    statuses {}; failed {}",
                counts(self.request_statuses.iter().map(|(k, n)| (k, *n))),
                self.request_errors
            )?;
        }
        writeln!(
            f,
            "held           {:.2} s; closed by the server: {}; open at the end: {}",
            self.held_s, self.closed_by_server, self.open_at_end
        )?;
        if let Some(c) = &self.closed_after_s {
            writeln!(
                f,
                "closed after   min {:.3} s, median {:.3} s, max {:.3} s",
                c.min, c.p50, c.max
            )?;
        }
        if let Some(rss) = &self.server_rss_kib {
            let per = rss
                .per_connection_bytes
                .map(|b| format!(" ({b} bytes per connection)"))
                .unwrap_or_default();
            writeln!(
                f,
                "server RSS     before {} KiB, with connections {} KiB{per}, after {} KiB",
                rss.before, rss.with_connections, rss.after
            )?;
        }
        writeln!(f, "open-file limit {}", self.nofile_limit)
    }
}
