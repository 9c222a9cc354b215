//! Alert-fatigue figures per rule and version over a time window: cards shown, accepted, overridden,
//! without feedback, override reasons ranked, suggestions accepted, repeats per patient, firings per
//! 1,000 calls of the service, and silent and candidate outcomes beside the active ones; plus each
//! rule's daily firing rate and whether today's rate drifts from its trailing baseline (a code or
//! value-set change that makes a rule fire far more, or stop).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use super::db::{Column, Db, Value};
use super::{StoreConfig, StoreError};

const DAY_MS: i64 = 86_400_000;

/// `[since, until)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Window {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Window {
    /// The last `days` days up to now.
    pub fn last_days(days: i64) -> Self {
        let until = Utc::now();
        Self {
            since: until - Duration::days(days),
            until,
        }
    }

    /// How `since` may be written, for an error message.
    pub const SINCE_FORMS: &'static str =
        "`since` must be an RFC 3339 date-time, a date (YYYY-MM-DD) or a number of days (30d)";

    /// `since` parsed, or the last 30 days when it is absent; `None` when it cannot be read.
    pub fn parse_since_or_default(since: Option<&str>) -> Option<Self> {
        match since {
            None => Some(Self::last_days(30)),
            Some(since) => Self::parse_since(since),
        }
    }

    /// From `since` (RFC 3339, `YYYY-MM-DD`, or `Nd` for the last N days) up to now.
    pub fn parse_since(since: &str) -> Option<Self> {
        let until = Utc::now();
        let since = if let Some(days) = since.strip_suffix('d') {
            until
                - Duration::days(
                    days.parse::<i64>()
                        .ok()
                        .filter(|d| (0..=36_600).contains(d))?,
                )
        } else if let Ok(t) = DateTime::parse_from_rfc3339(since) {
            t.with_timezone(&Utc)
        } else {
            NaiveDate::parse_from_str(since, "%Y-%m-%d")
                .ok()?
                .and_time(NaiveTime::MIN)
                .and_utc()
        };
        Some(Self { since, until })
    }
}

/// A ranked override reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OverrideReason {
    pub system: Option<String>,
    /// `null`: overridden without a coded reason.
    pub code: Option<String>,
    pub display: Option<String>,
    pub count: i64,
}

/// One rule version in one mode.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleFigures {
    pub service_id: String,
    pub rule_id: String,
    pub rule_version: String,
    /// `active` (cards returned), `silent`, `candidate`.
    pub mode: String,
    /// Cards (for silent and candidate rules: cards they would have returned).
    pub shown: i64,
    /// Cards with `accepted` feedback.
    pub accepted: i64,
    /// Cards with `overridden` feedback.
    pub overridden: i64,
    pub no_feedback: i64,
    /// overridden / (accepted + overridden); `null` without feedback.
    pub override_rate: Option<f64>,
    pub suggestions_accepted: i64,
    /// Distinct patients shown a card of this rule version.
    pub patients: i64,
    /// Cards to a patient who had already had one of this rule version in the window.
    pub repeats: i64,
    /// shown / patients.
    pub cards_per_patient: Option<f64>,
    /// Calls to the service in the window.
    pub calls: i64,
    pub firings_per_1000_calls: Option<f64>,
    pub indicators: BTreeMap<String, i64>,
    pub override_reasons: Vec<OverrideReason>,
}

/// Cards of one rule (all versions, one mode) on one day, and the service's calls that day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyFiring {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub service_id: String,
    pub rule_id: String,
    pub mode: String,
    pub cards: i64,
    pub calls: i64,
}

/// Today's firing rate of an active rule against its trailing baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Drift {
    pub service_id: String,
    pub rule_id: String,
    /// Cards per call, today (the window's last day).
    pub today_rate: f64,
    pub today_calls: i64,
    /// Cards per call over the baseline days before today.
    pub baseline_rate: f64,
    pub baseline_calls: i64,
    /// today / baseline; `null` with no baseline firing.
    pub ratio: Option<f64>,
    pub flagged: bool,
    /// `up`, `down`, `stopped`, `new`, or `steady`.
    pub direction: &'static str,
}

/// Everything the analytics page, `GET /analytics/rules` and `cardinal report` show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analytics {
    pub window: Window,
    pub database: &'static str,
    /// Calls per service in the window.
    pub calls: BTreeMap<String, i64>,
    pub rules: Vec<RuleFigures>,
    pub daily: Vec<DailyFiring>,
    pub drift: Vec<Drift>,
    pub drift_factor: f64,
    pub drift_baseline_days: u32,
}

type Key = (String, String, String, String);

fn key(row: &[Value]) -> Key {
    let text = |i: usize| row.get(i).map(Value::text).unwrap_or_default();
    (text(0), text(1), text(2), text(3))
}

fn int(row: &[Value], i: usize) -> i64 {
    row.get(i).map_or(0, Value::int)
}

fn ratio(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn day_of(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms.div_euclid(DAY_MS) * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

const RULES_SQL: &str = "SELECT c.service_id, c.rule_id, c.rule_version, c.mode, \
    COUNT(*) AS shown, \
    COUNT(c.patient_key) AS with_patient, \
    COUNT(DISTINCT c.patient_key) AS patients, \
    COUNT(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = c.uuid AND f.outcome = 'accepted') THEN 1 END) AS accepted, \
    COUNT(CASE WHEN EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = c.uuid AND f.outcome = 'overridden') THEN 1 END) AS overridden, \
    COUNT(CASE WHEN NOT EXISTS (SELECT 1 FROM feedback f WHERE f.card_uuid = c.uuid) THEN 1 END) AS no_feedback \
    FROM cards c WHERE c.issued_at >= $1 AND c.issued_at < $2 \
    GROUP BY c.service_id, c.rule_id, c.rule_version, c.mode \
    ORDER BY c.service_id, c.rule_id, c.rule_version, c.mode";

const SUGGESTIONS_SQL: &str = "SELECT c.service_id, c.rule_id, c.rule_version, c.mode, \
    CAST(SUM(f.accepted_suggestions) AS BIGINT) AS n \
    FROM feedback f JOIN cards c ON c.uuid = f.card_uuid \
    WHERE c.issued_at >= $1 AND c.issued_at < $2 \
    GROUP BY c.service_id, c.rule_id, c.rule_version, c.mode";

const REASONS_SQL: &str = "SELECT c.service_id, c.rule_id, c.rule_version, c.mode, \
    f.override_system, f.override_code, MAX(f.override_display) AS display, COUNT(*) AS n \
    FROM feedback f JOIN cards c ON c.uuid = f.card_uuid \
    WHERE c.issued_at >= $1 AND c.issued_at < $2 AND f.outcome = 'overridden' \
    GROUP BY c.service_id, c.rule_id, c.rule_version, c.mode, f.override_system, f.override_code \
    ORDER BY n DESC, f.override_code";

const INDICATORS_SQL: &str = "SELECT service_id, rule_id, rule_version, mode, indicator, COUNT(*) AS n \
    FROM cards WHERE issued_at >= $1 AND issued_at < $2 \
    GROUP BY service_id, rule_id, rule_version, mode, indicator";

const CALLS_SQL: &str = "SELECT service_id, COUNT(*) AS n FROM calls \
    WHERE called_at >= $1 AND called_at < $2 GROUP BY service_id";

const DAILY_CARDS_SQL: &str = "SELECT service_id, rule_id, mode, issued_at / 86400000 AS day, COUNT(*) AS n \
    FROM cards WHERE issued_at >= $1 AND issued_at < $2 \
    GROUP BY service_id, rule_id, mode, issued_at / 86400000 ORDER BY day";

const DAILY_CALLS_SQL: &str = "SELECT service_id, called_at / 86400000 AS day, COUNT(*) AS n \
    FROM calls WHERE called_at >= $1 AND called_at < $2 \
    GROUP BY service_id, called_at / 86400000";

use Column::{Int, Text};

/// The figures over `window`.
pub async fn compute(
    db: &Db,
    window: Window,
    config: &StoreConfig,
) -> Result<Analytics, StoreError> {
    let (from, to) = (
        window.since.timestamp_millis(),
        window.until.timestamp_millis(),
    );
    let by_rule = [
        ("service_id", Text),
        ("rule_id", Text),
        ("rule_version", Text),
        ("mode", Text),
    ];
    let mut calls = BTreeMap::new();
    for row in db
        .rows(CALLS_SQL, from, to, &[("service_id", Text), ("n", Int)])
        .await?
    {
        calls.insert(
            row.first().map(Value::text).unwrap_or_default(),
            int(&row, 1),
        );
    }
    let rule_columns: Vec<(&str, Column)> = by_rule
        .iter()
        .copied()
        .chain([
            ("shown", Int),
            ("with_patient", Int),
            ("patients", Int),
            ("accepted", Int),
            ("overridden", Int),
            ("no_feedback", Int),
        ])
        .collect();
    let mut rules: BTreeMap<Key, RuleFigures> = BTreeMap::new();
    for row in db.rows(RULES_SQL, from, to, &rule_columns).await? {
        let k = key(&row);
        let (shown, with_patient, patients) = (int(&row, 4), int(&row, 5), int(&row, 6));
        let (accepted, overridden) = (int(&row, 7), int(&row, 8));
        let service_calls = calls.get(&k.0).copied().unwrap_or(0);
        rules.insert(
            k.clone(),
            RuleFigures {
                service_id: k.0,
                rule_id: k.1,
                rule_version: k.2,
                mode: k.3,
                shown,
                accepted,
                overridden,
                no_feedback: int(&row, 9),
                override_rate: ratio(overridden, accepted + overridden),
                suggestions_accepted: 0,
                patients,
                repeats: with_patient - patients,
                cards_per_patient: ratio(with_patient, patients),
                calls: service_calls,
                firings_per_1000_calls: ratio(shown * 1000, service_calls),
                indicators: BTreeMap::new(),
                override_reasons: Vec::new(),
            },
        );
    }
    let with_n: Vec<(&str, Column)> = by_rule.iter().copied().chain([("n", Int)]).collect();
    for row in db.rows(SUGGESTIONS_SQL, from, to, &with_n).await? {
        if let Some(figures) = rules.get_mut(&key(&row)) {
            figures.suggestions_accepted = int(&row, 4);
        }
    }
    let reason_columns: Vec<(&str, Column)> = by_rule
        .iter()
        .copied()
        .chain([
            ("override_system", Text),
            ("override_code", Text),
            ("display", Text),
            ("n", Int),
        ])
        .collect();
    for row in db.rows(REASONS_SQL, from, to, &reason_columns).await? {
        let text = |i: usize| match row.get(i) {
            Some(Value::Text(t)) => t.clone(),
            _ => None,
        };
        if let Some(figures) = rules.get_mut(&key(&row)) {
            figures.override_reasons.push(OverrideReason {
                system: text(4),
                code: text(5),
                display: text(6),
                count: int(&row, 7),
            });
        }
    }
    let indicator_columns: Vec<(&str, Column)> = by_rule
        .iter()
        .copied()
        .chain([("indicator", Text), ("n", Int)])
        .collect();
    for row in db
        .rows(INDICATORS_SQL, from, to, &indicator_columns)
        .await?
    {
        if let Some(figures) = rules.get_mut(&key(&row)) {
            let indicator = row.get(4).map(Value::text).unwrap_or_default();
            figures.indicators.insert(indicator, int(&row, 5));
        }
    }
    let daily = daily(db, from, to).await?;
    let drift = drift(db, window.until, config).await?;
    Ok(Analytics {
        window,
        database: db.kind(),
        calls,
        rules: rules.into_values().collect(),
        daily,
        drift,
        drift_factor: config.drift_factor,
        drift_baseline_days: config.drift_baseline_days,
    })
}

/// Cards per rule and mode per day in `[from, to)`, with the service's calls that day.
async fn daily(db: &Db, from: i64, to: i64) -> Result<Vec<DailyFiring>, StoreError> {
    let mut calls: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for row in db
        .rows(
            DAILY_CALLS_SQL,
            from,
            to,
            &[("service_id", Text), ("day", Int), ("n", Int)],
        )
        .await?
    {
        let service = row.first().map(Value::text).unwrap_or_default();
        calls.insert((service, int(&row, 1)), int(&row, 2));
    }
    let columns = [
        ("service_id", Text),
        ("rule_id", Text),
        ("mode", Text),
        ("day", Int),
        ("n", Int),
    ];
    Ok(db
        .rows(DAILY_CARDS_SQL, from, to, &columns)
        .await?
        .into_iter()
        .map(|row| {
            let text = |i: usize| row.get(i).map(Value::text).unwrap_or_default();
            let day = int(&row, 3);
            DailyFiring {
                day: day_of(day * DAY_MS),
                calls: calls.get(&(text(0), day)).copied().unwrap_or(0),
                service_id: text(0),
                rule_id: text(1),
                mode: text(2),
                cards: int(&row, 4),
            }
        })
        .collect())
}

/// Each active rule's firing rate on the day of `at` against the `drift_baseline_days` before it.
pub async fn drift(
    db: &Db,
    at: DateTime<Utc>,
    config: &StoreConfig,
) -> Result<Vec<Drift>, StoreError> {
    let today = at.timestamp_millis().div_euclid(DAY_MS);
    let first = today - i64::from(config.drift_baseline_days);
    let days = daily(db, first * DAY_MS, (today + 1) * DAY_MS).await?;
    // Calls per service per day, from every rule's rows and from the calls themselves.
    let mut service_calls: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for row in db
        .rows(
            DAILY_CALLS_SQL,
            first * DAY_MS,
            (today + 1) * DAY_MS,
            &[("service_id", Text), ("day", Int), ("n", Int)],
        )
        .await?
    {
        let service = row.first().map(Value::text).unwrap_or_default();
        service_calls.insert((service, int(&row, 1)), int(&row, 2));
    }
    let today_name = day_of(today * DAY_MS);
    // (service, rule) → (today's cards, baseline cards)
    let mut cards: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for d in days.iter().filter(|d| d.mode == "active") {
        let slot = cards
            .entry((d.service_id.clone(), d.rule_id.clone()))
            .or_default();
        if d.day == today_name {
            slot.0 += d.cards;
        } else {
            slot.1 += d.cards;
        }
    }
    let mut out = Vec::new();
    for ((service, rule), (today_cards, baseline_cards)) in cards {
        let today_calls = service_calls
            .get(&(service.clone(), today))
            .copied()
            .unwrap_or(0);
        let baseline_calls: i64 = service_calls
            .iter()
            .filter(|((s, day), _)| *s == service && *day < today)
            .map(|(_, n)| n)
            .sum();
        if today_calls == 0 {
            // Nothing to judge today by.
            continue;
        }
        let today_rate = today_cards as f64 / today_calls as f64;
        let baseline_rate = ratio(baseline_cards, baseline_calls).unwrap_or(0.0);
        let ratio = (baseline_rate > 0.0).then(|| today_rate / baseline_rate);
        let factor = config.drift_factor;
        let direction = match ratio {
            None if today_cards > 0 && baseline_calls > 0 => "new",
            None => "steady",
            Some(0.0) => "stopped",
            Some(r) if r > factor => "up",
            Some(r) if r < 1.0 / factor => "down",
            Some(_) => "steady",
        };
        out.push(Drift {
            service_id: service,
            rule_id: rule,
            today_rate,
            today_calls,
            baseline_rate,
            baseline_calls,
            ratio,
            flagged: direction != "steady",
            direction,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_days_dates_and_times() {
        let w = Window::parse_since("7d").unwrap();
        assert_eq!((w.until - w.since).num_days(), 7);
        let w = Window::parse_since("2026-01-02").unwrap();
        assert_eq!(w.since.to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert!(Window::parse_since("2026-01-02T03:04:05Z").is_some());
        assert!(Window::parse_since("yesterday").is_none());
        assert!(Window::parse_since("-3d").is_none());
    }

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(day_of(0), "1970-01-01");
        assert_eq!(day_of(DAY_MS * 2 + 5), "1970-01-03");
    }
}
