//! `cardinal check` as a linter, and rule errors in the author's words: a first rule written from
//! docs/rules.md (hyperkalemia with an ACE inhibitor or ARB, `tests/fixtures/rules-hyperkalemia-
//! mistakes/`) has its typical mistakes found before any patient reaches them, and the one that
//! still fails at run time says what to do, in which file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::process::{Command, Output};

use common::{TestServer, project_path};
use serde_json::Value;

const MISTAKES: &str = "tests/fixtures/rules-hyperkalemia-mistakes";
const CLEAN: &str = "tests/fixtures/rules-hyperkalemia";
const MANIFEST_PROBLEMS: &str = "tests/fixtures/rules-manifest-problems";
const RULE: &str = "hyperkalemia/hyperkalemia.rhai";

fn cardinal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .expect("run cardinal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn json_report(dir: &str) -> (Value, Option<i32>) {
    let out = cardinal(&["check", dir, "--format", "json"]);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    (report, out.status.code())
}

/// The finding of `check` at `line:column` of the rule.
fn finding(report: &Value, line: u64, column: u64) -> &Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| {
            f["file"].as_str().unwrap().ends_with(RULE)
                && f["line"] == line
                && f["column"] == column
        })
        .unwrap_or_else(|| panic!("no finding at {line}:{column}: {report:#}"))
}

#[test]
fn every_mistake_of_a_first_rule_is_found_with_its_place_and_a_fix() {
    let out = cardinal(&["check", MISTAKES]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let expect = [
        // A misspelt helper: Rhai would only say so for a patient whose case reaches the line.
        (
            "hyperkalemia.rhai:19:24: error: function `latest_observaton` is not defined",
            "hint: did you mean `latest_observation`?",
        ),
        // A misspelt FHIR element: silently `()` at run time.
        (
            "hyperkalemia.rhai:20:29: error: `valeu` is not an element of Quantity (FHIR R4)",
            "hint: did you mean `value`?",
        ),
        // Blamed on the misspelling itself, not on the `.text` read after it.
        (
            "hyperkalemia.rhai:21:18: error: `medicationCodableConcept` is not an element of MedicationRequest (FHIR R4)",
            "hint: did you mean `medicationCodeableConcept`?",
        ),
        // A card literal the card validator refuses.
        (
            "hyperkalemia.rhai:24:16: error: invalid card: `indicator` must be info, warning or critical",
            "hint: did you mean `warning`?",
        ),
        // No `require` for a patient without a potassium result.
        (
            "hyperkalemia.rhai:18:41: warning: `k.value` is read without checking that `k` exists",
            "hint: guard it with require: `let k = require(\"a ... result on record\", patient.latest_observation(...));`",
        ),
    ];
    for (line, hint) in expect {
        let at = stderr
            .find(line)
            .unwrap_or_else(|| panic!("missing `{line}` in:\n{stderr}"));
        let next = stderr[at..].lines().nth(1).unwrap_or("");
        assert!(next.trim_start().starts_with(hint), "{line}\n{next}");
    }
    assert!(
        stderr.contains("4 error(s), 1 warning(s) in tests/fixtures/rules-hyperkalemia-mistakes"),
        "{stderr}"
    );
}

#[test]
fn the_json_report_parses_and_carries_each_finding() {
    let (report, code) = json_report(MISTAKES);
    assert_eq!(code, Some(1));
    assert_eq!(report["errors"], 4, "{report:#}");
    assert_eq!(report["warnings"], 1, "{report:#}");
    // The rule set itself loads: these are mistakes a load cannot see.
    assert_eq!(report["loads"], true);
    let unknown = finding(&report, 19, 24);
    assert_eq!(unknown["severity"], "error");
    assert_eq!(unknown["check"], "unknown-function");
    assert_eq!(unknown["hint"], "did you mean `latest_observation`?");
    assert_eq!(finding(&report, 20, 29)["check"], "unknown-element");
    assert_eq!(finding(&report, 24, 16)["check"], "card");
    let absent = finding(&report, 18, 41);
    assert_eq!(absent["severity"], "warning");
    assert_eq!(absent["check"], "absent-value");
}

#[test]
fn the_corrected_rule_and_the_shipped_rules_pass_without_a_finding() {
    for dir in [CLEAN, "rules"] {
        let (report, code) = json_report(dir);
        assert_eq!(code, Some(0), "{dir}: {report:#}");
        assert_eq!(report["errors"], 0, "{dir}: {report:#}");
        assert_eq!(report["warnings"], 0, "{dir}: {report:#}");
        assert!(report["services"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn warnings_alone_pass_unless_denied() {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("k");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"k\"\nhook = \"patient-view\"\ndescription = \"d\"\nversion = \"1\"\n",
    )
    .unwrap();
    // LOINC 2823-3: Potassium [Moles/volume] in Serum or Plasma.
    std::fs::write(
        service.join("k.rhai"),
        "let k = patient.latest_observation(\"2823-3\");\nif k.value > 5.5 { card(#{ summary: \"High potassium\", indicator: \"warning\" }); }\n",
    )
    .unwrap();
    let dir = dir.path().to_string_lossy().into_owned();
    let out = cardinal(&["check", &dir]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("k.rhai:2:6: warning: `k.value` is read without checking"),
        "{}",
        text(&out.stderr)
    );
    let out = cardinal(&["check", &dir, "--deny-warnings"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

#[test]
fn a_manifest_with_two_problems_reports_both() {
    let out = cardinal(&["check", MANIFEST_PROBLEMS]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // The misspelt key no longer hides the bad prefetch token further down.
    assert!(
        stderr.contains("hyperkalemia/service.toml:7:1: error: unknown field `titel`\n    hint: did you mean `title`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hyperkalemia/service.toml:11:35: error: prefetch `potassium`: token `{{context.patient}}`"),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");
}

/// An order-sign request for lisinopril (RxNorm 314076 "lisinopril 10 MG Oral Tablet", ingredient
/// 29046), from `tests/fixtures/hyperkalemia-requests/`, for the fixture services (not the shipped `hyperkalemia`).
fn request(name: &str) -> Value {
    let path = project_path(&format!("tests/fixtures/hyperkalemia-requests/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

async fn call(server: &TestServer, name: &str) -> Value {
    reqwest::Client::new()
        .post(server.url("/cds-services/hyperkalemia-acei-arb"))
        .json(&request(name))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_rule_error_over_http_names_the_file_and_says_how_to_fix_it() {
    let server = TestServer::start_with_rules(&project_path(MISTAKES)).await;

    // No potassium result: `k` is `()` and `k.value` fails.
    let response = call(&server, "lisinopril-no-potassium").await;
    let diagnostic = &response["extension"]["org.cardinalcds.diagnostics"][0];
    assert_eq!(diagnostic["file"], RULE, "{response:#}");
    assert_eq!(diagnostic["line"], 18, "{response:#}");
    let message = diagnostic["message"].as_str().unwrap();
    assert!(
        message.starts_with("`k` is absent (`()`): the patient has no such value, so `k.value` cannot be read; hint: guard it with require: `let k = require(\"...\", patient.latest_observation(...));`"),
        "{message}"
    );
    assert!(!message.contains("getter"), "{message}");

    // A high potassium reaches the misspelt helper.
    let response = call(&server, "lisinopril-high-potassium").await;
    let diagnostic = &response["extension"]["org.cardinalcds.diagnostics"][0];
    assert_eq!(diagnostic["file"], RULE, "{response:#}");
    assert_eq!(
        (diagnostic["line"].as_u64(), diagnostic["column"].as_u64()),
        (Some(19), Some(24)),
        "{response:#}"
    );
    assert_eq!(
        diagnostic["message"],
        "function `latest_observaton` is not defined; hint: did you mean `latest_observation`?"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_corrected_rule_fires_on_a_high_potassium() {
    let server = TestServer::start_with_rules(&project_path(CLEAN)).await;
    let response = call(&server, "lisinopril-high-potassium").await;
    assert_eq!(
        response["cards"][0]["summary"], "High potassium: reconsider the ACE inhibitor or ARB",
        "{response:#}"
    );
    let response = call(&server, "lisinopril-no-potassium").await;
    assert_eq!(response["cards"], Value::Array(Vec::new()), "{response:#}");
    assert!(
        response["extension"]["org.cardinalcds.diagnostics"].is_null(),
        "{response:#}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_error_in_a_library_function_names_the_library_file_and_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("hyperkalemia");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::create_dir_all(dir.path().join("lib")).unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"hyperkalemia-acei-arb\"\nhook = \"order-sign\"\ndescription = \"d\"\nversion = \"1\"\ninclude = [\"../lib/common.rhai\", \"../lib/potassium.rhai\"]\n\n[prefetch]\npatient = \"Patient/{{context.patientId}}\"\npotassium = \"Observation?patient={{context.patientId}}&code=http://loinc.org|2823-3\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("lib/common.rhai"),
        "// Shared helpers.\nfn mmol(x) { x }\n",
    )
    .unwrap();
    // LOINC 2823-3: Potassium [Moles/volume] in Serum or Plasma.
    std::fs::write(
        dir.path().join("lib/potassium.rhai"),
        "// Potassium helpers.\n\nfn is_high(result) {\n    result.value > 5.5\n}\n",
    )
    .unwrap();
    std::fs::write(
        service.join("rule.rhai"),
        "if is_high(patient.latest_observation(\"2823-3\")) {\n    card(#{ summary: \"High potassium\", indicator: \"warning\" });\n}\n",
    )
    .unwrap();
    let server = TestServer::start_with_rules(dir.path()).await;
    let response = call(&server, "lisinopril-no-potassium").await;
    let diagnostic = &response["extension"]["org.cardinalcds.diagnostics"][0];
    assert_eq!(diagnostic["file"], "lib/potassium.rhai", "{response:#}");
    assert_eq!(diagnostic["line"], 4, "{response:#}");
    let message = diagnostic["message"].as_str().unwrap();
    assert!(
        message.starts_with("in function `is_high`: `result` is absent (`()`)"),
        "{message}"
    );
    server.stop().await;
}
