//! Why and why not: for every rule of a service, whether it fired, the facts it recorded, the
//! conditions it checked (each met or false) and, when it did not fire, the condition that stopped
//! it. `cardinal explain` prints this report, `POST /cds-services/{id}/explain` returns it as JSON
//! and `cardinal test` shows it under a failing case.
//!
//! The report can quote patient data (facts, rule output), so it is a tool for rule authors on test
//! data; the HTTP endpoint is off unless `explain_endpoint = true`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::candidate::Disagreement;
use crate::cds_hooks::{Card, Fact};
use crate::engine::{Compared, RuleMode, RuleOutcome, Verdict};
use crate::evaluator::Evaluation;
use crate::repeats::SuppressedCard;

/// How a rule ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleVerdict {
    Fired,
    NotFired,
    Error,
}

impl RuleVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::NotFired => "not fired",
            Self::Error => "error",
        }
    }
}

/// Why a rule could not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleErrorReport {
    /// `runtime`, `timeout`, `operations`, `size-limit`, `budget`, `terminology`.
    pub kind: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// A condition named with `require(name, ...)`, in the order the rule checked it. One not met is
/// false, or unknown when `unknown` lists the absent elements that left it undecided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConditionReport {
    pub name: String,
    pub met: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unknown: Vec<String>,
    /// The values the condition compared (`compare(...)` in the rule): patient data, for the
    /// author only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared: Option<Compared>,
}

impl ConditionReport {
    /// `met`, `FALSE` or `UNKNOWN`.
    pub fn state(&self) -> &'static str {
        if self.met {
            "met"
        } else if self.unknown.is_empty() {
            "FALSE"
        } else {
            "UNKNOWN"
        }
    }
}

/// One rule's run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleReport {
    pub rule_id: String,
    pub rule_version: String,
    /// `active`, `silent` (evaluated, cards not returned) or `candidate` (a new version of the rule
    /// with the same id, compared with it).
    #[serde(default, skip_serializing_if = "is_active")]
    pub mode: RuleMode,
    /// The rule file, relative to the rules directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub verdict: RuleVerdict,
    /// For a rule that did not fire: the first `require` condition that was false. `None` when the
    /// rule finished without a card although every condition it checked was met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_condition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RuleErrorReport>,
    pub conditions: Vec<ConditionReport>,
    pub facts: Vec<Fact>,
    /// Summaries of the cards this rule returned.
    pub cards: Vec<String>,
    /// What the rule printed with `print` / `debug`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prints: Vec<String>,
    pub duration_us: u64,
    pub operations: u64,
}

fn is_active(mode: &RuleMode) -> bool {
    mode.is_active()
}

/// Every rule of one evaluation, and the cards of the response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExplainReport {
    pub service_id: String,
    pub hook: String,
    /// The content version of the rule set that evaluated the call.
    #[serde(default)]
    pub rule_set: String,
    /// "Now" for the rules, RFC 3339.
    pub evaluated_at: String,
    pub duration_us: u64,
    pub rules: Vec<RuleReport>,
    /// The cards exactly as the hook call returns them.
    pub cards: Vec<Card>,
    /// Where a candidate and the rule in use disagreed on this call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disagreements: Vec<Disagreement>,
    /// Cards held back: the patient saw them within their rule's `suppress_repeat_hours`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed: Vec<SuppressedCard>,
    /// Prefetch keys the request sent that the service does not declare: its rules did not see
    /// them (CDS Hooks: a service uses only the prefetch it declared).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_prefetch: Vec<String>,
}

impl RuleReport {
    pub fn from_outcome(outcome: &RuleOutcome, file: Option<String>) -> Self {
        let (verdict, error) = match &outcome.verdict {
            Verdict::Fired => (RuleVerdict::Fired, None),
            Verdict::NotFired => (RuleVerdict::NotFired, None),
            Verdict::Error(e) => (
                RuleVerdict::Error,
                Some(RuleErrorReport {
                    kind: e.kind.as_str().to_owned(),
                    message: e.message.clone(),
                    line: e.line,
                    column: e.column,
                }),
            ),
        };
        Self {
            rule_id: outcome.rule_id.clone(),
            rule_version: outcome.rule_version.clone(),
            mode: outcome.mode,
            file,
            failed_condition: (verdict == RuleVerdict::NotFired)
                .then(|| outcome.failed_condition().map(str::to_owned))
                .flatten(),
            verdict,
            error,
            conditions: outcome
                .conditions
                .iter()
                .map(|c| ConditionReport {
                    name: c.name.clone(),
                    met: c.met,
                    unknown: c.unknown.clone(),
                    compared: c.compared.clone(),
                })
                .collect(),
            facts: outcome.facts.clone(),
            cards: outcome.cards.iter().map(|c| c.summary.clone()).collect(),
            prints: outcome.prints.clone(),
            duration_us: duration_us(outcome.duration),
            operations: outcome.operations,
        }
    }

    /// `NOT FIRED: condition "eGFR below 45" was false`, `FIRED, 1 card`,
    /// `ERROR (runtime) at pack/rule.rhai:3:7: ...`.
    pub fn verdict_line(&self) -> String {
        match self.verdict {
            RuleVerdict::Fired => {
                let n = self.cards.len();
                format!("FIRED, {}", plural(n, "card"))
            }
            RuleVerdict::NotFired => match &self.failed_condition {
                Some(condition) => match self.undecided_elements() {
                    Some(absent) => format!(
                        "NOT FIRED: condition \"{condition}\" could not be decided (absent: {})",
                        absent.join(", ")
                    ),
                    None => match self.stopping_comparison() {
                        Some(compared) => {
                            format!("NOT FIRED: condition \"{condition}\" was false ({compared})")
                        }
                        None => format!("NOT FIRED: condition \"{condition}\" was false"),
                    },
                },
                None => "NOT FIRED: finished without a card (every condition it checked was met)"
                    .to_owned(),
            },
            RuleVerdict::Error => match &self.error {
                Some(e) => format!(
                    "ERROR ({}){}: {}",
                    e.kind,
                    self.location(e)
                        .map(|l| format!(" at {l}"))
                        .unwrap_or_default(),
                    e.message
                ),
                None => "ERROR".to_owned(),
            },
        }
    }

    /// The values compared by the condition that stopped the rule, when the rule passed them.
    pub fn stopping_comparison(&self) -> Option<&Compared> {
        self.conditions.iter().find(|c| !c.met)?.compared.as_ref()
    }

    /// The absent elements of the condition that stopped the rule, when it was undecided.
    pub fn undecided_elements(&self) -> Option<&[String]> {
        let stop = self.conditions.iter().find(|c| !c.met)?;
        (!stop.unknown.is_empty()).then_some(stop.unknown.as_slice())
    }

    /// `file:line:column` (or `line:column`) of an error.
    fn location(&self, error: &RuleErrorReport) -> Option<String> {
        let line = error.line?;
        let position = match error.column {
            Some(column) => format!("{line}:{column}"),
            None => line.to_string(),
        };
        Some(match &self.file {
            Some(file) => format!("{file}:{position}"),
            None => position,
        })
    }
}

fn duration_us(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// One fact on one line: `eGFR: 24 mL/min on 2026-10-02 (below 30) [Observation/egfr-1]`.
pub fn fact_line(fact: &Fact) -> String {
    let mut line = fact.name.clone();
    if let Some(value) = &fact.value {
        line.push_str(": ");
        line.push_str(value);
        if let Some(unit) = &fact.unit {
            line.push(' ');
            line.push_str(unit);
        }
    }
    if let Some(date) = &fact.date {
        line.push_str(&format!(" on {date}"));
    }
    if let Some(note) = &fact.note {
        line.push_str(&format!(" ({note})"));
    }
    if let Some(reference) = &fact.reference {
        line.push_str(&format!(" [{reference}]"));
    }
    line
}

impl ExplainReport {
    /// The report of an evaluation, read against the rule set that made it.
    pub fn new(evaluation: &Evaluation) -> Self {
        let rule_set = &evaluation.rule_set;
        let service = rule_set.service(&evaluation.service_id);
        let file_of = |outcome: &RuleOutcome| {
            let service = service?;
            let rules = match outcome.mode {
                RuleMode::Candidate => &service.candidates,
                _ => &service.rules,
            };
            let rule = rules.iter().find(|r| r.id == outcome.rule_id)?;
            Some(rule_set.relative_path(&rule.path))
        };
        Self {
            service_id: evaluation.service_id.clone(),
            hook: service.map(|s| s.hook().to_owned()).unwrap_or_default(),
            rule_set: rule_set.version().to_owned(),
            evaluated_at: evaluation
                .evaluated_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            duration_us: duration_us(evaluation.duration),
            rules: evaluation
                .outcomes
                .iter()
                .map(|o| RuleReport::from_outcome(o, file_of(o)))
                .collect(),
            cards: evaluation.response.cards.clone(),
            disagreements: evaluation.disagreements.clone(),
            suppressed: evaluation.suppressed.clone(),
            ignored_prefetch: evaluation.ignored_prefetch.clone(),
        }
    }

    /// The rules that fired, did not fire and failed.
    pub fn counts(&self) -> (usize, usize, usize) {
        let count = |v| self.rules.iter().filter(|r| r.verdict == v).count();
        (
            count(RuleVerdict::Fired),
            count(RuleVerdict::NotFired),
            count(RuleVerdict::Error),
        )
    }

    /// One line per rule (its verdict), for the failure report of `cardinal test`.
    pub fn rule_lines(&self) -> Vec<String> {
        self.rules
            .iter()
            .map(|r| format!("rule {}: {}", r.rule_id, r.verdict_line()))
            .collect()
    }
}

fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

impl fmt::Display for ExplainReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fired, not_fired, errors) = self.counts();
        writeln!(
            f,
            "service {} ({}), rule set {}, evaluated at {}, {:.1} ms",
            self.service_id,
            self.hook,
            self.rule_set,
            self.evaluated_at,
            self.duration_us as f64 / 1000.0
        )?;
        writeln!(
            f,
            "{}: {fired} fired, {not_fired} not fired, {}; {}",
            plural(self.rules.len(), "rule"),
            plural(errors, "error"),
            plural(self.cards.len(), "card")
        )?;
        if !self.ignored_prefetch.is_empty() {
            let keys: Vec<String> = self
                .ignored_prefetch
                .iter()
                .map(|k| crate::cds_hooks::excerpt(k))
                .collect();
            writeln!(
                f,
                "prefetch ignored (not declared by the service, so not read): {}",
                keys.join(", ")
            )?;
        }
        for rule in &self.rules {
            writeln!(f)?;
            let file = rule
                .file
                .as_ref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default();
            let mode = match rule.mode {
                RuleMode::Active => String::new(),
                mode => format!(" [{}]", mode.as_str()),
            };
            writeln!(
                f,
                "rule {} {}{mode}{file}: {}",
                rule.rule_id,
                rule.rule_version,
                rule.verdict_line()
            )?;
            if !rule.conditions.is_empty() {
                writeln!(f, "  conditions:")?;
                for c in &rule.conditions {
                    let absent = if c.unknown.is_empty() {
                        String::new()
                    } else {
                        format!(" (absent: {})", c.unknown.join(", "))
                    };
                    let compared = c
                        .compared
                        .as_ref()
                        .map(|v| format!(": {v}"))
                        .unwrap_or_default();
                    writeln!(f, "    {:<5}  {}{compared}{absent}", c.state(), c.name)?;
                }
            }
            if !rule.facts.is_empty() {
                writeln!(f, "  facts:")?;
                for fact in &rule.facts {
                    writeln!(f, "    - {}", fact_line(fact))?;
                }
            }
            if !rule.prints.is_empty() {
                writeln!(f, "  printed:")?;
                for line in &rule.prints {
                    writeln!(f, "    {line}")?;
                }
            }
        }
        writeln!(f)?;
        if !self.suppressed.is_empty() {
            writeln!(f, "cards held back as repeats:")?;
            for s in &self.suppressed {
                writeln!(
                    f,
                    "  [{}] {}  (rule {}; shown {}, within {} h)",
                    s.indicator, s.summary, s.rule_id, s.last_shown, s.window_hours
                )?;
            }
            writeln!(f)?;
        }
        if !self.disagreements.is_empty() {
            writeln!(f, "candidates that disagree with the rule in use:")?;
            for d in &self.disagreements {
                writeln!(f, "  {}", d.line())?;
            }
            writeln!(f)?;
        }
        if self.cards.is_empty() {
            write!(f, "cards: none")?;
        } else {
            write!(f, "cards:")?;
            for card in &self.cards {
                let rule = card
                    .explanation()
                    .map(|e| format!("  (rule {})", e.rule_id))
                    .unwrap_or_default();
                write!(
                    f,
                    "\n  [{}] {}{rule}",
                    card.indicator.as_str(),
                    card.summary
                )?;
            }
        }
        Ok(())
    }
}
