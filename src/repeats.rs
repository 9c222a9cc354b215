//! Repeat suppression: the same card is not shown again to the same patient within a rule's
//! `suppress_repeat_hours`. A quarter to a third of alerts repeat for the same patient; each repeat
//! the clinician has already seen makes the next alert easier to ignore.
//!
//! "The same card" is the rule, the patient and the card's `repeatKey` (by default its summary: a
//! rule whose summary quotes a changing value, such as a dose, declares a stable key instead). The memory is this replica's,
//! in RAM (bounded; it starts empty after a restart), keyed by a digest of the patient id, never the
//! id itself. Suppression applies to hook calls only: `cardinal test`, `explain` and `simulate`
//! evaluate every rule as if each call were the first.

use std::time::Duration;

use aws_lc_rs::digest::{SHA256, digest};
use chrono::{DateTime, Utc};
use moka::sync::Cache;
use serde::{Deserialize, Serialize};

/// Cards remembered at most (the oldest are forgotten first).
const CAPACITY: u64 = 1_000_000;
/// Nothing is remembered longer than this, whatever a rule asks.
const LONGEST: Duration = Duration::from_secs(30 * 24 * 3600);

/// A card that was not shown because the same patient saw it within the rule's window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuppressedCard {
    pub rule_id: String,
    pub rule_version: String,
    pub summary: String,
    pub indicator: String,
    /// When the patient was last shown it (the evaluation time then), RFC 3339.
    pub last_shown: String,
    pub window_hours: u32,
}

/// Which cards each patient was shown, and when.
pub struct RepeatIndex {
    shown: Cache<[u8; 32], DateTime<Utc>>,
}

impl Default for RepeatIndex {
    fn default() -> Self {
        Self {
            shown: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_live(LONGEST)
                .build(),
        }
    }
}

impl std::fmt::Debug for RepeatIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepeatIndex")
            .field("entries", &self.shown.entry_count())
            .finish()
    }
}

fn key(service: &str, rule: &str, patient: &str, summary: &str) -> [u8; 32] {
    let mut text =
        Vec::with_capacity(service.len() + rule.len() + patient.len() + summary.len() + 4);
    for part in [service, rule, patient, summary] {
        text.extend_from_slice(part.as_bytes());
        text.push(0);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, &text).as_ref());
    out
}

impl RepeatIndex {
    /// Whether this card is a repeat within `hours` of when the patient last saw it (then it is
    /// not shown, and `Some(last shown)` is returned); otherwise it is remembered as shown `now`.
    pub fn check(
        &self,
        service: &str,
        rule: &str,
        patient: &str,
        summary: &str,
        now: DateTime<Utc>,
        hours: u32,
    ) -> Option<DateTime<Utc>> {
        let key = key(service, rule, patient, summary);
        if let Some(last) = self.shown.get(&key) {
            let window = chrono::Duration::hours(i64::from(hours));
            if now >= last && now - last < window {
                return Some(last);
            }
        }
        self.shown.insert(key, now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::RepeatIndex;

    #[test]
    fn a_card_repeats_within_the_window_only_for_the_same_patient_and_rule() {
        let index = RepeatIndex::default();
        let t0: chrono::DateTime<chrono::Utc> = "2026-11-01T08:00:00Z".parse().unwrap();
        let hours = |h: i64| t0 + chrono::Duration::hours(h);
        assert_eq!(index.check("s", "r", "p1", "Stop", t0, 24), None);
        assert_eq!(index.check("s", "r", "p1", "Stop", hours(23), 24), Some(t0));
        assert_eq!(
            index.check("s", "r", "p2", "Stop", hours(1), 24),
            None,
            "another patient"
        );
        assert_eq!(
            index.check("s", "r2", "p1", "Stop", hours(1), 24),
            None,
            "another rule"
        );
        assert_eq!(
            index.check("s", "r", "p1", "Other", hours(1), 24),
            None,
            "another card"
        );
        assert_eq!(
            index.check("s", "r", "p1", "Stop", hours(24), 24),
            None,
            "the window passed"
        );
        assert_eq!(
            index.check("s", "r", "p1", "Stop", hours(30), 24),
            Some(hours(24))
        );
    }
}
