//! Why a card was returned: the rule, its version, and the facts it relied on.

use serde::{Deserialize, Serialize};

/// One piece of patient data (or a derived value) a rule relied on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Fact {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The clinically relevant date of the fact (effective, authored, onset...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// FHIR reference (`Type/id`) of the resource the fact came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Free text the rule adds, e.g. the threshold it compared against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Where the data came from: `prefetch`, `fetched`, `draftOrders`, `context`, `terminology`, `rule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl Fact {
    /// One line for a clinician: `HbA1c: 9.4 % (2026-10-02) (threshold 9 %)`.
    pub fn to_markdown_line(&self) -> String {
        let mut line = format!("- {}", self.name);
        if let Some(value) = &self.value {
            line.push_str(": ");
            line.push_str(value);
            if let Some(unit) = &self.unit {
                line.push(' ');
                line.push_str(unit);
            }
        }
        if let Some(date) = &self.date {
            line.push_str(&format!(" on {date}"));
        }
        if let Some(note) = &self.note {
            line.push_str(&format!(" ({note})"));
        }
        line
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub service_id: String,
    pub rule_id: String,
    pub rule_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<Fact>,
    /// The evaluation time the rule saw ("now"), RFC 3339.
    pub evaluated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The content version of the rule set the rule belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<String>,
}
