//! `service.toml`: what a CDS service is, in the words of the informaticist who owns it.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use crate::engine::RuleMode;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub label: String,
    pub url: Option<String>,
    pub icon: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceLink {
    pub label: String,
    pub url: String,
}

/// Whether a service's or rule's cards reach the EHR (`mode = "silent"`: evaluated and recorded,
/// never shown — how a new alert goes live).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    Active,
    Silent,
}

impl Mode {
    pub fn rule_mode(self) -> RuleMode {
        match self {
            Self::Active => RuleMode::Active,
            Self::Silent => RuleMode::Silent,
        }
    }
}

/// Per-rule settings, keyed by rule id (the file stem).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub version: Option<String>,
    #[serde(default)]
    pub disabled: bool,
    /// Overrides the service's `mode` for this rule.
    pub mode: Option<Mode>,
    /// Overrides the service's `suppress_repeat_hours` for this rule.
    pub suppress_repeat_hours: Option<u32>,
}

/// A candidate version of a rule: `candidates/<rule id>.rhai`, run silently beside the rule in use
/// and compared with it on every call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateSpec {
    /// Required: a candidate is only useful if its results can be told apart from the rule's.
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The service id: the last segment of `/cds-services/{id}`.
    pub id: String,
    pub hook: String,
    pub title: Option<String>,
    pub description: String,
    /// Version of the service; each rule inherits it unless `[rules.<id>]` says otherwise.
    pub version: String,
    /// `silent`: every rule is evaluated and recorded, but no card reaches the EHR.
    #[serde(default)]
    pub mode: Mode,
    /// The same card is not shown again to the same patient within this many hours.
    pub suppress_repeat_hours: Option<u32>,
    pub owner: Option<String>,
    pub usage_requirements: Option<String>,
    /// Prefetch key -> FHIR query template (with its place in the file, for error messages).
    #[serde(default)]
    pub prefetch: BTreeMap<String, Spanned<String>>,
    /// Prefetch keys the rules can do without: when neither sent nor fetched, the rules run anyway.
    #[serde(default)]
    pub optional_prefetch: Vec<Spanned<String>>,
    /// Library files (relative to this folder) whose functions and constants every rule may use.
    #[serde(default)]
    pub include: Vec<String>,
    /// Rule files (relative to this folder) to run instead of the folder's own `.rhai` files, so two
    /// services (e.g. the same logic on order-select and order-sign) can share one rule file.
    #[serde(default)]
    pub rule_files: Vec<String>,
    pub source: Option<SourceSpec>,
    #[serde(default)]
    pub evidence: Vec<EvidenceLink>,
    #[serde(default)]
    pub rules: BTreeMap<String, RuleOverride>,
    /// Candidate versions (`candidates/<rule id>.rhai`), by rule id.
    #[serde(default)]
    pub candidates: BTreeMap<String, CandidateSpec>,
    /// Data tables (name -> JSON file relative to this folder) rules read with `data("name")`,
    /// e.g. a conversion table the reader can audit.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

impl Manifest {
    /// Checks what serde cannot: id syntax, non-empty fields. The first problem.
    pub fn validate(&self) -> Result<(), String> {
        match self.problems().into_iter().next() {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Every problem serde cannot see: id syntax, non-empty fields.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let id_ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            problems.push(format!(
                "service id `{}` must be non-empty and use only letters, digits, `-`, `_` and `.`",
                self.id
            ));
        }
        for (field, value) in [
            ("hook", &self.hook),
            ("description", &self.description),
            ("version", &self.version),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("`{field}` must not be empty"));
            }
        }
        for (id, candidate) in &self.candidates {
            if candidate.version.trim().is_empty() {
                problems.push(format!("`[candidates.{id}] version` must not be empty"));
            }
        }
        problems
    }
}
