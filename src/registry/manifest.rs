//! `service.toml`: what a CDS service is, in the words of the informaticist who owns it.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

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

/// Per-rule settings, keyed by rule id (the file stem).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleOverride {
    pub version: Option<String>,
    #[serde(default)]
    pub disabled: bool,
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
    /// Data tables (name -> JSON file relative to this folder) rules read with `data("name")`,
    /// e.g. a conversion table the reader can audit.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

impl Manifest {
    /// Checks what serde cannot: id syntax, non-empty fields.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return Err(format!(
                "service id `{}` must be non-empty and use only letters, digits, `-`, `_` and `.`",
                self.id
            ));
        }
        if self.hook.trim().is_empty() {
            return Err("`hook` must not be empty".into());
        }
        if self.description.trim().is_empty() {
            return Err("`description` must not be empty".into());
        }
        if self.version.trim().is_empty() {
            return Err("`version` must not be empty".into());
        }
        Ok(())
    }
}
