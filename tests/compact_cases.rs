//! Compact test cases as an informaticist writes them: every shipped case converts to the compact
//! format and expands back to the same context and prefetch resources (and the same verdicts);
//! `cardinal test new` writes a case from a Synthea patient that `cardinal test` passes; `cardinal
//! explain` shows the values a false condition compared; bad compact input is a clear error.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cardinal::config::Config;
use cardinal::engine::RuleMode;
use cardinal::evaluator::Cardinal;
use cardinal::rule_tests::compact::{self, CompactCase};
use cardinal::rule_tests::{self, Aliases, TestCase};
use serde_json::{Value, json};

const EDWARD: &str =
    "tests/fixtures/synthea/Edward_Gulgowski_43481611-2459-44f5-ab20-4b142dac160f.json.gz";
const METFORMIN_DRAFT: &str = "tests/fixtures/compact/metformin-draft.json";

fn cardinal_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run cardinal")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn shipped() -> Cardinal {
    Cardinal::load(Config {
        rules_dir: common::project_path("rules"),
        allow_evaluation_time_override: true,
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary rules directory holding one shipped service, without its test cases.
fn one_service(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rules");
    copy_dir(
        &common::project_path(&format!("rules/{name}")),
        &dir.join(name),
    );
    let tests = dir.join(name).join("tests");
    std::fs::remove_dir_all(&tests).unwrap();
    std::fs::create_dir_all(&tests).unwrap();
    (tmp, dir)
}

fn template(case: &TestCase) -> CompactCase {
    CompactCase {
        description: case.description.clone(),
        service: case.service.clone(),
        evaluation_time: case.evaluation_time.clone(),
        hook: None,
        hook_instance: None,
        fhir_server: None,
        fhir_authorization: None,
        context: Default::default(),
        resources: Default::default(),
        prefetch: Default::default(),
        not_sent: Vec::new(),
        expect: case.expect.clone(),
        provenance: case.provenance.clone(),
    }
}

/// What each rule did: verdict, stopping condition, compared values and card summaries.
fn verdicts(cardinal: &Cardinal, case: &TestCase) -> (u16, Vec<String>) {
    let (actual, _) = rule_tests::evaluate_case(cardinal, case);
    let mut lines: Vec<String> = actual
        .outcomes
        .iter()
        .flatten()
        .filter(|o| o.mode != RuleMode::Candidate)
        .map(|o| {
            let stop = o.conditions.iter().find(|c| !c.met);
            format!(
                "{} {} {:?} {:?} {:?}",
                o.rule_id,
                o.verdict.as_str(),
                stop.map(|c| &c.name),
                stop.map(|c| &c.compared),
                o.cards.iter().map(|c| &c.summary).collect::<Vec<_>>()
            )
        })
        .collect();
    lines.sort();
    (actual.status, lines)
}

#[test]
fn every_shipped_case_converts_to_compact_and_expands_to_the_same_request() {
    let cardinal = shipped();
    let rules = common::project_path("rules");
    let suites = rule_tests::discover(&rules).unwrap_or_else(|e| panic!("{e:?}"));
    let mut converted = 0;
    let mut written_compact = 0;
    let mut kept = 0;
    let (mut full_lines, mut compact_lines) = (0, 0);
    for suite in &suites {
        for case in &suite.cases {
            // A case written compact from the start has nothing to convert: it passes as written.
            if case.compact.is_some() {
                let result = rule_tests::run_case(&cardinal, case, &suite.aliases);
                assert!(
                    result.passed(),
                    "{}: {:?}",
                    case.path.display(),
                    result.mismatches
                );
                written_compact += 1;
                continue;
            }
            let service = cardinal.service(&case.service).unwrap();
            let out = compact::from_request(&case.request, &service, template(case))
                .unwrap_or_else(|e| panic!("{}: {e}", case.path.display()));
            // Keys are answered from `resources`, but for one documented reason: the upstream
            // rec-10 cases list two different Observations under one id, which a compact case
            // (each resource once, by type and id) cannot; those keys are kept as written.
            for note in &out.kept_as_written {
                assert!(
                    note.contains("two different resources with the same id"),
                    "{}: {note}",
                    case.path.display()
                );
                kept += 1;
            }
            for (key, value) in &out.case.prefetch {
                assert!(
                    value.is_null()
                        || out
                            .kept_as_written
                            .iter()
                            .any(|n| n.contains(&format!("`{key}`"))),
                    "{}: {key}",
                    case.path.display()
                );
            }
            // Through the file format: written, read back as a test case, expanded.
            let written = compact::to_pretty_json(&serde_json::to_value(&out.case).unwrap());
            let reread = TestCase::parse(&written, &case.path)
                .unwrap_or_else(|e| panic!("{}: {e}\n{written}", case.path.display()));
            let expanded = reread.request_for(&service).unwrap();
            assert_eq!(
                expanded["context"],
                case.request["context"],
                "{}",
                case.path.display()
            );
            assert_eq!(
                compact::prefetch_resources(&expanded),
                compact::prefetch_resources(&case.request),
                "{}",
                case.path.display()
            );
            assert_eq!(
                expanded.get("fhirServer"),
                case.request.get("fhirServer"),
                "{}",
                case.path.display()
            );
            assert_eq!(
                verdicts(&cardinal, &reread),
                verdicts(&cardinal, case),
                "{}",
                case.path.display()
            );
            // The compact case passes against its expectations as the full one does.
            let result = rule_tests::run_case(&cardinal, &reread, &suite.aliases);
            assert!(
                result.passed(),
                "{}: {:?}",
                case.path.display(),
                result.mismatches
            );
            full_lines += std::fs::read_to_string(&case.path).unwrap().lines().count();
            compact_lines += written.lines().count();
            converted += 1;
        }
    }
    assert!(converted >= 70, "{converted} cases");
    // The hyperkalemia service's cases were written compact.
    assert!(written_compact >= 7, "{written_compact} compact cases");
    assert_eq!(kept, 6, "keys kept as written");
    assert!(
        compact_lines * 10 < full_lines * 9,
        "compact {compact_lines} lines vs full {full_lines}"
    );
}

#[test]
fn expansion_follows_reads_searches_includes_overrides_and_not_sent_keys() {
    let cardinal = shipped();
    // opioidcds-04-05 declares patient (read) and searches, one with `_include=…:medication`.
    let service = cardinal.service("opioidcds-04-05").unwrap();
    let case: CompactCase = serde_json::from_value(json!({
        "service": "opioidcds-04-05",
        "context": {"userId": "Practitioner/1", "patientId": "p1", "draftOrders": []},
        "resources": {
            "Patient": [{"resourceType": "Patient", "id": "p1"}, {"resourceType": "Patient", "id": "other"}],
            "MedicationRequest": [
                {"resourceType": "MedicationRequest", "id": "mr1", "medicationReference": {"reference": "Medication/med1"}},
                {"resourceType": "MedicationRequest", "id": "mr2", "status": "entered-in-error"}
            ],
            "Medication": [{"resourceType": "Medication", "id": "med1"}, {"resourceType": "Medication", "id": "unused"}]
        },
        "prefetch": {"conditions": null},
        "not_sent": ["encounters"],
        "fhirServer": null,
        "expect": {}
    }))
    .unwrap();
    let request = case.expand(&service).unwrap();
    assert_eq!(request["hook"], "order-sign");
    assert_eq!(request["hookInstance"], compact::DEFAULT_HOOK_INSTANCE);
    assert!(request.get("fhirServer").is_none());
    assert_eq!(
        request["context"]["draftOrders"],
        json!({"resourceType": "Bundle", "type": "collection", "entry": []})
    );
    let prefetch = &request["prefetch"];
    assert_eq!(prefetch["patient"]["id"], "p1");
    assert_eq!(prefetch["conditions"], Value::Null);
    assert!(prefetch.get("encounters").is_none());
    let medications = &prefetch["medicationRequests"];
    assert_eq!(medications["type"], "searchset");
    assert_eq!(medications["total"], 2);
    let entries: Vec<(String, String)> = medications["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["id"].as_str().unwrap().to_owned(),
                e["search"]["mode"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Every MedicationRequest (no status filter: the rule must ignore the one in error), then the
    // Medication the first references.
    assert_eq!(
        entries,
        [
            ("mr1".to_owned(), "match".to_owned()),
            ("mr2".to_owned(), "match".to_owned()),
            ("med1".to_owned(), "include".to_owned())
        ]
    );
    // No Patient with the context's id: the read answers null.
    let mut other = case.clone();
    other.context.insert("patientId".into(), json!("p9"));
    assert_eq!(
        other.expand(&service).unwrap()["prefetch"]["patient"],
        Value::Null
    );
    // Deterministic.
    assert_eq!(case.expand(&service).unwrap(), request);
}

#[test]
fn bad_compact_cases_are_clear_errors() {
    let cardinal = shipped();
    let service = cardinal.service("metformin-renal").unwrap();
    let path = Path::new("case.json");
    let cases = [
        (
            json!({"service": "metformin-renal", "context": {}, "resources": {"Observation": [{"resourceType": "Patient", "id": "x"}]}, "expect": {}}),
            "`resources.Observation` item 0: its `resourceType` is not the key it is listed under",
        ),
        (
            json!({"service": "metformin-renal", "context": {}, "resources": {"Observation": [{"resourceType": "Observation"}]}, "expect": {}}),
            "`resources.Observation` item 0: no `id`",
        ),
        (
            json!({"service": "metformin-renal", "context": {}, "resources": {"Observation": ["x"]}, "expect": {}}),
            "not a JSON object",
        ),
        (
            json!({"service": "metformin-renal", "context": {"patientId": 7}, "expect": {}}),
            "`context.patientId` must be a string",
        ),
        (
            json!({"service": "metformin-renal", "context": {"draftOrders": "x"}, "expect": {}}),
            "`context.draftOrders` must be a FHIR Bundle or an array of resources",
        ),
        (
            json!({"service": "metformin-renal", "context": {}, "prefetch": {"egfr": null}, "not_sent": ["egfr"], "expect": {}}),
            "`prefetch` and `not_sent` both name `egfr`",
        ),
        (
            json!({"service": "metformin-renal", "context": {}, "resoures": {}, "expect": {}}),
            "unknown field `resoures`",
        ),
        (
            json!({"service": "metformin-renal", "expect": {}}),
            "needs `request` (a full CDS Hooks request) or `context` and `resources`",
        ),
    ];
    for (value, message) in cases {
        let err = TestCase::parse(&value.to_string(), path)
            .err()
            .unwrap_or_else(|| panic!("accepted: {value}"));
        assert!(err.to_string().contains(message), "{err} / {message}");
        assert!(err.to_string().starts_with("case.json"), "{err}");
    }
    // Errors that need the service: an undeclared key, a template without its context field.
    let expand = |value: Value| {
        let case = TestCase::parse(&value.to_string(), path).unwrap();
        case.request_for(&service).unwrap_err().to_string()
    };
    assert_eq!(
        expand(
            json!({"service": "metformin-renal", "context": {"patientId": "p"}, "prefetch": {"egrf": null}, "expect": {}})
        ),
        "`prefetch` names prefetch key `egrf`, which service metformin-renal does not declare (it declares: egfr, patient)"
    );
    assert!(
        expand(json!({"service": "metformin-renal", "context": {}, "expect": {}}))
            .contains("needs {{context.patientId}}")
    );
}

#[test]
fn cardinal_test_reports_an_unexpandable_compact_case_as_a_broken_file() {
    let (tmp, rules) = one_service("metformin-renal");
    std::fs::write(
        rules.join("metformin-renal/tests/typo.json"),
        json!({"service": "metformin-renal", "context": {"patientId": "p"}, "not_sent": ["egrf"], "expect": {}}).to_string(),
    )
    .unwrap();
    let out = cardinal_in(tmp.path(), &["test", "rules"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("typo.json: `not_sent` names prefetch key `egrf`"),
        "{}",
        text(&out)
    );
}

#[test]
fn test_new_writes_a_case_from_a_synthea_patient_that_cardinal_test_passes() {
    let (tmp, rules) = one_service("metformin-renal");
    let out_file = rules.join("metformin-renal/tests/edward.json");
    let out = cardinal_in(
        tmp.path(),
        &[
            "test",
            "new",
            "metformin-renal",
            "--from",
            common::project_path(EDWARD).to_str().unwrap(),
            "--draft",
            common::project_path(METFORMIN_DRAFT).to_str().unwrap(),
            "--at",
            "2019-02-01",
            "--rules",
            "rules",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written["evaluation_time"], "2019-02-01");
    assert_eq!(
        written["context"]["patientId"],
        "4ef9f896-10bc-4479-acd6-1153e7318f14"
    );
    // Only the types the templates ask for (Patient, Observation), and only the eGFRs up to the
    // pinned day: the Synthea record has 32 Observations and eGFRs of 2012, 2015 and 2018.
    let types: Vec<&str> = written["resources"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(types, ["Observation", "Patient"]);
    let egfr_ids: Vec<&str> = written["resources"]["Observation"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        egfr_ids,
        [
            "f61642bb-18ba-4adf-b8b2-f73d9b139c16",
            "47a743f2-1abf-40ce-9a22-aee7b261b9dd",
            "011a2fad-89d9-4a05-bafc-8323266b3d8d"
        ]
    );
    // What the service answers now: no card, stopped by the eGFR it compared.
    assert_eq!(
        written["expect"],
        json!({"cards": [], "why_not": [{"rule": "metformin-egfr", "condition": "eGFR below 45",
               "compared": "94.9 mL/min/{1.73_m2} < 45", "unknown": []}]})
    );
    let out = cardinal_in(tmp.path(), &["test", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("1 passed, 0 failed"), "{}", text(&out));

    // An existing file is not replaced; an order hook without --draft says what is missing.
    let again = cardinal_in(
        tmp.path(),
        &[
            "test",
            "new",
            "metformin-renal",
            "--from",
            common::project_path(EDWARD).to_str().unwrap(),
            "--rules",
            "rules",
        ],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again).contains("pass the order being signed with --draft"),
        "{}",
        text(&again)
    );
    let exists = cardinal_in(
        tmp.path(),
        &[
            "test",
            "new",
            "metformin-renal",
            "--from",
            common::project_path(EDWARD).to_str().unwrap(),
            "--draft",
            common::project_path(METFORMIN_DRAFT).to_str().unwrap(),
            "--rules",
            "rules",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(exists.status.code(), Some(2));
    assert!(
        text(&exists).contains("exists: not replaced"),
        "{}",
        text(&exists)
    );
}

#[test]
fn test_new_from_a_single_patient_resource_for_a_patient_view_service() {
    let (tmp, rules) = one_service("patient-greeting");
    let patient = tmp.path().join("patient.json");
    std::fs::write(
        &patient,
        json!({"resourceType": "Patient", "id": "pg-1", "name": [{"given": ["Ada"], "family": "Lovelace"}],
               "birthDate": "1980-12-10"})
        .to_string(),
    )
    .unwrap();
    let out_file = rules.join("patient-greeting/tests/ada.json");
    let out = cardinal_in(
        tmp.path(),
        &[
            "test",
            "new",
            "patient-greeting",
            "--from",
            "patient.json",
            "--at",
            "2026-11-01",
            "--rules",
            "rules",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(written["expect"]["cards"].as_array().unwrap().len(), 1);
    let out = cardinal_in(tmp.path(), &["test", "rules"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn test_compact_prints_a_case_that_passes_and_explain_reads_it() {
    let (tmp, rules) = one_service("metformin-renal");
    let out = cardinal_in(
        tmp.path(),
        &[
            "test",
            "compact",
            common::project_path("rules/metformin-renal/tests/egfr-62-no-card.json")
                .to_str()
                .unwrap(),
            "--rules",
            "rules",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let case = rules.join("metformin-renal/tests/egfr-62.json");
    std::fs::write(&case, &out.stdout).unwrap();
    let run = cardinal_in(tmp.path(), &["test", "rules"]);
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));

    // `explain` shows the values the false condition compared, in text and JSON.
    let explain = cardinal_in(
        tmp.path(),
        &[
            "explain",
            "--request",
            case.to_str().unwrap(),
            "--rules",
            "rules",
        ],
    );
    let shown = text(&explain);
    assert_eq!(explain.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(
            "NOT FIRED: condition \"eGFR below 45\" was false (62 mL/min/{1.73_m2} < 45)"
        ),
        "{shown}"
    );
    assert!(
        shown.contains("FALSE  eGFR below 45: 62 mL/min/{1.73_m2} < 45"),
        "{shown}"
    );
    let json_out = cardinal_in(
        tmp.path(),
        &[
            "explain",
            "--request",
            case.to_str().unwrap(),
            "--rules",
            "rules",
            "--json",
        ],
    );
    let report: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    assert_eq!(
        report["rules"][0]["conditions"][1]["compared"],
        json!({"left": "62 mL/min/{1.73_m2}", "op": "<", "right": "45"})
    );
}

#[test]
fn why_not_checks_compared_values() {
    let cardinal = shipped();
    let mut case = TestCase::read(&common::project_path(
        "rules/metformin-renal/tests/egfr-62-no-card.json",
    ))
    .unwrap();
    case.expect.why_not = serde_json::from_value(json!([{"rule": "metformin-egfr",
        "condition": "eGFR below 45", "compared": "62 mL/min/{1.73_m2} < 45"}]))
    .unwrap();
    assert!(rule_tests::run_case(&cardinal, &case, &Aliases::default()).passed());
    case.expect.why_not[0].compared = Some("61 mL/min/{1.73_m2} < 45".into());
    let result = rule_tests::run_case(&cardinal, &case, &Aliases::default());
    let messages: Vec<String> = result.mismatches.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "why_not: rule metformin-egfr stopped on \"eGFR below 45\", which compared 62 mL/min/{1.73_m2} < 45, expected 61 mL/min/{1.73_m2} < 45"
        ]
    );
}
