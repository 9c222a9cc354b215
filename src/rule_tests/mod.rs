//! `cardinal test`: rule test cases next to the rules, run in-process and compared with what they
//! expect, in the spirit of `opa test`.
//!
//! - [`case`]: the test-case file format, `aliases.toml`, and finding `tests/` folders;
//! - [`compact`]: the compact format (context, resources by type, expectations) and its expansion
//!   into a request by the service's prefetch templates;
//! - [`scaffold`]: `cardinal test new`, a compact case from a patient record;
//! - [`compare`]: the comparator, shared with the HTTP integration tests;
//! - [`report`]: the readable output (one line per case, a diff and the "why not" for failures).
//!
//! The file format is documented in `docs/testing-rules.md`.

pub mod case;
pub mod compact;
pub mod compare;
pub mod report;
pub mod scaffold;

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use case::{
    ALIASES_FILE, Aliases, CaseError, Expectation, ExpectedCard, ExpectedFact, ExpectedWhyNot,
    TESTS_DIR, TestCase, TestSuite, discover,
};
pub use compact::{CompactCase, CompactError};
pub use compare::{Actual, CardLine, Mismatch, compare};

use crate::candidate::Disagreement;
use crate::cds_hooks::HookRequest;
use crate::engine::RuleMode;
use crate::evaluator::{CallOptions, Cardinal};
use crate::explain::ExplainReport;

/// One case's result.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub path: PathBuf,
    pub service: String,
    pub description: Option<String>,
    /// The evaluation time as the case wrote it (`None`: the real time).
    pub evaluation_time: Option<String>,
    pub mismatches: Vec<Mismatch>,
    /// Every rule's verdict, when the call was evaluated (not refused).
    pub explain: Option<ExplainReport>,
    pub duration: Duration,
}

impl CaseResult {
    /// Whether the rules in use did what the case expects (candidates may differ: that is what
    /// they are for).
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }

    /// Where a candidate disagreed with the rule in use on this case.
    pub fn disagreements(&self) -> &[Disagreement] {
        self.explain
            .as_ref()
            .map_or(&[], |report| report.disagreements.as_slice())
    }
}

/// Evaluates a case's request in-process, as the HTTP endpoint would: a refusal becomes the status
/// the server answers with.
pub fn evaluate_case(cardinal: &Cardinal, case: &TestCase) -> (Actual, Option<ExplainReport>) {
    let refused = |status: u16, message: String| Actual {
        status,
        response: None,
        outcomes: None,
        message: Some(message),
    };
    let request = match &case.compact {
        None => case.request.clone(),
        // A compact case is expanded by its service's templates; no service, no request.
        Some(compact) => match cardinal.service(&case.service) {
            Ok(service) => match compact.expand(&service) {
                Ok(request) => request,
                Err(e) => return (refused(400, format!("compact case: {e}")), None),
            },
            Err(e) => return (refused(e.http_status(), e.to_string()), None),
        },
    };
    let request = match HookRequest::from_value(request) {
        Ok(r) => r,
        Err(e) => return (refused(400, e.to_string()), None),
    };
    let options = CallOptions {
        evaluation_time: case.evaluation_time(),
        ..CallOptions::default()
    };
    match cardinal.evaluate(&case.service, request, options) {
        Ok(evaluation) => {
            let report = ExplainReport::new(&evaluation);
            // Expectations are about the rules in use (and silent ones); candidates are compared
            // with them separately.
            let outcomes = evaluation
                .outcomes
                .into_iter()
                .filter(|o| o.mode != RuleMode::Candidate)
                .collect();
            let actual = Actual {
                status: 200,
                response: Some(evaluation.response),
                outcomes: Some(outcomes),
                message: None,
            };
            (actual, Some(report))
        }
        Err(e) => (refused(e.http_status(), e.to_string()), None),
    }
}

/// Runs one case and compares the result with its expectation.
pub fn run_case(cardinal: &Cardinal, case: &TestCase, aliases: &Aliases) -> CaseResult {
    let started = Instant::now();
    let (actual, explain) = evaluate_case(cardinal, case);
    let mismatches = compare(&case.expect, &actual, aliases);
    CaseResult {
        path: case.path.clone(),
        service: case.service.clone(),
        description: case.description.clone(),
        evaluation_time: case.evaluation_time.clone(),
        mismatches,
        explain,
        duration: started.elapsed(),
    }
}
