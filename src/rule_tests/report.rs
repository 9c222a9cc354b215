//! What `cardinal test` prints: a `PASS` / `FAIL` line per case; under a failure, every difference
//! and what each rule did (the condition that stopped a rule that did not fire); a closing
//! `N passed, M failed` line.

use std::fmt::Write;

use crate::explain::{RuleVerdict, fact_line};

use super::CaseResult;

/// `PASS rules/x/tests/case.json  service x at 2026-11-01  (0.4 ms)`.
pub fn case_line(result: &CaseResult) -> String {
    format!(
        "{} {}  service {} at {}  ({:.1} ms)",
        if result.passed() { "PASS" } else { "FAIL" },
        result.path.display(),
        result.service,
        result
            .evaluation_time
            .as_deref()
            .unwrap_or("the current time"),
        result.duration.as_secs_f64() * 1000.0
    )
}

/// The indented details under a `FAIL` line: the description, each difference, then each rule's
/// verdict with the conditions it checked and the facts it recorded.
pub fn failure_details(result: &CaseResult) -> String {
    let mut out = String::new();
    if let Some(description) = &result.description {
        let _ = writeln!(out, "  {description}");
    }
    for mismatch in &result.mismatches {
        let _ = writeln!(out, "  - {}", mismatch.to_string().replace('\n', "\n  "));
    }
    if let Some(report) = &result.explain {
        let _ = writeln!(out, "  what each rule did:");
        for rule in &report.rules {
            let _ = writeln!(out, "    rule {}: {}", rule.rule_id, rule.verdict_line());
            if rule.verdict != RuleVerdict::Fired && !rule.conditions.is_empty() {
                let conditions: Vec<String> = rule
                    .conditions
                    .iter()
                    .map(|c| match &c.compared {
                        Some(v) => format!("{} \"{}\" ({v})", c.state(), c.name),
                        None => format!("{} \"{}\"", c.state(), c.name),
                    })
                    .collect();
                let _ = writeln!(out, "      conditions: {}", conditions.join(", "));
            }
            for fact in &rule.facts {
                let _ = writeln!(out, "      fact: {}", fact_line(fact));
            }
        }
    }
    out
}

/// Under a case (passed or not): each candidate that disagreed with the rule in use on it.
pub fn candidate_details(result: &CaseResult) -> String {
    let mut out = String::new();
    for d in result.disagreements() {
        let _ = writeln!(out, "  CANDIDATE DIFFERS {}", d.line());
    }
    out
}

/// After the summary, when candidates disagreed: `candidates: 2 of 46 cases differ (rule
/// metformin-egfr candidate 2.0.0: 2)`.
pub fn candidate_summary(results: &[CaseResult]) -> Option<String> {
    let differing = results
        .iter()
        .filter(|r| !r.disagreements().is_empty())
        .count();
    if differing == 0 {
        return None;
    }
    let mut by_rule = std::collections::BTreeMap::<String, usize>::new();
    for d in results.iter().flat_map(|r| r.disagreements()) {
        *by_rule
            .entry(format!(
                "rule {} candidate {}",
                d.rule_id, d.candidate_version
            ))
            .or_default() += 1;
    }
    let rules: Vec<String> = by_rule.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    Some(format!(
        "candidates: {differing} of {} cases differ ({})",
        results.len(),
        rules.join(", ")
    ))
}

/// The closing line, exactly `N passed, M failed`.
pub fn summary_line(results: &[CaseResult]) -> String {
    let passed = results.iter().filter(|r| r.passed()).count();
    format!("{passed} passed, {} failed", results.len() - passed)
}
