//! What the store keeps of a call and of feedback, built from the evaluation and the feedback request.
//! The patient id never leaves this module: it becomes a keyed HMAC ([`PatientKey`]).

use std::fs;
use std::io::Write;
use std::path::Path;

use aws_lc_rs::hmac;
use chrono::{DateTime, Utc};

use crate::cds_hooks::{FeedbackOutcome, FeedbackRequest};
use crate::engine::RuleMode;
use crate::evaluator::Evaluation;

use super::StoreError;

/// One hook call and the cards it produced (returned, silent, candidate). Its ids (and every card
/// uuid, see [`crate::cards::finish`]) are time-ordered UUIDs (v7): the store's primary-key B-trees
/// then grow at their end instead of taking each insert on a random page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub id: String,
    pub service_id: String,
    pub rule_set: String,
    /// Unix milliseconds.
    pub called_at: i64,
    pub hook_instance: String,
    pub patient_key: Option<String>,
    pub cards: Vec<CardRow>,
}

/// One card of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRow {
    pub uuid: String,
    pub rule_id: String,
    pub rule_version: String,
    /// `active`, `silent`, `candidate`, `suppressed` (held back as a repeat).
    pub mode: &'static str,
    pub indicator: String,
    pub summary: String,
}

impl CallRecord {
    /// The call `evaluation` answered: the cards returned (with their uuids), then each silent and
    /// candidate rule's would-be cards (given a uuid of their own; never returned, so never
    /// feedback's subject). `called_at` is the wall-clock time, not a pinned evaluation time.
    pub fn new(
        evaluation: &Evaluation,
        hook_instance: &str,
        patient_key: Option<String>,
        called_at: DateTime<Utc>,
    ) -> Self {
        let mut cards = Vec::new();
        for card in &evaluation.response.cards {
            let (Some(uuid), Some(explanation)) = (&card.uuid, card.explanation()) else {
                continue;
            };
            cards.push(CardRow {
                uuid: uuid.clone(),
                rule_id: explanation.rule_id.clone(),
                rule_version: explanation.rule_version.clone(),
                mode: RuleMode::Active.as_str(),
                indicator: card.indicator.as_str().to_owned(),
                summary: card.summary.clone(),
            });
        }
        // Held back as repeats: counted apart, so analytics show what suppression saved.
        for held in &evaluation.suppressed {
            cards.push(CardRow {
                uuid: uuid::Uuid::now_v7().to_string(),
                rule_id: held.rule_id.clone(),
                rule_version: held.rule_version.clone(),
                mode: "suppressed",
                indicator: held.indicator.clone(),
                summary: held.summary.clone(),
            });
        }
        for outcome in evaluation.outcomes.iter().filter(|o| !o.mode.is_active()) {
            for card in &outcome.cards {
                cards.push(CardRow {
                    uuid: uuid::Uuid::now_v7().to_string(),
                    rule_id: outcome.rule_id.clone(),
                    rule_version: outcome.rule_version.clone(),
                    mode: outcome.mode.as_str(),
                    indicator: card.indicator.as_str().to_owned(),
                    summary: card.summary.clone(),
                });
            }
        }
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            service_id: evaluation.service_id.clone(),
            rule_set: evaluation.rule_set.version().to_owned(),
            called_at: called_at.timestamp_millis(),
            hook_instance: hook_instance.to_owned(),
            patient_key,
            cards,
        }
    }
}

/// One feedback entry as stored: the override reason's coding (never the clinician's free-text
/// comment, which can name the patient) and how many suggestions were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackRow {
    pub card_uuid: String,
    pub outcome: &'static str,
    pub outcome_timestamp: String,
    pub override_system: Option<String>,
    pub override_code: Option<String>,
    pub override_display: Option<String>,
    pub accepted_suggestions: i64,
    pub received_at: i64,
}

impl FeedbackRow {
    /// The rows of `request`, received at `now`.
    pub fn from_request(request: &FeedbackRequest, now: DateTime<Utc>) -> Vec<Self> {
        request
            .feedback
            .iter()
            .map(|entry| {
                let reason = entry
                    .override_reason
                    .as_ref()
                    .and_then(|r| r.reason.as_ref());
                Self {
                    card_uuid: entry.card.clone(),
                    outcome: entry.outcome.as_str(),
                    outcome_timestamp: entry.outcome_timestamp.clone(),
                    override_system: reason.map(|c| c.system.clone()),
                    override_code: reason.map(|c| c.code.clone()),
                    override_display: reason.and_then(|c| c.display.clone()),
                    accepted_suggestions: match entry.outcome {
                        FeedbackOutcome::Accepted => {
                            i64::try_from(entry.accepted_suggestions.len()).unwrap_or(i64::MAX)
                        }
                        FeedbackOutcome::Overridden => 0,
                    },
                    received_at: now.timestamp_millis(),
                }
            })
            .collect()
    }
}

/// HMAC-SHA-256 of patient ids under a secret key: the same patient gets the same key (repeats can be
/// counted), and without the secret the id cannot be found from it by trying ids.
pub struct PatientKey(hmac::Key);

impl std::fmt::Debug for PatientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PatientKey(..)")
    }
}

/// Bytes of a generated secret.
const SECRET_BYTES: usize = 32;

impl PatientKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The secret in `path` (at least 16 bytes), created with 32 random bytes (mode 0600) when the
    /// file does not exist. Replicas sharing a PostgreSQL store must share the file.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        match fs::read(path) {
            Ok(secret) if secret.len() >= 16 => return Ok(Self::from_secret(&secret)),
            Ok(_) => {
                return Err(StoreError::Open(format!(
                    "the patient key file {} holds fewer than 16 bytes",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Open(format!(
                    "the patient key file {} cannot be read: {e}",
                    path.display()
                )));
            }
        }
        let mut secret = [0u8; SECRET_BYTES];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| StoreError::Open("no randomness for the patient key".into()))?;
        let cannot = |e: std::io::Error| {
            StoreError::Open(format!(
                "the patient key file {} cannot be created: {e}",
                path.display()
            ))
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(cannot)?;
        }
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(cannot)?;
        file.write_all(&secret).map_err(cannot)?;
        file.sync_all().map_err(cannot)?;
        Ok(Self::from_secret(&secret))
    }

    /// The key of `patient_id`, hex.
    pub fn of(&self, patient_id: &str) -> String {
        let tag = hmac::sign(&self.0, patient_id.as_bytes());
        tag.as_ref()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                use std::fmt::Write as _;
                let _ = write!(s, "{b:02x}");
                s
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_patient_gets_the_same_key_and_another_secret_another_key() {
        let key = PatientKey::from_secret(b"0123456789abcdef");
        assert_eq!(key.of("p1"), key.of("p1"));
        assert_ne!(key.of("p1"), key.of("p2"));
        assert_eq!(key.of("p1").len(), 64);
        assert!(!key.of("p1").contains("p1"));
        let other = PatientKey::from_secret(b"fedcba9876543210");
        assert_ne!(key.of("p1"), other.of("p1"));
    }

    #[test]
    fn a_key_file_is_created_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = PatientKey::load_or_create(&path).unwrap().of("p1");
        let again = PatientKey::load_or_create(&path).unwrap().of("p1");
        assert_eq!(first, again);
    }
}
