//! Which records the rule helpers hand over as clinical facts, per resource type: nothing entered in
//! error; results only when final, amended or corrected (unless a rule asks for other statuses);
//! conditions not refuted; orders, statements, procedures and encounters not in a status FHIR
//! defines as never in force. `patient.resources(type)` only drops what was entered in error and
//! `patient.all_resources(type)` is the record as sent.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::engine::Verdict;
use cardinal::evaluator::{CallOptions, Cardinal, parse_evaluation_time};
use serde_json::{Value, json};

const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";

fn coded(system: &str, code: &str) -> Value {
    json!({"coding": [{"system": system, "code": code}]})
}

/// One record with, per type, a record in force and ones that are not.
fn record() -> Value {
    let egfr = |id: &str, status: &str, date: &str, value: f64| {
        json!({"resource": {"resourceType": "Observation", "id": id, "status": status,
            "code": coded(LOINC, "62238-1"), "effectiveDateTime": date,
            "valueQuantity": {"value": value, "unit": "mL/min/{1.73_m2}"}}})
    };
    let condition = |id: &str, verification: &str| {
        json!({"resource": {"resourceType": "Condition", "id": id,
            "clinicalStatus": coded("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
            "verificationStatus": coded("http://terminology.hl7.org/CodeSystem/condition-ver-status", verification),
            "code": coded(SNOMED, "44054006")}})
    };
    let order = |id: &str, status: &str| {
        json!({"resource": {"resourceType": "MedicationRequest", "id": id, "status": status,
            "intent": "order", "medicationCodeableConcept": coded(RXNORM, "855332"),
            "authoredOn": "2026-09-01"}})
    };
    json!({
        "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"},
        "record": {"resourceType": "Bundle", "type": "searchset", "entry": [
            egfr("egfr-error", "entered-in-error", "2026-10-20", 12.0),
            egfr("egfr-prelim", "preliminary", "2026-10-10", 20.0),
            egfr("egfr-final", "final", "2026-10-01", 62.0),
            egfr("egfr-corrected", "corrected", "2026-09-01", 58.0),
            {"resource": {"resourceType": "DiagnosticReport", "id": "bmp-registered", "status": "registered",
                "code": coded(LOINC, "24323-8")}},
            {"resource": {"resourceType": "DiagnosticReport", "id": "bmp-final", "status": "final",
                "code": coded(LOINC, "24323-8")}},
            condition("dm-confirmed", "confirmed"),
            condition("dm-refuted", "refuted"),
            condition("dm-error", "entered-in-error"),
            order("warfarin-active", "active"),
            order("warfarin-stopped", "stopped"),
            order("warfarin-cancelled", "cancelled"),
            order("warfarin-error", "entered-in-error"),
            order("warfarin-draft", "draft"),
            {"resource": {"resourceType": "MedicationStatement", "id": "stmt-taken", "status": "active",
                "medicationCodeableConcept": coded(RXNORM, "855332")}},
            {"resource": {"resourceType": "MedicationStatement", "id": "stmt-not-taken", "status": "not-taken",
                "medicationCodeableConcept": coded(RXNORM, "855332")}},
            {"resource": {"resourceType": "Procedure", "id": "proc-done", "status": "completed",
                "code": coded(SNOMED, "80146002")}},
            {"resource": {"resourceType": "Procedure", "id": "proc-not-done", "status": "not-done",
                "code": coded(SNOMED, "80146002")}},
            {"resource": {"resourceType": "Encounter", "id": "enc-finished", "status": "finished",
                "type": [coded(SNOMED, "185349003")]}},
            {"resource": {"resourceType": "Encounter", "id": "enc-cancelled", "status": "cancelled",
                "type": [coded(SNOMED, "185349003")]}},
            {"resource": {"resourceType": "Encounter", "id": "enc-error", "status": "entered-in-error",
                "type": [coded(SNOMED, "185349003")]}}
        ]}
    })
}

/// Runs `expression` (a Rhai expression giving a list of resources, or one) against the record and
/// returns the ids it gives.
fn ids(expression: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("status");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"status\"\nhook = \"patient-view\"\ndescription = \"status test\"\nversion = \"1\"\n",
    )
    .unwrap();
    let rule = format!(
        "let found = {expression};\nif type_of(found) != \"array\" {{ found = if found == () {{ [] }} else {{ [found] }}; }}\n\
         card(#{{ summary: found.map(|r| r.id).reduce(|a, b| if a == () {{ b }} else {{ a + \",\" + b }}) ?? \"none\", indicator: \"info\" }});"
    );
    std::fs::write(service.join("rule.rhai"), rule).unwrap();
    let cardinal = Cardinal::load(Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let request = HookRequest::from_value(json!({
        "hook": "patient-view", "hookInstance": "5a7e4d3c-1b2a-4c9d-8e7f-6a5b4c3d2e1f",
        "context": {"userId": "Practitioner/1", "patientId": "p1"}, "prefetch": record()
    }))
    .unwrap();
    let evaluation = cardinal
        .evaluate(
            "status",
            request,
            CallOptions {
                evaluation_time: parse_evaluation_time("2026-11-01"),
                ..CallOptions::default()
            },
        )
        .unwrap();
    if let Verdict::Error(e) = &evaluation.outcomes[0].verdict {
        panic!("{expression}: {e:?}");
    }
    let summary = &evaluation.response.cards[0].summary;
    if summary == "none" {
        return Vec::new();
    }
    summary.split(',').map(str::to_owned).collect()
}

#[test]
fn observations_are_final_results_unless_the_rule_asks() {
    assert_eq!(
        ids("patient.latest_observation(\"62238-1\")"),
        ["egfr-final"]
    );
    assert_eq!(
        ids("patient.observations(\"62238-1\")"),
        ["egfr-final", "egfr-corrected"]
    );
    assert_eq!(
        ids("patient.observations(\"62238-1\", [\"preliminary\", \"final\"])"),
        ["egfr-prelim", "egfr-final"]
    );
    // Even asked for, a record entered in error is no fact.
    assert!(ids("patient.observations(\"62238-1\", [\"entered-in-error\"])").is_empty());
}

#[test]
fn diagnostic_reports_are_final_results() {
    assert_eq!(
        ids("patient.find(\"DiagnosticReport\", \"24323-8\")"),
        ["bmp-final"]
    );
}

#[test]
fn conditions_refuted_or_entered_in_error_are_not_diagnoses() {
    assert_eq!(ids("patient.conditions(\"44054006\")"), ["dm-confirmed"]);
    assert_eq!(
        ids("patient.active_conditions(\"44054006\")"),
        ["dm-confirmed"]
    );
}

#[test]
fn medication_requests_cancelled_drafted_or_entered_in_error_were_never_prescriptions() {
    let found = ids("patient.medications(\"855332\")");
    for absent in [
        "warfarin-cancelled",
        "warfarin-error",
        "warfarin-draft",
        "stmt-not-taken",
    ] {
        assert!(!found.contains(&absent.to_owned()), "{found:?}");
    }
    for present in ["warfarin-active", "warfarin-stopped", "stmt-taken"] {
        assert!(found.contains(&present.to_owned()), "{found:?}");
    }
    let mut active = ids("patient.active_medications(\"855332\")");
    active.sort();
    assert_eq!(active, ["stmt-taken", "warfarin-active"]);
}

#[test]
fn medication_statements_not_taken_are_left_out() {
    let found = ids(
        "patient.medications(\"855332\").filter(|m| m.resource_type == \"MedicationStatement\")",
    );
    assert_eq!(found, ["stmt-taken"]);
}

#[test]
fn procedures_not_done_are_left_out() {
    assert_eq!(
        ids("patient.find(\"Procedure\", \"80146002\")"),
        ["proc-done"]
    );
}

#[test]
fn encounters_cancelled_or_entered_in_error_are_left_out() {
    assert_eq!(
        ids("patient.find(\"Encounter\", \"185349003\")"),
        ["enc-finished"]
    );
}

#[test]
fn resources_drops_only_what_was_entered_in_error_and_all_resources_nothing() {
    assert_eq!(
        ids("patient.resources(\"Encounter\")"),
        ["enc-finished", "enc-cancelled"]
    );
    assert_eq!(ids("patient.all_resources(\"Encounter\")").len(), 3);
    assert_eq!(
        ids("patient.resources(\"Condition\")"),
        ["dm-confirmed", "dm-refuted"]
    );
}
