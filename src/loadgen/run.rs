//! The two load models.
//!
//! **Closed loop** (`--connections N`): N workers each send, wait for the answer, and send again.
//! It finds the throughput the server can carry, but its latency flatters a slow server: while the
//! server stalls, nobody sends.
//!
//! **Open model** (`--rate R`): request *i* is due at `start + i/R` whatever the server does.
//! Workers (one per connection) take the next due request when they are free; when all are busy,
//! due requests wait, and that wait is part of their latency, because latency is measured from the
//! scheduled time. That is what a clinician's EHR sees when the service falls behind, and it avoids
//! coordinated omission. One exception keeps the generator's own timer out of the server's numbers:
//! a free worker that sleeps until a request is due and wakes up late (tokio's timer ticks in
//! milliseconds) starts the clock when it actually sends. How late requests went out is reported as
//! the schedule lag, so a generator that cannot keep up is visible.
//!
//! Both models stop at the end of the measured time (and let the calls in flight finish). In the
//! open model, requests that were due but never sent because every connection stayed busy are the
//! *backlog*: a server that cannot carry the rate and does not refuse the excess leaves one, and
//! their latency, had they been sent, would exceed every latency reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio::time::sleep_until;

use super::client::{CallPlan, Client, Outcome, TransportError};
use super::report::LoadReport;
use super::stats::SharedRecorder;
use super::target::Target;
use super::workload::Workload;
use super::{BenchError, MAX_DURATION};

/// The wire protocol of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Grpc => "grpc",
        }
    }
}

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadModel {
    /// Each worker sends its next request when the previous one is answered.
    Closed,
    /// Requests are due at a fixed rate (per second).
    Open { rate: f64 },
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub target: Target,
    pub workload: Workload,
    pub protocol: Protocol,
    pub model: LoadModel,
    /// Workers, each with its own connection.
    pub connections: usize,
    /// The measured time; `None` with `max_requests` set means "until done", within
    /// [`MAX_DURATION`].
    pub duration: Option<Duration>,
    pub max_requests: Option<u64>,
    /// Sent before the measured time and not recorded.
    pub warmup: Duration,
    /// Per call; a call not answered by then is a `timeout` transport error.
    pub timeout: Duration,
    /// `--header` values.
    pub headers: Vec<String>,
    /// The generator's runtime threads (reported only).
    pub threads: usize,
}

/// The clock of a run, shared by its workers.
struct Schedule {
    start: Instant,
    measure_from: Instant,
    end: Instant,
    model: LoadModel,
    /// Closed loop: measured requests started; open model: requests taken (warm-up included).
    taken: AtomicU64,
    /// The last ticket (exclusive): `max_requests`, plus the warm-up's for the open model.
    limit: u64,
    /// Open model: tickets due during the warm-up.
    warmup_tickets: u64,
    timeout: Duration,
}

/// Runs the load and reports it. Every connection is opened first: a server that is not there is
/// an error, not a report full of refused connections.
pub async fn run_load(options: &LoadOptions) -> Result<LoadReport, BenchError> {
    let plan = Arc::new(CallPlan::new(
        &options.target,
        &options.workload,
        &options.headers,
    )?);
    let mut clients = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        clients.push(
            Client::connect(options.protocol, &options.target, &plan, options.timeout).await?,
        );
    }
    let duration = options.duration.unwrap_or(MAX_DURATION);
    let start = Instant::now();
    let measure_from = start + options.warmup;
    let (warmup_tickets, limit) = match options.model {
        LoadModel::Closed => (0, options.max_requests.unwrap_or(u64::MAX)),
        LoadModel::Open { rate } => {
            let warmup = (options.warmup.as_secs_f64() * rate).ceil() as u64;
            let limit = options
                .max_requests
                .map_or(u64::MAX, |n| n.saturating_add(warmup));
            (warmup, limit)
        }
    };
    let schedule = Arc::new(Schedule {
        start,
        measure_from,
        end: measure_from + duration,
        model: options.model,
        taken: AtomicU64::new(0),
        limit,
        warmup_tickets,
        timeout: options.timeout,
    });
    let recorder = Arc::new(SharedRecorder::new()?);
    let mut workers = JoinSet::new();
    for client in clients {
        let schedule = Arc::clone(&schedule);
        let recorder = Arc::clone(&recorder);
        workers.spawn(async move {
            match schedule.model {
                LoadModel::Closed => closed_worker(client, &schedule, &recorder).await,
                LoadModel::Open { rate } => open_worker(client, &schedule, &recorder, rate).await,
            }
        });
    }
    let mut connections_opened = 0;
    while let Some(joined) = workers.join_next().await {
        // A worker that panicked loses only its connection count; its calls are recorded.
        if let Ok(opened) = joined {
            connections_opened += opened;
        }
    }
    let due = match options.model {
        LoadModel::Closed => None,
        LoadModel::Open { rate } => {
            let scheduled = ((schedule.end - start).as_secs_f64() * rate).ceil() as u64;
            Some(scheduled.min(limit).saturating_sub(warmup_tickets))
        }
    };
    let recorder = Arc::try_unwrap(recorder)
        .map_err(|_| BenchError::Usage("a worker outlived the run".into()))?
        .into_inner();
    Ok(LoadReport::new(
        options,
        &recorder,
        &plan.first_cards,
        measure_from,
        connections_opened,
        due,
    ))
}

/// One call under the run's timeout; an abandoned call's connection is not reused.
async fn call(client: &mut Client, timeout: Duration) -> Outcome {
    match tokio::time::timeout(timeout, client.call()).await {
        Ok(outcome) => outcome,
        Err(_) => {
            client.reset();
            Outcome::Failed(TransportError::Timeout)
        }
    }
}

/// Send, wait, repeat until the time is up or the requests are all taken. Returns the connections
/// the worker opened.
async fn closed_worker(mut client: Client, s: &Schedule, recorder: &SharedRecorder) -> u64 {
    loop {
        let sent_at = Instant::now();
        if sent_at >= s.end {
            break;
        }
        let measured = sent_at >= s.measure_from;
        if measured && s.taken.fetch_add(1, Ordering::Relaxed) >= s.limit {
            break;
        }
        let outcome = call(&mut client, s.timeout).await;
        let done = Instant::now();
        let refused = outcome == Outcome::Failed(TransportError::ConnectRefused);
        if measured {
            recorder.with(|r| r.record(outcome, done - sent_at, None, sent_at, done));
        } else if done >= s.measure_from {
            recorder.with(|r| r.answer_in_window(&outcome, done));
        }
        if refused {
            // Nothing is listening: do not spin on refused connections for the rest of the run.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    client.connections_opened()
}

/// Take the next due request, wait for its time if it is not yet due, send it. Returns the
/// connections the worker opened.
async fn open_worker(
    mut client: Client,
    s: &Schedule,
    recorder: &SharedRecorder,
    rate: f64,
) -> u64 {
    loop {
        let ticket = s.taken.fetch_add(1, Ordering::Relaxed);
        if ticket >= s.limit {
            break;
        }
        let due = s.start + Duration::from_secs_f64(ticket as f64 / rate);
        // Past the end of the run, what is still due is the backlog: reported, not sent.
        if due >= s.end || Instant::now() >= s.end {
            break;
        }
        let taken_at = Instant::now();
        // A free worker waits for the due time; a late one (all workers were busy) sends at once
        // and the time it was kept waiting counts.
        let clock_from = if taken_at < due {
            sleep_until(due.into()).await;
            Instant::now()
        } else {
            due
        };
        let sent_at = Instant::now();
        let outcome = call(&mut client, s.timeout).await;
        let done = Instant::now();
        if ticket >= s.warmup_tickets {
            let lag = sent_at.saturating_duration_since(due);
            recorder.with(|r| r.record(outcome, done - clock_from, Some(lag), sent_at, done));
        } else if done >= s.measure_from {
            recorder.with(|r| r.answer_in_window(&outcome, done));
        }
    }
    client.connections_opened()
}
