//! The simulation's raw counts. Everything in the report is derived from these, and they add up
//! exactly: shards run on different machines merge into the figures of one run.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::input::InputError;
use super::record::Demographics;

/// A count over patients, in total and per demographic group (dimension → group → count).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub total: u64,
    pub groups: BTreeMap<String, BTreeMap<String, u64>>,
}

impl Counts {
    pub fn add_patient(&mut self, demographics: &Demographics) {
        self.total += 1;
        for (dimension, group) in demographics.groups() {
            *self
                .groups
                .entry(dimension.to_owned())
                .or_default()
                .entry(group.to_owned())
                .or_default() += 1;
        }
    }

    pub fn merge(&mut self, other: &Self) {
        self.total += other.total;
        for (dimension, groups) in &other.groups {
            let mine = self.groups.entry(dimension.clone()).or_default();
            for (group, n) in groups {
                *mine.entry(group.clone()).or_default() += n;
            }
        }
    }

    pub fn group(&self, dimension: &str, group: &str) -> u64 {
        self.groups
            .get(dimension)
            .and_then(|g| g.get(group))
            .copied()
            .unwrap_or(0)
    }
}

fn add_all(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (key, n) in from {
        *into.entry(key.clone()).or_default() += n;
    }
}

/// One rule (or one candidate version of a rule) across the population.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleTally {
    pub rule_id: String,
    pub version: String,
    /// `active`, `silent` or `candidate`.
    pub mode: String,
    /// Patients it ran for, and those for whom it fired at least once.
    pub evaluated: Counts,
    pub fired: Counts,
    /// Calls (a patient has one per draft order on order hooks).
    pub calls: u64,
    pub fired_calls: u64,
    /// Cards by indicator.
    pub cards: BTreeMap<String, u64>,
    /// Calls where the rule failed, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Calls where it did not fire, by the condition that stopped it.
    pub stopped_by: BTreeMap<String, u64>,
    /// Patients for whom it stopped on a condition it could not decide, by the absent element.
    pub unknown_elements: BTreeMap<String, u64>,
    /// Calls where a candidate disagreed with this rule (active rules only).
    pub disagreements: u64,
}

impl RuleTally {
    fn merge(&mut self, other: &Self) {
        self.evaluated.merge(&other.evaluated);
        self.fired.merge(&other.fired);
        self.calls += other.calls;
        self.fired_calls += other.fired_calls;
        add_all(&mut self.cards, &other.cards);
        add_all(&mut self.errors, &other.errors);
        add_all(&mut self.stopped_by, &other.stopped_by);
        add_all(&mut self.unknown_elements, &other.unknown_elements);
        self.disagreements += other.disagreements;
    }
}

/// One service across the population.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTally {
    pub hook: String,
    pub evaluated: Counts,
    pub fired: Counts,
    pub calls: u64,
    /// By rule id; candidates as `<rule id>@candidate`.
    pub rules: BTreeMap<String, RuleTally>,
}

/// A rule that failed for a patient: where, which service and rule, what kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EvaluationError {
    pub source: String,
    pub service: String,
    pub rule: String,
    pub kind: String,
}

/// Everything counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// The simulated day (RFC 3339).
    pub at: String,
    /// The rule-set version simulated.
    pub rule_set: String,
    /// Shards included (`1/1` for a whole run).
    pub shards: BTreeSet<String>,
    pub patients: Counts,
    pub calls: u64,
    pub services: BTreeMap<String, ServiceTally>,
    pub input_errors: Vec<InputError>,
    pub evaluation_errors: Vec<EvaluationError>,
    /// Prefetch search parameters the simulation could not emulate, with how often they were asked.
    pub unsupported_searches: BTreeMap<String, u64>,
}

/// Why two reports cannot be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("the reports simulate different days ({0} and {1})")]
    DifferentDay(String, String),
    #[error("the reports simulate different rule sets ({0} and {1})")]
    DifferentRuleSet(String, String),
    #[error("shard {0} is in more than one report")]
    SameShard(String),
}

impl Tally {
    /// Adds `other` (another shard of the same simulation).
    pub fn merge(&mut self, other: &Self) -> Result<(), MergeError> {
        if self.at.is_empty() {
            self.at = other.at.clone();
            self.rule_set = other.rule_set.clone();
        }
        if self.at != other.at {
            return Err(MergeError::DifferentDay(self.at.clone(), other.at.clone()));
        }
        if self.rule_set != other.rule_set {
            return Err(MergeError::DifferentRuleSet(
                self.rule_set.clone(),
                other.rule_set.clone(),
            ));
        }
        if let Some(shard) = self.shards.intersection(&other.shards).next() {
            return Err(MergeError::SameShard(shard.clone()));
        }
        self.shards.extend(other.shards.iter().cloned());
        self.absorb(other);
        Ok(())
    }

    /// Adds the counts of `other` (a worker's part of the same run).
    pub fn absorb(&mut self, other: &Self) {
        self.patients.merge(&other.patients);
        self.calls += other.calls;
        for (id, service) in &other.services {
            let mine = self.services.entry(id.clone()).or_default();
            mine.hook.clone_from(&service.hook);
            mine.evaluated.merge(&service.evaluated);
            mine.fired.merge(&service.fired);
            mine.calls += service.calls;
            for (key, rule) in &service.rules {
                let entry = mine.rules.entry(key.clone()).or_insert_with(|| RuleTally {
                    rule_id: rule.rule_id.clone(),
                    version: rule.version.clone(),
                    mode: rule.mode.clone(),
                    ..RuleTally::default()
                });
                entry.merge(rule);
            }
        }
        self.input_errors.extend(other.input_errors.iter().cloned());
        self.input_errors.sort();
        self.evaluation_errors
            .extend(other.evaluation_errors.iter().cloned());
        self.evaluation_errors.sort();
        add_all(&mut self.unsupported_searches, &other.unsupported_searches);
    }
}
