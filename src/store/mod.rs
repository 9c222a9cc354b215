//! The store: every card Cardinal returns, every silent and candidate outcome, every hook call and the
//! feedback EHRs send, so informaticists can see per rule and version how often it fires, how often
//! it is overridden and why, how often it repeats for the same patient, and when its firing rate
//! drifts ([`analytics`]).
//!
//! SQLite by default (a file in the data directory, WAL mode), PostgreSQL when `store.url` names one
//! (replicas share it); migrations are compiled in and applied at start. Call records go through a
//! bounded queue to a writer task, so a response never waits on the database; a full queue or a
//! failing database shows in `/readyz` and in the metrics `cardinal_store_records_total{outcome}` and
//! `cardinal_store_failing`. Feedback is written synchronously: it is acknowledged once committed.

pub mod analytics;
mod db;
pub mod page;
mod record;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::cds_hooks::FeedbackRequest;
use crate::evaluator::Evaluation;
use crate::telemetry::Metrics;
use crate::telemetry::SinkHealth;

pub use analytics::{Analytics, Window};
pub use db::Db;
pub use record::{CallRecord, CardRow, FeedbackRow, PatientKey};

/// `[store]` in Cardinal's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Off: no card is remembered and feedback is validated only.
    pub enabled: bool,
    /// `postgres://user:password@host/db`, or `sqlite:path`; unset: the SQLite file
    /// `cardinal.db` in `data_dir`.
    pub url: Option<String>,
    /// Call records waiting for the writer at most; beyond, records are dropped and counted.
    pub queue_capacity: usize,
    /// Database connections at most.
    pub max_connections: u32,
    /// The secret the patient ids are keyed with (relative to `data_dir`; created when missing).
    pub patient_key_file: PathBuf,
    /// Calls, cards and feedback older than this many days are deleted (0: kept forever).
    pub retention_days: u32,
    /// A rule's firing rate today against its trailing baseline: beyond this factor either way
    /// (or zero today after a baseline above zero) it is flagged as drifting.
    pub drift_factor: f64,
    /// Days of the trailing baseline.
    pub drift_baseline_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            url: None,
            queue_capacity: 8192,
            max_connections: 4,
            patient_key_file: PathBuf::from("store-patient.key"),
            retention_days: 400,
            drift_factor: 3.0,
            drift_baseline_days: 14,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.queue_capacity == 0 || self.max_connections == 0 || self.drift_baseline_days == 0 {
            return Err(
                "store.queue_capacity, store.max_connections and store.drift_baseline_days must be positive"
                    .into(),
            );
        }
        if self.drift_factor.is_nan() || self.drift_factor <= 1.0 {
            return Err("store.drift_factor must be above 1".into());
        }
        Ok(())
    }
}

/// Why the store cannot open or answer. Messages name files and databases, never patient data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store cannot be opened: {0}")]
    Open(String),
    #[error("the store's migrations failed: {0}")]
    Migrate(String),
    #[error("the store's database failed: {0}")]
    Database(#[from] sqlx::Error),
}

/// Why feedback was not stored.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// `feedback[index].card` names no card this service returned.
    #[error("`feedback[{index}].card`: no card with this uuid was returned by this service")]
    UnknownCard { index: usize },
    #[error("the feedback could not be stored; try again later")]
    Unavailable(#[source] StoreError),
}

enum Command {
    Call(Box<CallRecord>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Db,
    queue: mpsc::Sender<Command>,
    health: Arc<SinkHealth>,
    metrics: Arc<Metrics>,
    patient_key: Arc<PatientKey>,
    config: StoreConfig,
    /// The last drift assessment, for the metrics.
    drift: Arc<Mutex<Vec<analytics::Drift>>>,
    /// Ends the writer's gathering wait at once (a flush is queued).
    flush_requested: Arc<Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("db", &self.db.kind())
            .finish_non_exhaustive()
    }
}

/// The SQLite file when `store.url` is unset.
pub const DEFAULT_FILE: &str = "cardinal.db";

/// How long feedback waits for the writer to store the card it names (a card returned a moment ago
/// may still be queued).
const FLUSH_WAIT: Duration = Duration::from_secs(5);

/// How often the drift metrics are assessed again.
const DRIFT_EVERY: Duration = Duration::from_secs(300);

/// Records a writer batch holds at most.
const BATCH: usize = 4096;

/// How long the writer gathers records before writing them (a flush, a feedback or an analytics
/// read does not wait for it).
const LINGER: Duration = Duration::from_millis(200);

impl Store {
    /// Opens the configured database (applying migrations) and starts the writer task and, with
    /// `retention_days` set, the purge job. Needs a Tokio runtime.
    pub async fn open(
        config: &StoreConfig,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        config.validate().map_err(StoreError::Open)?;
        let patient_key = PatientKey::load_or_create(&data_dir.join(&config.patient_key_file))?;
        let db = Db::open(
            config.url.as_deref(),
            &data_dir.join(DEFAULT_FILE),
            config.max_connections,
        )
        .await?;
        tracing::info!(database = db.kind(), "store open");
        let (queue, commands) = mpsc::channel(config.queue_capacity);
        let store = Self {
            db,
            queue,
            health: Arc::new(SinkHealth::default()),
            metrics,
            patient_key: Arc::new(patient_key),
            config: config.clone(),
            drift: Arc::default(),
            flush_requested: Arc::default(),
        };
        tokio::spawn(store.clone().write(commands));
        tokio::spawn(store.clone().watch_drift());
        let assessed = Arc::clone(&store.drift);
        store.metrics.observe_drift(move || {
            let drift = match assessed.lock() {
                Ok(d) => d.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            drift
                .into_iter()
                .map(|d| (d.service_id, d.rule_id, d.ratio.unwrap_or(0.0), d.flagged))
                .collect()
        });
        if config.retention_days > 0 {
            tokio::spawn(store.clone().purge_daily());
        }
        let watched = Arc::clone(&store.health);
        store.metrics.observe_store(move || watched.get().is_some());
        Ok(store)
    }

    /// Reads a store that is already there (`cardinal report`): no writer, no purge job.
    pub async fn open_read_only(config: &StoreConfig, data_dir: &Path) -> Result<Self, StoreError> {
        let db = Db::open(
            config.url.as_deref(),
            &data_dir.join(DEFAULT_FILE),
            config.max_connections,
        )
        .await?;
        let (queue, _) = mpsc::channel(1);
        Ok(Self {
            db,
            queue,
            health: Arc::new(SinkHealth::default()),
            metrics: Arc::new(Metrics::new(false)),
            patient_key: Arc::new(PatientKey::from_secret(b"read-only: keys no patient")),
            config: config.clone(),
            drift: Arc::default(),
            flush_requested: Arc::default(),
        })
    }

    /// `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        self.db.kind()
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Why the store is failing (queue full, database errors), if it is.
    pub fn failing(&self) -> Option<String> {
        self.health.get()
    }

    /// The keyed hash of `patient_id`.
    pub fn patient_key(&self, patient_id: &str) -> String {
        self.patient_key.of(patient_id)
    }

    /// Queues the record of a hook call without waiting: a full queue drops it (counted, and the
    /// store reports failing until the writer catches up).
    pub fn record_call(
        &self,
        evaluation: &Evaluation,
        hook_instance: &str,
        patient_id: Option<&str>,
    ) {
        let record = CallRecord::new(
            evaluation,
            hook_instance,
            patient_id.map(|id| self.patient_key(id)),
            Utc::now(),
        );
        self.queue_record(record);
    }

    /// Queues `record` as is (tests and the seeding of a dataset use it with their own times).
    pub fn queue_record(&self, record: CallRecord) {
        match self.queue.try_send(Command::Call(Box::new(record))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.store_records("dropped_full", 1);
                if self.health.get().is_none() {
                    tracing::error!("store queue full: call records are being dropped");
                }
                self.health.set(Some("the store queue is full".into()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.store_records("dropped_no_writer", 1);
                self.health.set(Some("the store writer has stopped".into()));
            }
        }
    }

    /// Waits until every record queued so far is written (or `FLUSH_WAIT` passes).
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.queue.send(Command::Flush(done)).await.is_ok() {
            self.flush_requested.notify_one();
            let _ = tokio::time::timeout(FLUSH_WAIT, written).await;
        }
    }

    /// Stores `request`'s entries for service `service_id` once they are committed; every entry must
    /// name a card this service returned (else nothing is stored). Entries already stored (same
    /// card, outcome and timestamp) are not stored again. Returns how many were new.
    pub async fn feedback(
        &self,
        service_id: &str,
        request: &FeedbackRequest,
    ) -> Result<u64, FeedbackError> {
        let unavailable = |e: sqlx::Error| {
            self.metrics.store_records("feedback_failed", 1);
            FeedbackError::Unavailable(StoreError::Database(e))
        };
        let mut flushed = false;
        for (index, entry) in request.feedback.iter().enumerate() {
            let mut owner = self
                .db
                .card_service(&entry.card)
                .await
                .map_err(unavailable)?;
            if owner.is_none() && !flushed {
                // Returned a moment ago, perhaps still queued.
                self.flush().await;
                flushed = true;
                owner = self
                    .db
                    .card_service(&entry.card)
                    .await
                    .map_err(unavailable)?;
            }
            if owner.as_deref() != Some(service_id) {
                return Err(FeedbackError::UnknownCard { index });
            }
        }
        let rows = FeedbackRow::from_request(request, Utc::now());
        let stored = self.db.write_feedback(&rows).await.map_err(unavailable)?;
        self.metrics.store_records("feedback", stored);
        Ok(stored)
    }

    /// Figures per rule and version over `window`.
    pub async fn analytics(&self, window: Window) -> Result<Analytics, StoreError> {
        // What was answered a moment ago counts.
        self.flush().await;
        analytics::compute(&self.db, window, &self.config).await
    }

    /// Deletes what is older than `before`; returns the cards deleted.
    pub async fn purge(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        Ok(self.db.purge(before.timestamp_millis()).await?)
    }

    /// Assesses every active rule's drift now (and keeps it for the metrics).
    pub async fn assess_drift(&self) -> Result<Vec<analytics::Drift>, StoreError> {
        let drift = analytics::drift(&self.db, Utc::now(), &self.config).await?;
        match self.drift.lock() {
            Ok(mut slot) => slot.clone_from(&drift),
            Err(poisoned) => poisoned.into_inner().clone_from(&drift),
        }
        Ok(drift)
    }

    async fn watch_drift(self) {
        let mut every = tokio::time::interval(DRIFT_EVERY);
        loop {
            every.tick().await;
            if let Err(e) = self.assess_drift().await {
                tracing::warn!(error = %e, "drift assessment failed");
            }
        }
    }

    async fn purge_daily(self) {
        let mut every = tokio::time::interval(Duration::from_secs(24 * 3600));
        loop {
            every.tick().await;
            let before = Utc::now() - chrono::Duration::days(i64::from(self.config.retention_days));
            match self.purge(before).await {
                Ok(cards) => tracing::info!(cards, "store retention purge"),
                Err(e) => tracing::error!(error = %e, "store retention purge failed"),
            }
        }
    }

    /// The writer task: batches what is queued, writes each batch in one transaction, and answers
    /// flushes once everything before them is written.
    async fn write(self, mut commands: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if commands.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
            // Gather for a moment: a few large transactions (one commit each) cost the cores the
            // calls run on far less than many small ones. The records arriving meanwhile queue up
            // without waking this task (a wake-up per record costs more than writing it); a flush
            // ends the wait.
            if !batch.iter().any(|c| matches!(c, Command::Flush(_))) {
                tokio::select! {
                    () = tokio::time::sleep(LINGER) => {}
                    () = self.flush_requested.notified() => {}
                }
                while batch.len() < BATCH {
                    match commands.try_recv() {
                        Ok(command) => batch.push(command),
                        Err(_) => break,
                    }
                }
            }
            let mut calls = Vec::with_capacity(batch.len());
            let mut flushes = Vec::new();
            for command in batch.drain(..) {
                match command {
                    Command::Call(record) => calls.push(*record),
                    Command::Flush(done) => flushes.push(done),
                }
            }
            if !calls.is_empty() {
                self.write_batch(&calls).await;
            }
            for done in flushes {
                let _ = done.send(());
            }
        }
    }

    async fn write_batch(&self, calls: &[CallRecord]) {
        let count = calls.iter().map(|c| c.cards.len() as u64 + 1).sum();
        match self.db.write_calls(calls).await {
            Ok(_) => {
                self.metrics.store_records("written", count);
                if self.health.get().is_some() {
                    tracing::info!("store writable again");
                    self.health.set(None);
                }
            }
            Err(e) => {
                self.metrics.store_records("failed", count);
                let why = format!("the store's database cannot be written: {e}");
                if self.health.get().as_ref() != Some(&why) {
                    tracing::error!(reason = %why, "store failing");
                }
                self.health.set(Some(why));
            }
        }
    }
}
