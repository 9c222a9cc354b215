//! What a run records: HDR histograms of latency (microseconds, 3 significant digits, so p99.9 of a
//! ten-million-request run costs a few hundred kilobytes, not a sorted array), status and error
//! counts, and the clinical checks. One recorder per run behind a mutex: it is held for a few
//! nanoseconds per call and never across an await, and per-worker histograms would cost hundreds
//! of kilobytes per connection.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::BenchError;
use super::client::{Cards, Class, Outcome, Status, TransportError};

/// Latencies up to an hour are kept exactly enough; longer ones are recorded as an hour.
const MAX_MICROS: u64 = 3_600_000_000;

fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).map_err(|e| BenchError::Histogram(e.to_string()))
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Everything measured in a run.
pub struct Recorder {
    /// Every answered call.
    pub all: Histogram<u64>,
    /// HTTP 200 / gRPC OK.
    pub accepted: Histogram<u64>,
    /// HTTP 503 / gRPC UNAVAILABLE.
    pub refused: Histogram<u64>,
    /// Open model: how late each request was sent after its scheduled time.
    pub lag: Histogram<u64>,
    /// Answer counts by status, in the order first seen.
    pub statuses: Vec<(Status, u64)>,
    /// Transport errors by [`TransportError::index`].
    pub errors: [u64; TransportError::ALL.len()],
    pub sent: u64,
    pub answered: u64,
    pub card_mismatches: u64,
    pub unreadable: u64,
    pub diagnostics: u64,
    /// Answers with a diagnostic by their first one's `rule: kind`.
    pub diagnostic_kinds: BTreeMap<String, u64>,
    pub first_send: Option<Instant>,
    pub last_send: Option<Instant>,
    pub last_done: Option<Instant>,
    /// Answers that arrived in the measured time, warm-up requests' included: what the server
    /// delivered then (throughput, goodput).
    pub window_answered: u64,
    pub window_accepted: u64,
}

impl Recorder {
    pub fn new() -> Result<Self, BenchError> {
        Ok(Self {
            all: histogram()?,
            accepted: histogram()?,
            refused: histogram()?,
            lag: histogram()?,
            statuses: Vec::new(),
            errors: [0; TransportError::ALL.len()],
            sent: 0,
            answered: 0,
            card_mismatches: 0,
            unreadable: 0,
            diagnostics: 0,
            diagnostic_kinds: BTreeMap::new(),
            first_send: None,
            last_send: None,
            last_done: None,
            window_answered: 0,
            window_accepted: 0,
        })
    }

    /// Records one measured call: `latency` from its start (closed loop) or scheduled time (open
    /// model), `lag` how late it was sent (open model).
    pub fn record(
        &mut self,
        outcome: Outcome,
        latency: Duration,
        lag: Option<Duration>,
        sent_at: Instant,
        done: Instant,
    ) {
        self.sent += 1;
        if self.first_send.is_none_or(|t| sent_at < t) {
            self.first_send = Some(sent_at);
        }
        if self.last_send.is_none_or(|t| sent_at > t) {
            self.last_send = Some(sent_at);
        }
        self.answer_in_window(&outcome, done);
        if let Some(lag) = lag {
            self.lag.saturating_record(micros(lag));
        }
        match outcome {
            Outcome::Failed(kind) => {
                if let Some(n) = self.errors.get_mut(kind.index()) {
                    *n += 1;
                }
            }
            Outcome::Answered {
                status,
                cards,
                diagnostic,
            } => {
                self.answered += 1;
                let us = micros(latency);
                self.all.saturating_record(us);
                match status.class() {
                    Class::Accepted => self.accepted.saturating_record(us),
                    Class::Refused => self.refused.saturating_record(us),
                    Class::Other => {}
                }
                match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, count)) => *count += 1,
                    None => self.statuses.push((status, 1)),
                }
                match cards {
                    Cards::Different => self.card_mismatches += 1,
                    Cards::Unreadable => self.unreadable += 1,
                    Cards::Same | Cards::NotChecked => {}
                }
                if let Some(key) = diagnostic {
                    self.diagnostics += 1;
                    *self.diagnostic_kinds.entry(key).or_default() += 1;
                }
            }
        }
    }

    /// Counts an answer that arrived in the measured time (every measured one, and a warm-up
    /// request's that arrived late).
    pub fn answer_in_window(&mut self, outcome: &Outcome, done: Instant) {
        if self.last_done.is_none_or(|t| done > t) {
            self.last_done = Some(done);
        }
        if let Outcome::Answered { status, .. } = outcome {
            self.window_answered += 1;
            if status.class() == Class::Accepted {
                self.window_accepted += 1;
            }
        }
    }

    pub fn transport_errors(&self) -> u64 {
        self.errors.iter().sum()
    }

    pub fn count(&self, class: Class) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| s.class() == class)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A shared recorder; a poisoned lock (a worker panicked) still yields the numbers.
pub struct SharedRecorder(Mutex<Recorder>);

impl SharedRecorder {
    pub fn new() -> Result<Self, BenchError> {
        Ok(Self(Mutex::new(Recorder::new()?)))
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Recorder) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    pub fn into_inner(self) -> Recorder {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Percentiles of one histogram, in milliseconds (microsecond resolution).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencySummary {
    /// `None` for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            mean: h.mean().round() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        })
    }
}

/// Summary statistics of a few values in seconds (idle-connection close times).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SecondsSummary {
    pub min: f64,
    pub p50: f64,
    pub max: f64,
}

impl SecondsSummary {
    pub fn of(values: &mut [Duration]) -> Option<Self> {
        values.sort_unstable();
        let secs = |d: &Duration| (d.as_secs_f64() * 1000.0).round() / 1000.0;
        Some(Self {
            min: secs(values.first()?),
            p50: secs(values.get(values.len() / 2)?),
            max: secs(values.last()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() -> Result<(), BenchError> {
        let mut r = Recorder::new()?;
        let now = Instant::now();
        let ok = Outcome::Answered {
            status: Status::Http(200),
            cards: Cards::Same,
            diagnostic: None,
        };
        let refused = Outcome::Answered {
            status: Status::Http(503),
            cards: Cards::NotChecked,
            diagnostic: None,
        };
        let ms = Duration::from_millis(1);
        r.record(ok.clone(), ms, None, now, now + ms);
        r.record(ok, 2 * ms, None, now, now + ms);
        r.record(refused, ms, None, now, now + ms);
        r.record(
            Outcome::Failed(TransportError::Reset),
            ms,
            None,
            now,
            now + ms,
        );
        assert_eq!(r.sent, 4);
        assert_eq!(r.answered, 3);
        assert_eq!(r.transport_errors(), 1);
        assert_eq!(r.count(Class::Accepted), 2);
        assert_eq!(r.count(Class::Refused), 1);
        let all = LatencySummary::of(&r.all);
        assert_eq!(all.map(|s| s.count), Some(3));
        assert_eq!(LatencySummary::of(&r.lag), None);
        Ok(())
    }
}
