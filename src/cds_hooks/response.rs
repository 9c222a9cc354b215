//! The response to a hook call.

use serde::{Deserialize, Serialize};

use super::card::{Action, Card};

/// Why a rule produced no verdict (it was skipped; the other rules still ran).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostic {
    pub rule_id: String,
    /// `runtime`, `timeout`, `limit`, `invalid-card`, `terminology`, ...
    pub kind: String,
    pub message: String,
    /// The file `line` and `column` are in, relative to the rules directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// A rule that did not fire because a condition could not be decided: the data it needed was absent.
/// Names elements only, never values, so it carries no patient data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Undecided {
    pub rule_id: String,
    pub condition: String,
    /// The absent elements, e.g. `MedicationRequest.category`.
    pub absent: Vec<String>,
}

/// Cardinal's additions to a response, under reverse-domain keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseExtension {
    #[serde(
        rename = "org.cardinalcds.diagnostics",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub diagnostics: Vec<Diagnostic>,
    #[serde(
        rename = "org.cardinalcds.traceId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trace_id: Option<String>,
    /// The content version of the rule set that produced the response (also the
    /// `X-Cardinal-Rule-Set` header).
    #[serde(
        rename = "org.cardinalcds.ruleSet",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub rule_set: Option<String>,
    /// Rules that stopped on a condition they could not decide (not errors: nothing failed).
    #[serde(
        rename = "org.cardinalcds.undecided",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub undecided: Vec<Undecided>,
}

impl ResponseExtension {
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
            && self.trace_id.is_none()
            && self.rule_set.is_none()
            && self.undecided.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HookResponse {
    /// Always present, `[]` meaning "no advice".
    pub cards: Vec<Card>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_actions: Vec<Action>,
    #[serde(default, skip_serializing_if = "ResponseExtension::is_empty")]
    pub extension: ResponseExtension,
}
