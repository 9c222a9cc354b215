//! The comparator: an [`Expectation`] against what a call actually returned, in-process (with every
//! rule's outcome) or over HTTP (status and body only). It returns every difference at once, each
//! one printable for an informaticist.

use std::fmt;

use serde_json::Value;

use crate::cds_hooks::{Card, Diagnostic, HookResponse};
use crate::engine::{RuleOutcome, Verdict};
use crate::explain::fact_line;

use super::case::{Aliases, Expectation, ExpectedCard, ExpectedFact, ExpectedWhyNot};

/// What a call returned.
#[derive(Debug, Clone)]
pub struct Actual {
    /// The HTTP status (in-process: the status the server would answer).
    pub status: u16,
    /// The response, for a 200.
    pub response: Option<HookResponse>,
    /// Every rule's outcome; only known in-process. Without it `why_not` is not checked.
    pub outcomes: Option<Vec<RuleOutcome>>,
    /// Why the call was refused, or why the body could not be read.
    pub message: Option<String>,
}

impl Actual {
    /// An HTTP answer: a 200 body is read as a CDS Hooks response, any other as an
    /// OperationOutcome whose first diagnostics message is kept.
    pub fn from_http(status: u16, body: &Value) -> Self {
        if status == 200 {
            match serde_json::from_value::<HookResponse>(body.clone()) {
                Ok(response) => Self {
                    status,
                    response: Some(response),
                    outcomes: None,
                    message: None,
                },
                Err(e) => Self {
                    status,
                    response: None,
                    outcomes: None,
                    message: Some(format!("the body is not a CDS Hooks response: {e}")),
                },
            }
        } else {
            Self {
                status,
                response: None,
                outcomes: None,
                message: body
                    .pointer("/issue/0/diagnostics")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }
        }
    }
}

/// A card as the diff shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardLine {
    pub summary: String,
    pub indicator: String,
    /// The rule that returned it (actual cards).
    pub rule: Option<String>,
    /// The summary as written in the test, when the alias table mapped it (expected cards).
    pub written_as: Option<String>,
    /// Whether it was paired with a card on the other side.
    pub matched: bool,
}

impl fmt::Display for CardLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] \"{}\"", self.indicator, self.summary)?;
        if let Some(written) = &self.written_as {
            write!(f, " (alias of \"{written}\")")?;
        }
        if let Some(rule) = &self.rule {
            write!(f, " (rule {rule})")?;
        }
        Ok(())
    }
}

/// One difference between the expectation and the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    Status {
        expected: u16,
        actual: u16,
        message: Option<String>,
    },
    /// A 200 whose body could not be read.
    Unreadable(String),
    /// The cards differ: count, or an expected card without a distinct matching actual card.
    Cards {
        expected: Vec<CardLine>,
        actual: Vec<CardLine>,
        /// Extra checks (source label, detail text) of expected cards whose summary and indicator
        /// did match a card but the rest did not.
        notes: Vec<String>,
    },
    MissingFact {
        fact: ExpectedFact,
        /// Facts with the same name that were present (`rule: name: value`).
        same_name: Vec<String>,
        /// Names of every fact present, when none had the name.
        available: Vec<String>,
    },
    /// `why_not` names a rule the service does not have.
    UnknownRule { rule: String, known: Vec<String> },
    /// `why_not` expected the rule not to fire.
    RuleFired {
        rule: String,
        conditions: Vec<String>,
    },
    /// `why_not` expected the rule to be stopped by a condition, but it failed with an error.
    RuleFailed { rule: String, error: String },
    /// The rule did not fire, but not because of the expected condition.
    WrongCondition {
        expected: ExpectedWhyNot,
        actual: Option<String>,
    },
    /// The condition stopped the rule, but was false where `why_not` expected it undecided, or
    /// undecided (for other absent elements) where it expected false.
    WrongUnknown {
        rule: String,
        condition: String,
        expected: Vec<String>,
        actual: Vec<String>,
    },
    /// The stopping condition compared other values than `why_not` expected.
    WrongCompared {
        rule: String,
        condition: String,
        expected: String,
        actual: Option<String>,
    },
    /// A fact `why_not` expected the stopped rule to have recorded.
    MissingRuleFact {
        rule: String,
        fact: ExpectedFact,
        recorded: Vec<String>,
    },
    RuleErrors {
        expected: usize,
        actual: Vec<Diagnostic>,
    },
}

fn indent_lines(lines: &[String], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for line in lines {
        writeln!(f)?;
        write!(f, "      {line}")?;
    }
    Ok(())
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status {
                expected,
                actual,
                message,
            } => {
                write!(f, "status: expected {expected}, got {actual}")?;
                if let Some(m) = message {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            Self::Unreadable(message) => write!(f, "response: {message}"),
            Self::Cards {
                expected,
                actual,
                notes,
            } => {
                write!(
                    f,
                    "cards: expected {}, got {}",
                    expected.len(),
                    actual.len()
                )?;
                for card in expected {
                    let mark = if card.matched { "ok      " } else { "MISSING " };
                    write!(f, "\n    expected  {mark} {card}")?;
                }
                for card in actual {
                    let mark = if card.matched { "ok      " } else { "EXTRA   " };
                    write!(f, "\n    actual    {mark} {card}")?;
                }
                if expected.is_empty() && actual.is_empty() {
                    write!(f, "\n    (none on either side)")?;
                }
                for note in notes {
                    write!(f, "\n    note: {note}")?;
                }
                Ok(())
            }
            Self::MissingFact {
                fact,
                same_name,
                available,
            } => {
                write!(f, "fact missing: \"{}\"", fact.name)?;
                if let Some(v) = &fact.value {
                    write!(f, " = \"{v}\"")?;
                }
                if let Some(r) = &fact.rule {
                    write!(f, " from rule {r}")?;
                }
                if !same_name.is_empty() {
                    write!(f, "\n    found instead:")?;
                    indent_lines(same_name, f)?;
                } else if available.is_empty() {
                    write!(f, "\n    no card carries any fact")?;
                } else {
                    write!(f, "\n    facts on the cards: {}", available.join(", "))?;
                }
                Ok(())
            }
            Self::UnknownRule { rule, known } => write!(
                f,
                "why_not: the service has no rule `{rule}` (rules: {})",
                known.join(", ")
            ),
            Self::RuleFired { rule, conditions } => {
                write!(f, "why_not: rule {rule} fired; it was expected not to")?;
                if !conditions.is_empty() {
                    write!(f, "\n    its conditions were all met:")?;
                    indent_lines(conditions, f)?;
                }
                Ok(())
            }
            Self::RuleFailed { rule, error } => write!(
                f,
                "why_not: rule {rule} failed instead of stopping on a condition: {error}"
            ),
            Self::MissingRuleFact {
                rule,
                fact,
                recorded,
            } => {
                write!(
                    f,
                    "why_not: rule {rule} did not record the fact {}{}",
                    fact.name,
                    fact.value
                        .as_ref()
                        .map(|v| format!(" = {v}"))
                        .unwrap_or_default()
                )?;
                write!(f, "\n    recorded: {}", recorded.join("; "))
            }
            Self::WrongCompared {
                rule,
                condition,
                expected,
                actual,
            } => write!(
                f,
                "why_not: rule {rule} stopped on \"{condition}\", which compared {}, expected {expected}",
                actual
                    .as_deref()
                    .unwrap_or("no values (the rule does not pass them)")
            ),
            Self::WrongUnknown {
                rule,
                condition,
                expected,
                actual,
            } => {
                let state = |absent: &[String]| {
                    if absent.is_empty() {
                        "false (decided on the data)".to_owned()
                    } else {
                        format!("unknown (absent: {})", absent.join(", "))
                    }
                };
                write!(
                    f,
                    "why_not: rule {rule} stopped on \"{condition}\", expected {}, but it was {}",
                    state(expected),
                    state(actual)
                )
            }
            Self::WrongCondition { expected, actual } => {
                write!(
                    f,
                    "why_not: rule {} did not fire, but not because of \"{}\"",
                    expected.rule, expected.condition
                )?;
                match actual {
                    Some(c) => write!(f, "\n    the condition that was false: \"{c}\""),
                    None => write!(
                        f,
                        "\n    no condition was false: the rule finished without a card"
                    ),
                }
            }
            Self::RuleErrors { expected, actual } => {
                write!(f, "rule errors: expected {expected}, got {}", actual.len())?;
                for d in actual {
                    let file = d
                        .file
                        .as_deref()
                        .map(|f| format!("{f}:"))
                        .unwrap_or_default();
                    let at = match (d.line, d.column) {
                        (Some(l), Some(c)) => format!(" at {file}{l}:{c}"),
                        (Some(l), None) => format!(" at {file}{l}"),
                        _ => String::new(),
                    };
                    write!(
                        f,
                        "\n    rule {} ({}){at}: {}",
                        d.rule_id, d.kind, d.message
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// Compares `actual` with `expect`, expected summaries read through `aliases`. Empty = pass.
///
/// Status first: when it differs nothing else is compared. For a 200: the cards as a multiset (same
/// count, each expected card paired with a distinct actual card of the same summary and indicator,
/// plus source label and detail texts when given), each expected fact in some card's explanation,
/// the number of rule errors, and, when the outcomes are known, each `why_not`.
pub fn compare(expect: &Expectation, actual: &Actual, aliases: &Aliases) -> Vec<Mismatch> {
    if expect.status != actual.status {
        return vec![Mismatch::Status {
            expected: expect.status,
            actual: actual.status,
            message: actual.message.clone(),
        }];
    }
    if actual.status != 200 {
        return Vec::new();
    }
    let Some(response) = &actual.response else {
        return vec![Mismatch::Unreadable(
            actual
                .message
                .clone()
                .unwrap_or_else(|| "no response body".into()),
        )];
    };
    let mut mismatches = Vec::new();
    if let Some(cards) = &expect.cards
        && let Some(m) = compare_cards(cards, &response.cards, aliases)
    {
        mismatches.push(m);
    }
    for fact in &expect.facts {
        if let Some(m) = find_fact(fact, &response.cards) {
            mismatches.push(m);
        }
    }
    if let Some(outcomes) = &actual.outcomes {
        for why_not in &expect.why_not {
            if let Some(m) = check_why_not(why_not, outcomes) {
                mismatches.push(m);
            }
        }
    }
    let diagnostics = &response.extension.diagnostics;
    if diagnostics.len() != expect.rule_errors {
        mismatches.push(Mismatch::RuleErrors {
            expected: expect.rule_errors,
            actual: diagnostics.clone(),
        });
    }
    mismatches
}

fn same_card(expected: &ExpectedCard, card: &Card, aliases: &Aliases) -> bool {
    aliases.summary(&expected.summary) == card.summary && expected.indicator == card.indicator
}

/// Source label and detail texts; `None` when they hold (or are not asked for).
fn extra_checks(expected: &ExpectedCard, card: &Card) -> Option<String> {
    let mut problems = Vec::new();
    if let Some(label) = &expected.source_label
        && *label != card.source.label
    {
        problems.push(format!(
            "source label \"{}\", expected \"{label}\"",
            card.source.label
        ));
    }
    let detail = card.detail.as_deref().unwrap_or_default();
    for text in &expected.detail_contains {
        if !detail.contains(text.as_str()) {
            problems.push(format!("detail lacks \"{text}\""));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Pairs expected with actual cards (a bipartite matching, so a strict expectation is not starved by
/// a loose one taking its only candidate).
fn pair_cards(expected: &[ExpectedCard], cards: &[Card], aliases: &Aliases) -> Vec<Option<usize>> {
    let fits: Vec<Vec<usize>> = expected
        .iter()
        .map(|e| {
            cards
                .iter()
                .enumerate()
                .filter(|(_, card)| same_card(e, card, aliases) && extra_checks(e, card).is_none())
                .map(|(j, _)| j)
                .collect()
        })
        .collect();
    let mut owner: Vec<Option<usize>> = vec![None; cards.len()];
    fn augment(
        i: usize,
        fits: &[Vec<usize>],
        owner: &mut [Option<usize>],
        seen: &mut [bool],
    ) -> bool {
        for &j in fits.get(i).map_or(&[][..], Vec::as_slice) {
            match seen.get_mut(j) {
                Some(s) if !*s => *s = true,
                _ => continue,
            }
            let taken = owner.get(j).copied().flatten();
            if taken.is_none_or(|k| augment(k, fits, owner, seen)) {
                if let Some(o) = owner.get_mut(j) {
                    *o = Some(i);
                }
                return true;
            }
        }
        false
    }
    for i in 0..expected.len() {
        let mut seen = vec![false; cards.len()];
        augment(i, &fits, &mut owner, &mut seen);
    }
    let mut pairs = vec![None; expected.len()];
    for (j, o) in owner.iter().enumerate() {
        if let Some(pair) = o.and_then(|i| pairs.get_mut(i)) {
            *pair = Some(j);
        }
    }
    pairs
}

fn compare_cards(expected: &[ExpectedCard], cards: &[Card], aliases: &Aliases) -> Option<Mismatch> {
    let pairs = pair_cards(expected, cards, aliases);
    let all_paired = pairs.iter().all(Option::is_some);
    if all_paired && expected.len() == cards.len() {
        return None;
    }
    let taken: Vec<bool> = (0..cards.len()).map(|j| pairs.contains(&Some(j))).collect();
    let mut notes = Vec::new();
    let expected_lines = expected
        .iter()
        .zip(&pairs)
        .map(|(e, pair)| {
            let summary = aliases.summary(&e.summary);
            if pair.is_none() {
                // Same summary and indicator but the finer checks failed: say which.
                for card in cards.iter().filter(|c| same_card(e, c, aliases)) {
                    if let Some(problem) = extra_checks(e, card) {
                        notes.push(format!("card \"{}\": {problem}", card.summary));
                    }
                }
            }
            CardLine {
                summary: summary.to_owned(),
                indicator: e.indicator.as_str().to_owned(),
                rule: None,
                written_as: (summary != e.summary).then(|| e.summary.clone()),
                matched: pair.is_some(),
            }
        })
        .collect();
    let actual_lines = cards
        .iter()
        .zip(&taken)
        .map(|(c, &matched)| CardLine {
            summary: c.summary.clone(),
            indicator: c.indicator.as_str().to_owned(),
            rule: c.explanation().map(|e| e.rule_id.clone()),
            written_as: None,
            matched,
        })
        .collect();
    Some(Mismatch::Cards {
        expected: expected_lines,
        actual: actual_lines,
        notes,
    })
}

fn find_fact(expected: &ExpectedFact, cards: &[Card]) -> Option<Mismatch> {
    let present: Vec<(&str, &crate::cds_hooks::Fact)> = cards
        .iter()
        .filter_map(Card::explanation)
        .flat_map(|e| e.facts.iter().map(move |f| (e.rule_id.as_str(), f)))
        .collect();
    let found = present.iter().any(|(rule, fact)| {
        fact.name == expected.name
            && expected
                .value
                .as_ref()
                .is_none_or(|v| fact.value.as_ref() == Some(v))
            && expected.rule.as_deref().is_none_or(|r| r == *rule)
    });
    if found {
        return None;
    }
    let same_name = present
        .iter()
        .filter(|(_, f)| f.name == expected.name)
        .map(|(rule, f)| format!("rule {rule}: {}", fact_line(f)))
        .collect();
    let mut available: Vec<String> = present.iter().map(|(_, f)| f.name.clone()).collect();
    available.dedup();
    Some(Mismatch::MissingFact {
        fact: expected.clone(),
        same_name,
        available,
    })
}

fn check_why_not(expected: &ExpectedWhyNot, outcomes: &[RuleOutcome]) -> Option<Mismatch> {
    let Some(outcome) = outcomes.iter().find(|o| o.rule_id == expected.rule) else {
        return Some(Mismatch::UnknownRule {
            rule: expected.rule.clone(),
            known: outcomes.iter().map(|o| o.rule_id.clone()).collect(),
        });
    };
    match &outcome.verdict {
        Verdict::Fired => Some(Mismatch::RuleFired {
            rule: expected.rule.clone(),
            conditions: outcome.conditions.iter().map(|c| c.name.clone()).collect(),
        }),
        Verdict::Error(e) => Some(Mismatch::RuleFailed {
            rule: expected.rule.clone(),
            error: format!("{} error: {}", e.kind.as_str(), e.message),
        }),
        Verdict::NotFired => {
            let actual = outcome.failed_condition();
            if actual != Some(expected.condition.as_str()) {
                return Some(Mismatch::WrongCondition {
                    expected: expected.clone(),
                    actual: actual.map(str::to_owned),
                });
            }
            if let Some(want) = &expected.unknown {
                let got = outcome
                    .undecided()
                    .map(|c| c.unknown.clone())
                    .unwrap_or_default();
                let mut want_sorted = want.clone();
                want_sorted.sort();
                let mut got_sorted = got.clone();
                got_sorted.sort();
                if want_sorted != got_sorted {
                    return Some(Mismatch::WrongUnknown {
                        rule: expected.rule.clone(),
                        condition: expected.condition.clone(),
                        expected: want.clone(),
                        actual: got,
                    });
                }
            }
            if let Some(want) = &expected.compared {
                let got = outcome
                    .conditions
                    .iter()
                    .find(|c| !c.met)
                    .and_then(|c| c.compared.as_ref())
                    .map(ToString::to_string);
                if got.as_deref() != Some(want.as_str()) {
                    return Some(Mismatch::WrongCompared {
                        rule: expected.rule.clone(),
                        condition: expected.condition.clone(),
                        expected: want.clone(),
                        actual: got,
                    });
                }
            }
            let missing = expected.facts.iter().find(|want| {
                !outcome.facts.iter().any(|f| {
                    f.name == want.name
                        && want
                            .value
                            .as_ref()
                            .is_none_or(|v| f.value.as_ref() == Some(v))
                })
            })?;
            Some(Mismatch::MissingRuleFact {
                rule: expected.rule.clone(),
                fact: missing.clone(),
                recorded: outcome
                    .facts
                    .iter()
                    .map(|f| format!("{} = {}", f.name, f.value.as_deref().unwrap_or("")))
                    .collect(),
            })
        }
    }
}
