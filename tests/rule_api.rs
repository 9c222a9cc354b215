//! The rule API as informaticists use it: each test writes a one-rule service, evaluates a real
//! request in-process (the same path the servers use) and checks what the rule computed.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::engine::Verdict;
use cardinal::evaluator::{CallOptions, Cardinal, Evaluation, parse_evaluation_time};
use serde_json::{Value, json};

fn evaluate_with(rule: &str, hook: &str, request: Value, now: &str) -> Evaluation {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = dir.path().join("api-test");
    std::fs::create_dir_all(&service).expect("mkdir");
    std::fs::write(
        service.join("service.toml"),
        format!("id = \"api-test\"\nhook = \"{hook}\"\ndescription = \"rule API test\"\nversion = \"9.9.9\"\n"),
    )
    .expect("manifest");
    std::fs::write(service.join("rule.rhai"), rule).expect("rule");
    let config = Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    };
    let cardinal = Cardinal::load(config).unwrap_or_else(|e| panic!("load failed:\n{e}"));
    let request = HookRequest::from_value(request).expect("valid request");
    let options = CallOptions {
        evaluation_time: parse_evaluation_time(now),
        ..CallOptions::default()
    };
    cardinal
        .evaluate("api-test", request, options)
        .expect("evaluation")
}

/// Runs `rule` on the metformin fixture (order-sign) and returns the summaries of its cards.
fn summaries(rule: &str, now: &str) -> Vec<String> {
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        now,
    );
    if let Verdict::Error(e) = &eval.outcomes[0].verdict {
        panic!("rule failed: {e:?}");
    }
    eval.response
        .cards
        .iter()
        .map(|c| c.summary.clone())
        .collect()
}

#[test]
fn age_uses_the_evaluation_date_not_the_wall_clock() {
    // Born 1958-03-14.
    let rule = r#"card(#{ summary: `age ${patient.age}`, indicator: "info" });"#;
    assert_eq!(summaries(rule, "2026-03-13"), ["age 67"]);
    assert_eq!(summaries(rule, "2026-03-14"), ["age 68"]);
    assert_eq!(summaries(rule, "2000-01-01"), ["age 41"]);
}

#[test]
fn latest_observation_is_the_newest_of_any_listed_code() {
    let rule = r#"
        let o = patient.latest_observation(["33914-3", "62238-1"]);
        card(#{ summary: `${o.id} ${o.value} ${o.unit} ${o.date}`, indicator: "info" });
    "#;
    assert_eq!(
        summaries(rule, "2026-11-25"),
        ["egfr-2026-10 24 mL/min/{1.73_m2} 2026-10-02T09:30:00Z"]
    );
    let older_only = r#"
        let o = patient.latest_observation("http://loinc.org|33914-3");
        card(#{ summary: `${o.id} ${o.value}`, indicator: "info" });
    "#;
    assert_eq!(summaries(older_only, "2026-11-25"), ["egfr-2026-04 52"]);
}

#[test]
fn codes_with_the_wrong_system_do_not_match() {
    let rule = r#"
        let hits = patient.observations("http://snomed.info/sct|62238-1");
        card(#{ summary: `hits ${hits.len()}`, indicator: "info" });
    "#;
    assert_eq!(summaries(rule, "2026-11-25"), ["hits 0"]);
}

#[test]
fn draft_orders_are_not_part_of_the_record() {
    let rule = r#"
        let drafts = context.draft_medications(["861007"]);
        let record = patient.medications(["861007"]);
        card(#{ summary: `draft ${drafts.len()} record ${record.len()} ${drafts[0].reference}`, indicator: "info" });
    "#;
    assert_eq!(
        summaries(rule, "2026-11-25"),
        ["draft 1 record 0 MedicationRequest/medrx-metformin"]
    );
}

#[test]
fn any_field_can_be_read_by_path() {
    let rule = r#"
        let order = context.draft_orders[0];
        let dose = order.dosageInstruction[0].doseAndRate[0].doseQuantity;
        let freq = order.dosageInstruction[0].timing.repeat.frequency;
        let missing = order.noSuchField;
        card(#{ summary: `${dose.value} ${dose.unit} x${freq} ${missing == ()}`, indicator: "info" });
    "#;
    assert_eq!(summaries(rule, "2026-11-25"), ["500 mg x2 true"]);
}

#[test]
fn dates_are_relative_to_the_evaluation_time() {
    let rule = r#"
        let o = patient.latest_observation("62238-1");
        card(#{ summary: `${o.days_ago} ${days_since("2026-11-01")} ${today()} ${days_between("2023-01-31", "2023-05-01")}`, indicator: "info" });
    "#;
    assert_eq!(
        summaries(rule, "2026-11-25T08:00:00Z"),
        ["54 24 2026-11-25 90"]
    );
}

#[test]
fn require_stops_quietly_and_names_the_failed_condition() {
    let rule = r#"
        let egfr = require("an eGFR on record", patient.latest_observation("62238-1"));
        require("eGFR below 10", egfr.value < 10);
        card(#{ summary: "unreachable", indicator: "info" });
    "#;
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-25",
    );
    let outcome = &eval.outcomes[0];
    assert_eq!(outcome.verdict, Verdict::NotFired);
    assert_eq!(outcome.failed_condition(), Some("eGFR below 10"));
    assert_eq!(outcome.conditions.len(), 2);
    assert!(eval.response.cards.is_empty());
    assert!(eval.response.extension.diagnostics.is_empty());
}

#[test]
fn because_records_facts_from_resources_and_values() {
    let rule = r#"
        let egfr = patient.latest_observation("62238-1");
        because("eGFR", egfr, "threshold 30");
        because("Age", patient.age);
        card(#{ summary: "facts", indicator: "warning", detail: "Detail." });
    "#;
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-25",
    );
    let card = &eval.response.cards[0];
    let explanation = card.explanation().expect("explanation");
    assert_eq!(explanation.rule_id, "rule");
    assert_eq!(explanation.rule_version, "9.9.9");
    assert_eq!(explanation.service_id, "api-test");
    assert_eq!(explanation.evaluated_at, "2026-11-25T00:00:00Z");
    let egfr = &explanation.facts[0];
    assert_eq!(egfr.value.as_deref(), Some("24"));
    assert_eq!(egfr.unit.as_deref(), Some("mL/min/{1.73_m2}"));
    assert_eq!(egfr.reference.as_deref(), Some("Observation/egfr-2026-10"));
    assert_eq!(egfr.origin.as_deref(), Some("prefetch"));
    assert_eq!(egfr.note.as_deref(), Some("threshold 30"));
    assert_eq!(explanation.facts[1].value.as_deref(), Some("68"));
    let detail = card.detail.as_deref().unwrap_or_default();
    assert!(
        detail.starts_with("Detail.\n\n**Why this card**"),
        "{detail}"
    );
    assert!(
        detail.contains("- eGFR: 24 mL/min/{1.73_m2} on 2026-10-02T09:30:00Z (threshold 30)"),
        "{detail}"
    );
}

#[test]
fn conditions_and_active_status() {
    let request = json!({
        "hook": "patient-view",
        "hookInstance": "7d0b1a52-6a0e-4c55-9f3c-2a2b1c0d9e8f",
        "context": {"userId": "Practitioner/1", "patientId": "p"},
        "prefetch": {"conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Condition", "id": "ckd",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "431857002", "display": "Chronic kidney disease stage 4"},
                                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "N18.4"}]},
                "onsetDateTime": "2024-02-01"}},
            {"resource": {"resourceType": "Condition", "id": "old-htn",
                "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}]}}}
        ]}}
    });
    let rule = r#"
        let ckd = patient.has_active_condition(["http://hl7.org/fhir/sid/icd-10-cm|N18.4"]);
        let htn = patient.has_active_condition("38341003");
        let all = patient.conditions(["38341003", "431857002"]).len();
        card(#{ summary: `${ckd} ${htn} ${all}`, indicator: "info" });
    "#;
    let eval = evaluate_with(rule, "patient-view", request, "2026-11-25");
    assert_eq!(eval.response.cards[0].summary, "true false 2");
}

#[test]
fn card_errors_name_the_field_and_location() {
    let rule = "let x = 1;\ncard(#{ summary: \"ok\", indicator: \"info\", sugestions: [] });\n";
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-25",
    );
    let Verdict::Error(err) = &eval.outcomes[0].verdict else {
        panic!("expected an error, got {:?}", eval.outcomes[0].verdict);
    };
    assert!(
        err.message.contains("unknown card field `sugestions`"),
        "{}",
        err.message
    );
    assert_eq!(err.line, Some(2));
    assert_eq!(eval.response.extension.diagnostics.len(), 1);
}

#[test]
fn the_call_budget_bounds_the_work_of_one_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = dir.path().join("budget");
    std::fs::create_dir_all(&service).expect("mkdir");
    std::fs::write(
        service.join("service.toml"),
        "id = \"budget\"\nhook = \"order-sign\"\ndescription = \"runaway rules\"\nversion = \"1\"\n",
    )
    .expect("manifest");
    for name in ["a", "b", "c", "d", "e"] {
        std::fs::write(service.join(format!("{name}.rhai")), "loop { }").expect("rule");
    }
    let mut config = Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    };
    // Two rules use their 1,000 operations (1,001 counted: the one that crossed the limit); the
    // third gets the 498 left, and the last two get nothing.
    config.sandbox.max_operations = 1_000;
    config.sandbox.call_max_operations = 2_500;
    let cardinal = Cardinal::load(config).unwrap_or_else(|e| panic!("{e}"));
    let request =
        HookRequest::from_value(common::request_fixture("metformin-egfr-low")).expect("request");
    let eval = cardinal
        .evaluate("budget", request, CallOptions::default())
        .expect("evaluation");
    let kinds: Vec<&str> = eval
        .response
        .extension
        .diagnostics
        .iter()
        .map(|d| d.kind.as_str())
        .collect();
    assert_eq!(
        kinds,
        ["operations", "operations", "budget", "budget", "budget"],
        "{:#?}",
        eval.response.extension.diagnostics
    );
    let operations: Vec<u64> = eval.outcomes.iter().map(|o| o.operations).collect();
    assert_eq!(operations, [1_001, 1_001, 499, 0, 0]);
    let cut_short = &eval.response.extension.diagnostics[2];
    assert!(
        cut_short
            .message
            .contains("498 operations the call had left"),
        "{}",
        cut_short.message
    );
    let not_run = &eval.outcomes[4];
    assert!(not_run.duration.is_zero() && not_run.operations == 0);
}

#[test]
fn a_closure_over_patient_inside_a_call_on_patient_gets_a_fix_in_its_error() {
    let rule = r#"
        let late = patient.resources("Observation").filter(|o| patient.age != ());
        card(#{ summary: `${late.len()}`, indicator: "info" });
    "#;
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-01",
    );
    let Verdict::Error(e) = &eval.outcomes[0].verdict else {
        panic!("expected the data-race error: {:?}", eval.outcomes[0]);
    };
    assert!(e.message.contains("bind the list first"), "{}", e.message);
    // The suggested form works.
    let fixed = r#"
        let observations = patient.resources("Observation");
        let late = observations.filter(|o| patient.age != ());
        card(#{ summary: `${late.len()}`, indicator: "info" });
    "#;
    assert_eq!(summaries(fixed, "2026-11-01"), ["2"], "both eGFR results");
}

#[test]
fn value_sets_shipped_with_the_rules_are_checked_by_id_or_url_and_explained() {
    let dir = tempfile::tempdir().expect("tempdir");
    let service = dir.path().join("egfr-check");
    let valuesets = dir.path().join("valuesets");
    std::fs::create_dir_all(&service).expect("mkdir");
    std::fs::create_dir_all(&valuesets).expect("mkdir");
    std::fs::write(
        valuesets.join("egfr.json"),
        json!({"resourceType": "ValueSet", "url": "http://example.org/fhir/ValueSet/egfr-tests",
            "version": "2026-01", "status": "active",
            "compose": {"include": [{"system": "http://loinc.org", "concept": [
                {"code": "62238-1", "display": "eGFR CKD-EPI"}, {"code": "33914-3", "display": "eGFR MDRD"}]}]}})
        .to_string(),
    )
    .expect("value set");
    std::fs::write(
        service.join("service.toml"),
        "id = \"egfr-check\"\nhook = \"order-sign\"\ndescription = \"value sets\"\nversion = \"1\"\n",
    )
    .expect("manifest");
    std::fs::write(
        service.join("rule.rhai"),
        r#"
        let observations = patient.resources("Observation");
        let by_id = observations.filter(|o| in_valueset(o, "egfr-tests"));
        let by_field = observations.filter(|o| in_valueset(o, "code", "http://example.org/fhir/ValueSet/egfr-tests|2026-01"));
        let not_lab = observations.filter(|o| in_valueset(o, "category", "egfr-tests"));
        let ordered = context.draft_orders.filter(|o| patient.medication_in(o, "egfr-tests"));
        card(#{ summary: `${by_id.len()} ${by_field.len()} ${not_lab.len()} ${ordered.len()}`, indicator: "info" });
        "#,
    )
    .expect("rule");
    let cardinal = Cardinal::load(Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let request =
        HookRequest::from_value(common::request_fixture("metformin-egfr-low")).expect("request");
    let eval = cardinal
        .evaluate("egfr-check", request, CallOptions::default())
        .expect("evaluation");
    let card = &eval.response.cards[0];
    assert_eq!(
        card.summary, "2 2 0 0",
        "both eGFR results; no category or draft order matches"
    );
    let facts = &card.explanation().expect("explanation").facts;
    let matched = facts
        .iter()
        .find(|f| f.origin.as_deref() == Some("terminology"))
        .expect("the match is explained");
    assert_eq!(matched.name, "in value set egfr-tests");
    assert_eq!(matched.value.as_deref(), Some("http://loinc.org|62238-1"));
    assert_eq!(
        matched.reference.as_deref(),
        Some("Observation/egfr-2026-10")
    );
}

#[test]
fn compare_records_both_sides_of_a_condition_with_units() {
    let rule = r#"
        let egfr = require("an eGFR on record", patient.latest_observation("62238-1"));
        let c = compare(egfr, ">=", 10);
        require("eGFR 10 or more", compare(egfr, ">=", 10));
        require("45 days or more", compare(45, ">", 30, "days"));
        require("a quantity map", compare(#{value: 2.5, unit: "mg"}, "<", 3));
        require("ISO dates compare as text", compare("2026-01-02", ">", "2025-12-31"));
        require("holds is the plain result", c.holds);
        require("no value never holds", compare((), "<", 45, "days"));
        card(#{ summary: "unreachable", indicator: "info" });
    "#;
    let eval = evaluate_with(
        rule,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-25",
    );
    let outcome = &eval.outcomes[0];
    assert_eq!(outcome.verdict, Verdict::NotFired);
    let shown: Vec<(String, bool, Option<String>)> = outcome
        .conditions
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.met,
                c.compared.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    let egfr = shown[1].2.clone().expect("compared");
    assert!(
        egfr.ends_with(" >= 10") && egfr.contains("mL/min"),
        "{egfr}"
    );
    assert_eq!(
        shown[2..],
        [
            (
                "45 days or more".into(),
                true,
                Some("45 days > 30 days".into())
            ),
            ("a quantity map".into(), true, Some("2.5 mg < 3".into())),
            (
                "ISO dates compare as text".into(),
                true,
                Some("2026-01-02 > 2025-12-31".into())
            ),
            ("holds is the plain result".into(), true, None),
            (
                "no value never holds".into(),
                false,
                Some("(no value) < 45 days".into())
            ),
        ]
    );

    // An operator that is none is a rule error naming it.
    let eval = evaluate_with(
        r#"require("x", compare(1, "=<", 2));"#,
        "order-sign",
        common::request_fixture("metformin-egfr-low"),
        "2026-11-25",
    );
    match &eval.outcomes[0].verdict {
        Verdict::Error(e) => assert!(e.message.contains("`=<` is not an operator"), "{e:?}"),
        other => panic!("{other:?}"),
    }
}
