//! Candidate rule versions: a new version of a rule runs silently beside the one in use, and where
//! the two disagree on a call — one fired and the other did not, a different number of cards, a
//! different indicator or summary — the disagreement is counted and shown. This is how a rule that
//! silently stops firing after a code or value-set change is caught before it goes live.
//!
//! A disagreement quotes card summaries, which can carry patient data: it goes to the explain report
//! and `cardinal test`, never to logs or metrics (those get the service and rule id only).

use serde::{Deserialize, Serialize};

use crate::engine::{RuleOutcome, Verdict};

/// Where a candidate and the rule in use disagreed on one call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disagreement {
    pub rule_id: String,
    pub active_version: String,
    pub candidate_version: String,
    /// `fired`, `not-fired` or `error`.
    pub active_verdict: String,
    pub candidate_verdict: String,
    /// Each difference in words: `fired vs not fired`, `card 1 indicator: warning vs critical`, ...
    pub differences: Vec<String>,
}

fn verdict_words(outcome: &RuleOutcome) -> String {
    match &outcome.verdict {
        Verdict::Fired => format!(
            "fired ({} card{})",
            outcome.cards.len(),
            if outcome.cards.len() == 1 { "" } else { "s" }
        ),
        Verdict::NotFired => "did not fire".to_owned(),
        Verdict::Error(e) => format!("failed ({})", e.kind.as_str()),
    }
}

impl Disagreement {
    /// The differences between the rule in use and its candidate on the same call; `None` when they
    /// agree.
    pub fn between(active: &RuleOutcome, candidate: &RuleOutcome) -> Option<Self> {
        let mut differences = Vec::new();
        if active.verdict.as_str() != candidate.verdict.as_str() {
            differences.push(format!(
                "in use {}, candidate {}",
                verdict_words(active),
                verdict_words(candidate)
            ));
        } else if active.cards.len() != candidate.cards.len() {
            differences.push(format!(
                "in use returned {} card(s), candidate {}",
                active.cards.len(),
                candidate.cards.len()
            ));
        }
        for (n, (a, c)) in active.cards.iter().zip(&candidate.cards).enumerate() {
            if a.indicator != c.indicator {
                differences.push(format!(
                    "card {} indicator: {} in use, {} candidate",
                    n + 1,
                    a.indicator.as_str(),
                    c.indicator.as_str()
                ));
            }
            if a.summary != c.summary {
                differences.push(format!(
                    "card {} summary: \"{}\" in use, \"{}\" candidate",
                    n + 1,
                    a.summary,
                    c.summary
                ));
            }
        }
        (!differences.is_empty()).then(|| Self {
            rule_id: active.rule_id.clone(),
            active_version: active.rule_version.clone(),
            candidate_version: candidate.rule_version.clone(),
            active_verdict: active.verdict.as_str().to_owned(),
            candidate_verdict: candidate.verdict.as_str().to_owned(),
            differences,
        })
    }

    /// One line: `rule metformin-egfr 1.2.0 vs candidate 2.0.0: in use fired (1 card), candidate
    /// did not fire`.
    pub fn line(&self) -> String {
        format!(
            "rule {} {} vs candidate {}: {}",
            self.rule_id,
            self.active_version,
            self.candidate_version,
            self.differences.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Disagreement;
    use crate::cds_hooks::{Card, Indicator};
    use crate::engine::{RuleMode, RuleOutcome, Verdict};

    fn outcome(version: &str, cards: &[(&str, Indicator)]) -> RuleOutcome {
        RuleOutcome {
            rule_id: "r".into(),
            rule_version: version.into(),
            mode: RuleMode::Active,
            verdict: if cards.is_empty() {
                Verdict::NotFired
            } else {
                Verdict::Fired
            },
            cards: cards
                .iter()
                .map(|(summary, indicator)| {
                    serde_json::from_value::<Card>(serde_json::json!({
                        "summary": summary, "indicator": indicator, "source": {"label": "Cardinal"}
                    }))
                    .unwrap()
                })
                .collect(),
            facts: Vec::new(),
            conditions: Vec::new(),
            system_actions: Vec::new(),
            prints: Vec::new(),
            duration: Duration::ZERO,
            operations: 0,
        }
    }

    #[test]
    fn agreement_is_none_and_each_kind_of_difference_is_named() {
        let a = outcome("1", &[("Check eGFR", Indicator::Warning)]);
        assert_eq!(Disagreement::between(&a, &a.clone()), None);

        let silent = outcome("2", &[]);
        let d = Disagreement::between(&a, &silent).unwrap();
        assert_eq!(
            d.differences,
            ["in use fired (1 card), candidate did not fire"]
        );
        assert_eq!(
            (d.active_version.as_str(), d.candidate_version.as_str()),
            ("1", "2")
        );

        let louder = outcome("2", &[("Stop metformin", Indicator::Critical)]);
        let d = Disagreement::between(&a, &louder).unwrap();
        assert_eq!(d.differences.len(), 2, "{:?}", d.differences);
        assert!(
            d.line()
                .contains("card 1 indicator: warning in use, critical candidate")
        );
    }
}
