//! The test-case file format, the alias table, and finding both below a rules directory.
//!
//! A test case is a JSON file in a `tests/` folder next to the rules:
//!
//! ```json
//! {
//!   "description": "free text",
//!   "service": "metformin-renal",
//!   "evaluation_time": "2026-11-01",
//!   "request": { "hook": "order-sign", "...": "a CDS Hooks 2.0 request" },
//!   "expect": {
//!     "status": 200,
//!     "cards": [ { "summary": "…", "indicator": "critical", "source_label": "…", "detail_contains": ["…"] } ],
//!     "facts": [ { "name": "eGFR", "value": "24", "rule": "metformin-egfr" } ],
//!     "why_not": [ { "rule": "metformin-egfr", "condition": "eGFR below 45" } ],
//!     "rule_errors": 0
//!   },
//!   "provenance": { "anything": "ignored by the runner" }
//! }
//! ```
//!
//! A file without `request` is a compact case ([`super::compact`]): `context` and `resources` by
//! type instead of the request, which is built from the service's prefetch templates when it runs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cds_hooks::Indicator;
use crate::evaluator::parse_evaluation_time;
use crate::registry::CdsService;

use super::compact::{CompactCase, CompactError};

/// Name of the folders holding test cases.
pub const TESTS_DIR: &str = "tests";
/// The alias table of a tests folder.
pub const ALIASES_FILE: &str = "aliases.toml";

/// A test file (or alias table) that cannot be read: `path:line:column: message`, like a rule
/// that cannot be compiled.
pub use crate::engine::CompileError as CaseError;

impl CaseError {
    fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

/// One test case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    /// Where the case was read from (not part of the file).
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(default)]
    pub description: Option<String>,
    /// The service to call.
    pub service: String,
    /// "Now" for the rules: RFC 3339 or `YYYY-MM-DD`. Without it the case runs at the real time.
    #[serde(default)]
    pub evaluation_time: Option<String>,
    /// The CDS Hooks request, as an EHR would send it (`null` for a compact case: see
    /// [`TestCase::request_for`]).
    #[serde(default)]
    pub request: Value,
    pub expect: Expectation,
    /// Where the case came from; free-form and ignored by the runner.
    #[serde(default)]
    pub provenance: Option<Value>,
    /// The case as written in the compact format, expanded against its service when run.
    #[serde(skip)]
    pub compact: Option<Box<CompactCase>>,
}

impl TestCase {
    /// The pinned evaluation time (checked when the case is read).
    pub fn evaluation_time(&self) -> Option<DateTime<Utc>> {
        self.evaluation_time
            .as_deref()
            .and_then(parse_evaluation_time)
    }

    /// Whether `--filter` selects the case: its path or its service id contains `filter`.
    pub fn matches(&self, filter: &str) -> bool {
        self.service.contains(filter) || self.path.to_string_lossy().contains(filter)
    }

    /// The request to send: the full case's, or the compact case expanded with `service`'s
    /// prefetch templates.
    pub fn request_for(&self, service: &CdsService) -> Result<Value, CompactError> {
        match &self.compact {
            Some(compact) => compact.expand(service),
            None => Ok(self.request.clone()),
        }
    }

    /// A case from a compact case (its request left to [`TestCase::request_for`]).
    pub fn from_compact(compact: CompactCase, path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            description: compact.description.clone(),
            service: compact.service.clone(),
            evaluation_time: compact.evaluation_time.clone(),
            request: Value::Null,
            expect: compact.expect.clone(),
            provenance: compact.provenance.clone(),
            compact: Some(Box::new(compact)),
        }
    }

    /// Reads and checks one case file: the full format (with `request`) or the compact one.
    pub fn read(path: &Path) -> Result<Self, CaseError> {
        let text = fs::read_to_string(path)
            .map_err(|e| CaseError::new(path, format!("cannot read file: {e}")))?;
        Self::parse(&text, path)
    }

    /// Reads and checks a case from its text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CaseError> {
        let located = |e: serde_json::Error| CaseError {
            path: path.to_path_buf(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_serde_position(&e.to_string()),
        };
        let value: Value = serde_json::from_str(text).map_err(located)?;
        let Some(object) = value.as_object() else {
            return Err(CaseError::new(path, "a test case must be a JSON object"));
        };
        let mut case = if object.contains_key("request") {
            serde_json::from_str::<TestCase>(text).map_err(located)?
        } else if object.contains_key("context") || object.contains_key("resources") {
            let compact: CompactCase = serde_json::from_str(text).map_err(located)?;
            compact
                .check()
                .map_err(|e| CaseError::new(path, e.to_string()))?;
            Self::from_compact(compact, path)
        } else {
            return Err(CaseError::new(
                path,
                "a test case needs `request` (a full CDS Hooks request) or `context` and `resources` (the compact format)",
            ));
        };
        case.path = path.to_path_buf();
        if case.service.trim().is_empty() {
            return Err(CaseError::new(path, "`service` must not be empty"));
        }
        if let Some(time) = &case.evaluation_time
            && parse_evaluation_time(time).is_none()
        {
            return Err(CaseError::new(
                path,
                "`evaluation_time` must be an RFC 3339 date-time or a date (YYYY-MM-DD)",
            ));
        }
        if !(100..=599).contains(&case.expect.status) {
            return Err(CaseError::new(
                path,
                "`expect.status` must be an HTTP status code",
            ));
        }
        Ok(case)
    }
}

fn ok() -> u16 {
    200
}

fn is_ok(status: &u16) -> bool {
    *status == 200
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// What the response must be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The HTTP status (default 200). A refusal (e.g. 412 for missing prefetch) is compared by it.
    #[serde(default = "ok", skip_serializing_if = "is_ok")]
    pub status: u16,
    /// The cards, in any order; `None` (key absent) means the cards are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cards: Option<Vec<ExpectedCard>>,
    /// Facts that must appear in the explanation of some card.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<ExpectedFact>,
    /// Rules that must not fire, and the condition that stops each (checked in-process only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why_not: Vec<ExpectedWhyNot>,
    /// Number of rules that may fail with an error (default 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rule_errors: usize,
}

impl Default for Expectation {
    fn default() -> Self {
        Self {
            status: ok(),
            cards: None,
            facts: Vec::new(),
            why_not: Vec::new(),
            rule_errors: 0,
        }
    }
}

/// An expected card: summary (through the alias table) and indicator, plus optional checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedCard {
    pub summary: String,
    pub indicator: Indicator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_label: Option<String>,
    /// Texts the card's `detail` must contain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detail_contains: Vec<String>,
}

/// A fact some card's explanation must carry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedFact {
    pub name: String,
    /// The value as shown in the explanation (`"180.0"`); absent = any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The rule whose card carries it; absent = any rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

/// A rule that must not fire, stopped by the named `require` condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedWhyNot {
    pub rule: String,
    pub condition: String,
    /// Whether the condition was undecided for absent data: `["MedicationRequest.category"]` says it
    /// could not be decided because those elements were absent; `[]` says it was decided (false).
    /// Absent: either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<Vec<String>>,
    /// The values the condition compared, as the explain report shows them
    /// (`"52 mL/min/{1.73_m2} < 45"`); absent: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compared: Option<String>,
    /// Facts the rule recorded before it stopped (e.g. the total it compared with a threshold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub facts: Vec<ExpectedFact>,
}

/// `aliases.toml`: legacy card summaries and the current summary each stands for.
///
/// ```toml
/// [summaries]
/// "Annual Urine Screening Check" = "Consider the Benefits and Risks of Conducting a Urine Toxicology Screen"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aliases {
    #[serde(default)]
    pub summaries: BTreeMap<String, String>,
}

impl Aliases {
    /// The summary to compare with: the current summary for a legacy one, else the same text.
    pub fn summary<'a>(&'a self, expected: &'a str) -> &'a str {
        self.summaries
            .get(expected)
            .map(String::as_str)
            .unwrap_or(expected)
    }

    pub fn read(path: &Path) -> Result<Self, CaseError> {
        let text = fs::read_to_string(path)
            .map_err(|e| CaseError::new(path, format!("cannot read file: {e}")))?;
        toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unzip();
            CaseError {
                path: path.to_path_buf(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })
    }
}

/// One `tests/` folder: its cases (sorted by path) and its alias table.
#[derive(Debug, Clone)]
pub struct TestSuite {
    pub dir: PathBuf,
    pub aliases: Aliases,
    pub cases: Vec<TestCase>,
}

/// Every `tests/` folder below `dir`, with its cases. Reports every unreadable file at once.
pub fn discover(dir: &Path) -> Result<Vec<TestSuite>, Vec<CaseError>> {
    let mut suites = Vec::new();
    let mut errors = Vec::new();
    if !dir.is_dir() {
        return Err(vec![CaseError::new(dir, "not a directory")]);
    }
    find_suites(dir, &mut suites, &mut errors);
    if errors.is_empty() {
        Ok(suites)
    } else {
        Err(errors)
    }
}

fn sorted_entries(dir: &Path, errors: &mut Vec<CaseError>) -> Vec<PathBuf> {
    match fs::read_dir(dir) {
        Ok(entries) => {
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            paths
        }
        Err(e) => {
            errors.push(CaseError::new(dir, format!("cannot read directory: {e}")));
            Vec::new()
        }
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn find_suites(dir: &Path, suites: &mut Vec<TestSuite>, errors: &mut Vec<CaseError>) {
    for path in sorted_entries(dir, errors) {
        if !path.is_dir() || is_hidden(&path) {
            continue;
        }
        if path.file_name().is_some_and(|n| n == TESTS_DIR) {
            if let Some(suite) = read_suite(&path, errors) {
                suites.push(suite);
            }
        } else {
            find_suites(&path, suites, errors);
        }
    }
}

fn read_suite(dir: &Path, errors: &mut Vec<CaseError>) -> Option<TestSuite> {
    let aliases_path = dir.join(ALIASES_FILE);
    let aliases = if aliases_path.is_file() {
        match Aliases::read(&aliases_path) {
            Ok(a) => a,
            Err(e) => {
                errors.push(e);
                Aliases::default()
            }
        }
    } else {
        Aliases::default()
    };
    let mut files = Vec::new();
    json_files(dir, &mut files, errors);
    let cases: Vec<TestCase> = files
        .iter()
        .filter_map(|path| TestCase::read(path).map_err(|e| errors.push(e)).ok())
        .collect();
    (!cases.is_empty()).then(|| TestSuite {
        dir: dir.to_path_buf(),
        aliases,
        cases,
    })
}

/// The `.json` files of a tests folder, its subfolders included.
fn json_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<CaseError>) {
    for path in sorted_entries(dir, errors) {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            json_files(&path, out, errors);
        } else if path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
}

use crate::registry::line_col;

/// serde_json appends ` at line 3 column 7`; the location travels in its own fields.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_map_legacy_summaries_and_leave_others() {
        let aliases: Aliases =
            toml::from_str("[summaries]\n\"old\" = \"new\"\n").unwrap_or_default();
        assert_eq!(aliases.summary("old"), "new");
        assert_eq!(aliases.summary("new"), "new");
        assert_eq!(aliases.summary("other"), "other");
    }

    #[test]
    fn expectation_defaults() {
        let e: Expectation = serde_json::from_str("{}").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e, Expectation::default());
        assert_eq!(e.status, 200);
        assert!(
            serde_json::from_str::<Expectation>(r#"{"card": []}"#)
                .is_err_and(|e| e.to_string().contains("unknown field `card`"))
        );
    }
}
