//! Rule authoring tools as an informaticist uses them: `cardinal test` (passing, failing and broken
//! packs, `--filter`), `cardinal explain` (text and JSON), the HTTP explain endpoint (on and off),
//! the comparator on its own, the converted opioid cases, and the repository's own rules and tests.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::process::{Command, Output};

use cardinal::cds_hooks::HookRequest;
use cardinal::cds_hooks::context as hook_context;
use cardinal::config::Config;
use cardinal::rule_tests::{self, Actual, Aliases, Expectation, Mismatch, compare};
use common::{TestServer, project_path, request_fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PASSING: &str = "tests/fixtures/rule-tests/passing";
const FAILING: &str = "tests/fixtures/rule-tests/failing";
const BROKEN: &str = "tests/fixtures/rule-tests/broken";

fn cardinal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run cardinal")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn last_line(text: &str) -> &str {
    text.lines().last().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// cardinal test
// ---------------------------------------------------------------------------------------------

#[test]
fn test_passes_every_case_of_a_passing_pack() {
    let out = cardinal(&["test", PASSING]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert_eq!(last_line(&text), "6 passed, 0 failed", "{text}");
    let case_lines: Vec<&str> = text.lines().filter(|l| l.contains(".json")).collect();
    assert_eq!(case_lines.len(), 6, "{text}");
    for line in case_lines {
        assert!(line.starts_with("PASS "), "{line}");
        assert!(
            line.contains("service bp-check at 2026-11-01"),
            "service and time on every line: {line}"
        );
    }
    assert!(
        text.contains("PASS tests/fixtures/rule-tests/passing/bp-check/tests/legacy-summary.json"),
        "{text}"
    );
}

#[test]
fn test_fails_with_a_diff_and_the_condition_that_stopped_each_rule() {
    let out = cardinal(&["test", FAILING]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert_eq!(last_line(&text), "1 passed, 5 failed", "{text}");
    for expected in [
        "FAIL tests/fixtures/rule-tests/failing/bp-check/tests/expects-card-for-normal-bp.json  service bp-check at 2026-11-01",
        "PASS tests/fixtures/rule-tests/failing/bp-check/tests/passes.json",
        // the card diff
        "- cards: expected 1, got 0",
        "expected  MISSING  [warning] \"Blood pressure above target\"",
        // the why-not of every rule
        "rule high-bp: NOT FIRED: condition \"systolic at least 140\" was false",
        "conditions: met \"a systolic blood pressure on record\", met \"the reading has a value\", FALSE \"systolic at least 140\"",
        "fact: Systolic BP: 128 mmHg on 2026-04-02 [Observation/bp-1]",
        // status
        "- status: expected 200, got 412 (required FHIR data could not be obtained: prefetch observations not provided",
        // rule errors, located
        "- rule errors: expected 0, got 1",
        "rule name-check (runtime) at bp-check/name-check.rhai:4:20",
        "rule name-check: ERROR (runtime) at bp-check/name-check.rhai:4:20",
        // facts
        "- fact missing: \"Systolic BP\" = \"160\"",
        "rule high-bp: Systolic BP: 152 mmHg on 2026-10-20 [Observation/bp-2]",
        // why_not
        "- why_not: rule high-bp fired; it was expected not to",
        "- why_not: rule high-bp did not fire, but not because of \"a systolic blood pressure on record\"",
        "the condition that was false: \"systolic at least 140\"",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn filter_selects_cases_by_path_or_service() {
    let out = cardinal(&["test", FAILING, "--filter", "wrong-fact"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(last_line(&stdout(&out)), "0 passed, 1 failed");
    let out = cardinal(&["test", FAILING, "--filter", "passes"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(last_line(&stdout(&out)), "1 passed, 0 failed");
    let out = cardinal(&["test", PASSING, "--filter", "bp-check"]);
    assert_eq!(last_line(&stdout(&out)), "6 passed, 0 failed");
    let out = cardinal(&["test", PASSING, "--filter", "no-such-case"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).ends_with("0 passed, 0 failed\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn broken_rules_and_test_files_are_located_by_test_and_check() {
    let out = cardinal(&["test", BROKEN]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    for expected in [
        "tests/fixtures/rule-tests/broken/typo/typo.rhai:3:37: Expecting ',' to separate the arguments to function call 'require'",
        "tests/fixtures/rule-tests/broken/typo/tests/misspelt-key.json:4:20: unknown field `card`",
        "tests/fixtures/rule-tests/broken/typo/tests/not-json.json:4:29: key must be a string",
        "3 error(s) in tests/fixtures/rule-tests/broken",
    ] {
        assert!(err.contains(expected), "missing `{expected}` in:\n{err}");
    }
    assert!(
        !stdout(&out).contains("passed"),
        "no case runs: {}",
        stdout(&out)
    );

    let out = cardinal(&["check", BROKEN]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("tests/fixtures/rule-tests/broken/typo/typo.rhai:3:37: error: Expecting ','"),
        "{err}"
    );
}

#[test]
fn test_refuses_a_missing_directory() {
    let out = cardinal(&["test", "tests/fixtures/rule-tests/no-such-dir"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-dir"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// cardinal explain
// ---------------------------------------------------------------------------------------------

#[test]
fn explain_prints_every_rule_with_conditions_facts_and_cards() {
    let out = cardinal(&[
        "explain",
        "--request",
        "tests/fixtures/requests/metformin-egfr-low.json",
        "--service",
        "metformin-renal",
        "--at",
        "2026-11-01",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for expected in [
        "service metformin-renal (order-sign), rule set ",
        ", evaluated at 2026-11-01T00:00:00Z",
        "1 rule: 1 fired, 0 not fired, 0 errors; 1 card",
        "rule metformin-egfr 1.0.0 (metformin-renal/metformin-egfr.rhai): FIRED, 1 card",
        "met    eGFR below 45",
        "- eGFR: 24 mL/min/{1.73_m2} on 2026-10-02T09:30:00Z (below 30: contraindicated) [Observation/egfr-2026-10]",
        "[critical] Metformin is contraindicated: eGFR below 30  (rule metformin-egfr)",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn explain_reads_a_test_case_and_says_why_a_rule_did_not_fire() {
    // The case names the service and the evaluation time.
    let out = cardinal(&[
        "explain",
        "--request",
        "rules/metformin-renal/tests/egfr-62-no-card.json",
    ]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(text.contains("evaluated at 2026-11-25T00:00:00Z"), "{text}");
    assert!(
        text.contains("NOT FIRED: condition \"eGFR below 45\" was false"),
        "{text}"
    );
    assert!(text.contains("FALSE  eGFR below 45"), "{text}");
    assert!(text.contains("cards: none"), "{text}");
}

#[test]
fn explain_json_reports_verdicts_conditions_facts_and_errors() {
    let out = cardinal(&[
        "explain",
        "--rules",
        FAILING,
        "--request",
        "tests/fixtures/rule-tests/failing/bp-check/tests/rule-error.json",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("JSON report");
    assert_eq!(report["serviceId"], "bp-check");
    assert_eq!(report["hook"], "patient-view");
    assert_eq!(report["evaluatedAt"], "2026-11-01T00:00:00Z");
    assert_eq!(report["cards"], json!([]));
    let rules = report["rules"].as_array().expect("rules");
    let ids: Vec<&str> = rules.iter().filter_map(|r| r["ruleId"].as_str()).collect();
    assert_eq!(ids, ["high-bp", "name-check", "older-adult"]);

    let high_bp = &rules[0];
    assert_eq!(high_bp["verdict"], "not-fired");
    assert_eq!(high_bp["ruleVersion"], "1.2.0");
    assert_eq!(high_bp["file"], "bp-check/high-bp.rhai");
    assert_eq!(high_bp["failedCondition"], "systolic at least 140");
    assert_eq!(
        high_bp["conditions"],
        json!([
            {"name": "a systolic blood pressure on record", "met": true},
            {"name": "the reading has a value", "met": true},
            {"name": "systolic at least 140", "met": false},
        ])
    );
    assert_eq!(high_bp["facts"][0]["name"], "Systolic BP");
    assert_eq!(high_bp["facts"][0]["value"], "128");
    assert_eq!(high_bp["facts"][0]["reference"], "Observation/bp-1");

    let failed = &rules[1];
    assert_eq!(failed["verdict"], "error");
    assert!(failed.get("failedCondition").is_none(), "{failed:#}");
    assert_eq!(failed["error"]["kind"], "runtime");
    assert_eq!(failed["error"]["line"], 4);
    assert_eq!(failed["error"]["column"], 20);
}

#[test]
fn explain_usage_errors_and_refusals() {
    let out = cardinal(&[
        "explain",
        "--request",
        "tests/fixtures/requests/metformin-egfr-low.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--service is required"),
        "{}",
        stderr(&out)
    );

    let out = cardinal(&[
        "explain",
        "--request",
        "tests/fixtures/requests/metformin-egfr-low.json",
        "--service",
        "metformin-renal",
        "--at",
        "next tuesday",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--at"), "{}", stderr(&out));

    let out = cardinal(&[
        "explain",
        "--request",
        "rules/metformin-renal/tests/egfr-prefetch-missing.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused with HTTP 412: required FHIR data could not be obtained"),
        "{}",
        stderr(&out)
    );

    let out = cardinal(&[
        "explain",
        "--request",
        "tests/fixtures/requests/metformin-egfr-low.json",
        "--service",
        "no-such-service",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("refused with HTTP 404"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_explain_endpoint_setting_comes_from_the_environment() {
    assert!(!Config::default().explain_endpoint, "off by default");
    let out = Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", PASSING])
        .env("CARDINAL_EXPLAIN_ENDPOINT", "true")
        .output()
        .expect("run cardinal");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// POST /cds-services/{id}/explain
// ---------------------------------------------------------------------------------------------

async fn post(
    server: &TestServer,
    path: &str,
    body: &Value,
    time: Option<&str>,
) -> (StatusCode, String, Value) {
    let mut request = reqwest::Client::new().post(server.url(path)).json(body);
    if let Some(time) = time {
        request = request.header("x-cardinal-evaluation-time", time);
    }
    let response = request.send().await.expect("POST");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text}"));
    (status, content_type, body)
}

#[tokio::test]
async fn explain_endpoint_reports_every_rule_when_turned_on() {
    let server = TestServer::start().await;
    let request = request_fixture("metformin-egfr-low");
    let (status, _, report) = post(
        &server,
        "/cds-services/metformin-renal/explain",
        &request,
        Some("2026-11-01"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report:#}");
    assert_eq!(report["serviceId"], "metformin-renal");
    assert_eq!(report["hook"], "order-sign");
    assert_eq!(report["evaluatedAt"], "2026-11-01T00:00:00Z");
    let rule = &report["rules"][0];
    assert_eq!(rule["ruleId"], "metformin-egfr");
    assert_eq!(rule["verdict"], "fired");
    assert_eq!(
        rule["file"], "metformin-renal/metformin-egfr.rhai",
        "relative to the rules directory, no server paths: {rule:#}"
    );
    // The order, then the threshold (the eGFR's recency is checked before the first `require`).
    assert_eq!(rule["conditions"].as_array().map(Vec::len), Some(2));
    assert!(
        rule["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .all(|c| c["met"] == true)
    );
    assert_eq!(
        rule["cards"],
        json!(["Metformin is contraindicated: eGFR below 30"])
    );
    assert_eq!(
        report["cards"][0]["summary"],
        "Metformin is contraindicated: eGFR below 30"
    );
    assert_eq!(
        report["cards"][0]["extension"]["org.cardinalcds.explanation"]["ruleId"],
        "metformin-egfr"
    );

    // Not fired: the condition that was false.
    let mut normal = request.clone();
    normal["prefetch"]["egfr"]["entry"][0]["resource"]["valueQuantity"]["value"] = json!(61);
    let (status, _, report) = post(
        &server,
        "/cds-services/metformin-renal/explain",
        &normal,
        Some("2026-11-01"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["rules"][0]["verdict"], "not-fired");
    assert_eq!(report["rules"][0]["failedCondition"], "eGFR below 45");
    assert_eq!(report["cards"], json!([]));
    server.stop().await;
}

#[tokio::test]
async fn explain_endpoint_validates_like_a_hook_call() {
    let server = TestServer::start().await;
    let request = request_fixture("metformin-egfr-low");
    let (status, content_type, body) =
        post(&server, "/cds-services/no-such/explain", &request, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/fhir+json");
    assert_eq!(body["resourceType"], "OperationOutcome");

    let mut missing = request.clone();
    missing["prefetch"]
        .as_object_mut()
        .expect("prefetch")
        .remove("egfr");
    let (status, _, body) = post(
        &server,
        "/cds-services/metformin-renal/explain",
        &missing,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body:#}");

    let (status, _, body) = post(
        &server,
        "/cds-services/patient-greeting/explain",
        &request,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "hook mismatch: {body:#}");

    let (status, _, _) = post(
        &server,
        "/cds-services/metformin-renal/explain",
        &request,
        Some("yesterday"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let response = reqwest::Client::new()
        .get(server.url("/cds-services/metformin-renal/explain"))
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    server.stop().await;
}

#[tokio::test]
async fn explain_endpoint_is_off_by_default() {
    let server = TestServer::start_with(Config {
        rules_dir: project_path("rules"),
        ..Config::default()
    })
    .await;
    let request = request_fixture("metformin-egfr-low");
    let (status, content_type, body) = post(
        &server,
        "/cds-services/metformin-renal/explain",
        &request,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    assert_eq!(content_type, "application/fhir+json");
    assert_eq!(body["resourceType"], "OperationOutcome");
    let message = body["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(message.contains("explain_endpoint"), "{message}");
    // The hook call itself is unaffected.
    let (status, _, body) = post(&server, "/cds-services/metformin-renal", &request, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["cards"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The comparator, as the HTTP harness uses it
// ---------------------------------------------------------------------------------------------

fn expectation(value: Value) -> Expectation {
    serde_json::from_value(value).expect("expectation")
}

fn card(summary: &str, indicator: &str, rule: &str, facts: Value) -> Value {
    json!({
        "summary": summary, "indicator": indicator, "source": {"label": "S"},
        "detail": format!("About {summary}."),
        "extension": {"org.cardinalcds.explanation": {
            "serviceId": "s", "ruleId": rule, "ruleVersion": "1", "evaluatedAt": "2026-01-01T00:00:00Z",
            "facts": facts,
        }}
    })
}

#[test]
fn cards_are_compared_as_a_multiset_through_aliases() {
    let body = json!({"cards": [
        card("B", "warning", "r2", json!([{"name": "total MME", "value": "180.0"}])),
        card("A", "info", "r1", json!([])),
    ]});
    let actual = Actual::from_http(200, &body);
    let aliases = Aliases {
        summaries: [("legacy A".to_owned(), "A".to_owned())].into(),
    };
    // Any order, legacy wording through the alias table, optional fields.
    let expect = expectation(json!({
        "cards": [
            {"summary": "legacy A", "indicator": "info"},
            {"summary": "B", "indicator": "warning", "source_label": "S", "detail_contains": ["About B"]},
        ],
        "facts": [{"name": "total MME", "value": "180.0", "rule": "r2"}, {"name": "total MME"}],
    }));
    assert_eq!(compare(&expect, &actual, &aliases), vec![]);

    // Same count, but two expected cards cannot share one actual card.
    let expect = expectation(json!({"cards": [
        {"summary": "A", "indicator": "info"}, {"summary": "A", "indicator": "info"},
    ]}));
    let mismatches = compare(&expect, &actual, &aliases);
    assert_eq!(mismatches.len(), 1, "{mismatches:?}");
    let text = mismatches[0].to_string();
    assert!(text.contains("MISSING  [info] \"A\""), "{text}");
    assert!(
        text.contains("EXTRA    [warning] \"B\" (rule r2)"),
        "{text}"
    );

    // Indicator, fact value and rule are all compared.
    let expect = expectation(json!({
        "cards": [{"summary": "A", "indicator": "warning"}, {"summary": "B", "indicator": "warning"}],
        "facts": [{"name": "total MME", "value": "36.0"}, {"name": "total MME", "rule": "r1"}],
    }));
    let mismatches = compare(&expect, &actual, &aliases);
    assert_eq!(mismatches.len(), 3, "{mismatches:?}");
    assert!(matches!(mismatches[1], Mismatch::MissingFact { .. }));

    // A failed finer check is explained.
    let expect = expectation(json!({"cards": [
        {"summary": "A", "indicator": "info", "source_label": "Other"},
        {"summary": "B", "indicator": "warning"},
    ]}));
    let text = compare(&expect, &actual, &aliases)[0].to_string();
    assert!(
        text.contains("note: card \"A\": source label \"S\", expected \"Other\""),
        "{text}"
    );
}

#[test]
fn status_refusals_and_rule_errors_are_compared() {
    let refusal = json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "incomplete", "diagnostics": "prefetch x not provided"}]});
    let actual = Actual::from_http(412, &refusal);
    let none = Aliases::default();
    assert_eq!(
        compare(&expectation(json!({"status": 412})), &actual, &none),
        vec![]
    );
    let mismatches = compare(&expectation(json!({"cards": []})), &actual, &none);
    assert_eq!(
        mismatches[0].to_string(),
        "status: expected 200, got 412 (prefetch x not provided)"
    );

    let body = json!({"cards": [], "extension": {"org.cardinalcds.diagnostics": [
        {"ruleId": "r", "kind": "timeout", "message": "rule stopped", "line": 3, "column": 1}
    ]}});
    let actual = Actual::from_http(200, &body);
    let mismatches = compare(&expectation(json!({"cards": []})), &actual, &none);
    assert_eq!(mismatches.len(), 1);
    assert!(
        mismatches[0]
            .to_string()
            .contains("rule r (timeout) at 3:1: rule stopped")
    );
    assert_eq!(
        compare(
            &expectation(json!({"cards": [], "rule_errors": 1})),
            &actual,
            &none
        ),
        vec![]
    );
    // why_not needs the outcomes: over HTTP it is not checked.
    let expect = expectation(
        json!({"cards": [], "rule_errors": 1, "why_not": [{"rule": "r", "condition": "c"}]}),
    );
    assert_eq!(compare(&expect, &actual, &none), vec![]);

    let actual = Actual::from_http(200, &json!({"cards": "none"}));
    assert!(matches!(
        compare(&expectation(json!({})), &actual, &none)[0],
        Mismatch::Unreadable(_)
    ));
}

// ---------------------------------------------------------------------------------------------
// The repository's own rules and test cases
// ---------------------------------------------------------------------------------------------

#[test]
fn every_test_case_under_rules_is_a_valid_hook_request() {
    let suites =
        rule_tests::discover(&project_path("rules")).unwrap_or_else(|errors| panic!("{errors:#?}"));
    // Compact cases become requests through their services' prefetch templates.
    let cardinal = cardinal::evaluator::Cardinal::load(Config {
        rules_dir: project_path("rules"),
        ..Config::default()
    })
    .unwrap();
    let mut count = 0;
    for suite in &suites {
        for case in &suite.cases {
            let expect_400 = case.expect.status == 400;
            let service = cardinal.service(&case.service).unwrap();
            let request = case
                .request_for(&service)
                .unwrap_or_else(|e| panic!("{}: {e}", case.path.display()));
            let request = HookRequest::from_value(request);
            let request = match (request, expect_400) {
                (Ok(r), _) => r,
                (Err(_), true) => continue,
                (Err(e), false) => panic!("{}: {e}", case.path.display()),
            };
            hook_context::validate(&request.hook, &request.context)
                .unwrap_or_else(|e| panic!("{}: {e}", case.path.display()));
            assert!(case.evaluation_time().is_some(), "{}", case.path.display());
            count += 1;
        }
    }
    assert!(count >= 13 + 46, "{count} cases");
}

/// The converted CDC opioid cases (`tools/convert_opioid_cases.py`): 46 CDS Hooks 2.0 requests
/// keyed by the services' prefetch keys, the three MISMATCH cases asserting the specification.
#[test]
fn the_converted_opioid_cases_are_complete_and_keyed_by_service() {
    let suites = rule_tests::discover(&project_path("rules/opioid-cds"))
        .unwrap_or_else(|e| panic!("{e:#?}"));
    let suite = suites
        .iter()
        .find(|s| s.dir.ends_with("opioid-cds/tests"))
        .expect("opioid suite");
    // The guide's 46 cases; Cardinal's own cases of the pack are in `tests/cardinal/`.
    let guide_cases: Vec<_> = suite
        .cases
        .iter()
        .filter(|c| {
            c.path
                .parent()
                .is_some_and(|p| p.ends_with("opioid-cds/tests"))
        })
        .collect();
    assert_eq!(guide_cases.len(), 46);
    assert_eq!(suite.aliases.summaries.len(), 15);
    let mut mismatches = Vec::new();
    for case in guide_cases {
        let name = case
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        assert_eq!(
            case.evaluation_time.as_deref(),
            Some("2023-05-01"),
            "{name}"
        );
        let request = &case.request;
        assert!(request.get("fhirServer").is_none(), "{name}");
        let patient_id = request["context"]["patientId"].as_str().unwrap_or_default();
        assert!(
            !patient_id.is_empty() && !patient_id.contains('/'),
            "{name}"
        );
        let prefetch = request["prefetch"].as_object().expect("prefetch");
        if name == "noPrefetch" {
            assert!(prefetch.is_empty());
            assert_eq!(case.expect.status, 412);
            continue;
        }
        let hook = request["hook"].as_str().unwrap_or_default();
        let expected_hook = match case.service.as_str() {
            "opioidcds-10" | "opioidcds-11" => "order-select",
            s if s.ends_with("patient-view") => "patient-view",
            _ => "order-sign",
        };
        assert_eq!(hook, expected_hook, "{name}");
        for (key, value) in prefetch {
            if key == "patient" {
                assert!(
                    value.is_null() || value["resourceType"] == "Patient",
                    "{name}"
                );
            } else {
                assert_eq!(value["resourceType"], "Bundle", "{name}: {key}");
                assert_eq!(value["type"], "searchset", "{name}: {key}");
            }
        }
        let cards = case.expect.cards.as_ref().expect("cards");
        for card in cards {
            let summary = suite.aliases.summary(&card.summary);
            assert!(summary.chars().count() < 140, "{name}: {summary}");
        }
        let provenance = case.provenance.as_ref().expect("provenance");
        if provenance["verdict"] == "MISMATCH" {
            assert!(provenance["known_data_defect"].is_string(), "{name}");
            mismatches.push((name.to_owned(), cards.len()));
        }
    }
    mismatches.sort();
    assert_eq!(
        mismatches,
        [
            ("rec-06-out-extended-release-27-days".to_owned(), 1),
            ("rec-08-mme-greater-than-fifty".to_owned(), 0),
            ("rec-10-patient-view-illicit-drugs".to_owned(), 0),
        ]
    );
    for name in [
        "rec-04-05-mme-greater-than-fifty",
        "rec-08-order-sign-mme-greater-than-fifty",
        "rec-08-order-sign-multiple-doseRate",
    ] {
        let case = suite
            .cases
            .iter()
            .find(|c| c.path.file_stem().is_some_and(|s| s == name))
            .expect("case");
        let total = case
            .expect
            .facts
            .iter()
            .find(|f| f.name == "total MME")
            .unwrap_or_else(|| panic!("{name}: no total MME fact"));
        assert_eq!(total.value.as_deref(), Some("180.0"), "{name}");
    }
}

/// Every rule in `rules/` compiles and every test case next to them passes. (The opioid cases pass
/// once the opioid rule pack is in `rules/opioid-cds/`.)
#[test]
fn the_repository_rules_check_and_their_tests_pass() {
    let out = cardinal(&["check", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = cardinal(&["test", "rules"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    assert!(last_line(&text).ends_with(" passed, 0 failed"), "{text}");
}
