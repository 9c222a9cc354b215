//! FHIR R4 OperationOutcome: the body of every non-2xx HTTP answer.

use serde::Serialize;

/// FHIR `IssueType` codes Cardinal uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IssueType {
    Invalid,
    Structure,
    Required,
    NotFound,
    NotSupported,
    TooLong,
    Incomplete,
    Login,
    Exception,
    Timeout,
    Processing,
    /// Refused by load management (FHIR `throttled`).
    Throttled,
    /// The caller is known but may not do this (FHIR `forbidden`).
    Forbidden,
    /// A temporary failure on Cardinal's side, such as an audit trail it cannot write.
    Transient,
}

#[derive(Debug, Clone, Serialize)]
pub struct Issue {
    pub severity: &'static str,
    pub code: IssueType,
    pub diagnostics: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    pub resource_type: &'static str,
    pub issue: Vec<Issue>,
}

impl OperationOutcome {
    pub fn error(code: IssueType, diagnostics: impl Into<String>) -> Self {
        Self {
            resource_type: "OperationOutcome",
            issue: vec![Issue {
                severity: "error",
                code,
                diagnostics: diagnostics.into(),
            }],
        }
    }
}
