//! Two services answering the same hook with the same rule file: an EHR that enables every
//! discovered service shows the card twice.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::registry::Registry;

use super::{Finding, Severity};

/// Services that answer the same hook with the same rule file.
pub fn duplicate_rules(registry: &Registry) -> Vec<Finding> {
    let mut by_rule: BTreeMap<(String, PathBuf), Vec<String>> = BTreeMap::new();
    for service in registry.services() {
        for rule in &service.rules {
            let path = rule
                .path
                .canonicalize()
                .unwrap_or_else(|_| rule.path.clone());
            by_rule
                .entry((service.hook().to_owned(), path))
                .or_default()
                .push(service.id().to_owned());
        }
    }
    by_rule
        .into_iter()
        .filter(|(_, services)| services.len() > 1)
        .map(|((hook, path), services)| Finding {
            path,
            line: 1,
            column: 1,
            severity: Severity::Warning,
            check: "duplicate-service",
            message: format!(
                "services {} all answer {hook} with this rule: an EHR that enables every service shows its cards more than once",
                services.join(", ")
            ),
            hint: Some("keep one service per hook for a rule file".into()),
        })
        .collect()
}
