//! The audit trail: who asked about which patient, and what Cardinal answered. One JSON line per hook
//! call (explain included) and per feedback call, in its own append-only file (`audit.path`, in the
//! data directory), never in the application log and never with a token.
//!
//! Records go through a bounded queue to a writer thread, so writing never blocks a response. When
//! the file cannot be opened or written, or the queue is full, the sink is failing: that shows in
//! `/readyz`, in the metric `cardinal_audit_records_total{outcome}` and in the log, and with
//! `audit.on_failure = "refuse"` (the default) calls are answered 503 until it recovers, so a
//! deployment never serves unaudited. The writer retries opening the file every few seconds.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::cds_hooks::{FeedbackRequest, HookRequest, HookResponse};
use crate::telemetry::Metrics;
use crate::telemetry::SinkHealth;

/// What to do with a call whose record cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Answer 503: nothing is served unaudited.
    Refuse,
    /// Answer anyway (the failure still shows in metrics, logs and `/readyz`).
    Continue,
}

/// `[audit]` in Cardinal's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON lines file; relative to `data_dir`.
    pub path: PathBuf,
    pub on_failure: OnFailure,
    /// Records waiting for the writer at most; beyond, the sink counts as failing.
    pub queue_capacity: usize,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("audit.jsonl"),
            on_failure: OnFailure::Refuse,
            queue_capacity: 4096,
        }
    }
}

/// The call a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    Hook,
    Explain,
    Feedback,
}

/// A card of the answer: its uuid and the rule that made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditedCard {
    pub uuid: Option<String>,
    pub rule_id: Option<String>,
}

/// One line of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// RFC 3339, UTC, milliseconds.
    pub time: String,
    pub kind: CallKind,
    /// `http` or `grpc`.
    pub transport: &'static str,
    /// The verified caller; `null` with authentication off.
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub tenant: Option<String>,
    pub service_id: String,
    pub hook: Option<String>,
    pub hook_instance: Option<String>,
    pub patient_id: Option<String>,
    /// The version of the rule set that answered (none for a refused call).
    pub rule_set_version: Option<String>,
    pub cards: Vec<AuditedCard>,
    /// `answered` or `refused`.
    pub outcome: &'static str,
    /// The HTTP status (for gRPC, the HTTP status of the same answer over HTTP).
    pub status: u16,
    pub trace_id: Option<String>,
}

impl AuditRecord {
    /// A record for a call to `service_id`, before its request is read.
    pub fn new(
        kind: CallKind,
        transport: &'static str,
        caller: Option<&Caller>,
        service_id: &str,
        trace_id: Option<String>,
    ) -> Self {
        Self {
            time: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            kind,
            transport,
            issuer: caller.map(|c| c.issuer.clone()),
            subject: caller.and_then(|c| c.subject.clone()),
            tenant: caller.and_then(|c| c.tenant.clone()),
            service_id: crate::cds_hooks::excerpt(service_id).to_string(),
            hook: None,
            hook_instance: None,
            patient_id: None,
            rule_set_version: None,
            cards: Vec::new(),
            outcome: "refused",
            status: 0,
            trace_id,
        }
    }

    /// What the request says: hook, hookInstance and patient.
    pub fn request(&mut self, request: &HookRequest) {
        self.hook = Some(request.hook.clone());
        self.hook_instance = Some(request.hook_instance.clone());
        self.patient_id = request
            .context
            .get("patientId")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
    }

    /// The answer: its cards, with the rule of each.
    pub fn answered(&mut self, response: &HookResponse) {
        self.outcome = "answered";
        self.status = 200;
        self.rule_set_version
            .clone_from(&response.extension.rule_set);
        self.cards = response
            .cards
            .iter()
            .map(|card| AuditedCard {
                uuid: card.uuid.clone(),
                rule_id: card.explanation().map(|e| e.rule_id.clone()),
            })
            .collect();
    }

    /// The cards a feedback call is about.
    pub fn feedback(&mut self, feedback: &FeedbackRequest) {
        self.cards = feedback
            .feedback
            .iter()
            .map(|entry| AuditedCard {
                uuid: Some(entry.card.clone()),
                rule_id: None,
            })
            .collect();
    }

    /// A refusal (or, 2xx, an answer without cards) with its HTTP status.
    pub fn refused(&mut self, status: u16) {
        self.outcome = if (200..300).contains(&status) {
            "answered"
        } else {
            "refused"
        };
        self.status = status;
    }
}

/// The audit sink cannot take records and the policy is to refuse calls.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the audit trail cannot be written; calls are refused until it can")]
pub struct AuditUnavailable;

/// Where records go. Cheap to clone.
#[derive(Clone)]
pub struct AuditSink {
    queue: SyncSender<AuditRecord>,
    health: Arc<SinkHealth>,
    policy: OnFailure,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// How often a failing writer tries to open the file again.
/// How long the writer lets records gather after the first one before writing them.
const GATHER: Duration = Duration::from_millis(20);

const RETRY_EVERY: Duration = Duration::from_secs(2);

impl AuditSink {
    /// Starts the writer thread for `data_dir`/`config.path`. The file is opened at once, so a path
    /// that cannot be written shows as failing from the start.
    pub fn start(config: &AuditConfig, data_dir: &Path, metrics: Arc<Metrics>) -> Self {
        let path = data_dir.join(&config.path);
        let (queue, records) = std::sync::mpsc::sync_channel(config.queue_capacity.max(1));
        let health = Arc::new(SinkHealth::default());
        let mut writer = Writer {
            path,
            file: None,
            opened_at: Instant::now(),
            health: Arc::clone(&health),
            metrics: Arc::clone(&metrics),
        };
        writer.open();
        let spawned = std::thread::Builder::new()
            .name("cardinal-audit".into())
            .spawn(move || writer.run(&records));
        if spawned.is_err() {
            health.set(Some("the audit writer thread could not be started".into()));
        }
        Self {
            queue,
            health,
            policy: config.on_failure,
            metrics,
        }
    }

    /// Why the sink is failing, if it is.
    pub fn failing(&self) -> Option<String> {
        self.health.get()
    }

    pub fn policy(&self) -> OnFailure {
        self.policy
    }

    /// Before a call: refused when the sink is failing and the policy is to refuse.
    pub fn admit(&self) -> Result<(), AuditUnavailable> {
        match (self.policy, self.failing()) {
            (OnFailure::Refuse, Some(_)) => Err(AuditUnavailable),
            _ => Ok(()),
        }
    }

    /// Queues `record` without waiting. Fails (with the refuse policy) when the queue is full or the
    /// sink failing; the caller must then not serve the answer.
    pub fn record(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.metrics.audit_records("dropped_full", 1);
                tracing::error!("audit queue full: a record was not written");
                self.health.set(Some("the audit queue is full".into()));
                return self.refuse_or_continue();
            }
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.audit_records("dropped_no_writer", 1);
                self.health.set(Some("the audit writer has stopped".into()));
                return self.refuse_or_continue();
            }
        }
        self.admit()
    }

    fn refuse_or_continue(&self) -> Result<(), AuditUnavailable> {
        match self.policy {
            OnFailure::Refuse => Err(AuditUnavailable),
            OnFailure::Continue => Ok(()),
        }
    }
}

struct Writer {
    path: PathBuf,
    file: Option<BufWriter<File>>,
    /// The last attempt to open the file.
    opened_at: Instant,
    health: Arc<SinkHealth>,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn open(&mut self) {
        self.opened_at = Instant::now();
        let opened = self
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)
            });
        match opened {
            Ok(file) => {
                self.file = Some(BufWriter::new(file));
                if self.health.get().is_some() {
                    tracing::info!(path = %self.path.display(), "audit trail writable again");
                }
                self.health.set(None);
            }
            Err(e) => self.fail(format!(
                "the audit file {} cannot be opened: {e}",
                self.path.display()
            )),
        }
    }

    fn fail(&mut self, why: String) {
        if self.health.get().as_ref() != Some(&why) {
            tracing::error!(reason = %why, "audit trail failing");
        }
        self.file = None;
        self.health.set(Some(why));
    }

    fn run(&mut self, records: &Receiver<AuditRecord>) {
        loop {
            let record = match records.recv_timeout(RETRY_EVERY) {
                Ok(record) => Some(record),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            if self.file.is_none() {
                if self.opened_at.elapsed() >= RETRY_EVERY {
                    self.open();
                }
            } else if record.is_none() && self.health.get().is_some() {
                // The queue overflowed earlier and has drained since.
                self.health.set(None);
            }
            let Some(record) = record else { continue };
            // Let the records of a busy moment queue up without waking this thread for each one
            // (a wake-up per call costs the cores the calls run on), then write them together and
            // flush once.
            std::thread::sleep(GATHER);
            let mut batch = vec![record];
            while let Ok(more) = records.try_recv() {
                batch.push(more);
            }
            self.write(&batch);
        }
    }

    /// Writes and flushes `batch`; its records count as written only once flushed.
    fn write(&mut self, batch: &[AuditRecord]) {
        let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let Some(file) = self.file.as_mut() else {
            self.metrics.audit_records("failed", count);
            return;
        };
        let mut written = Ok(());
        for record in batch {
            written = serde_json::to_writer(&mut *file, record)
                .map_err(std::io::Error::other)
                .and_then(|()| file.write_all(b"\n"));
            if written.is_err() {
                break;
            }
        }
        match written.and_then(|()| file.flush()) {
            Ok(()) => self.metrics.audit_records("written", count),
            Err(e) => {
                self.metrics.audit_records("failed", count);
                self.fail(format!(
                    "the audit file {} cannot be written: {e}",
                    self.path.display()
                ));
            }
        }
    }
}
