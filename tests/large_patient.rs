//! A large real patient through the reader that skips what a service cannot read: the prefetch keys a
//! service declares are read exactly as a full parse reads them (each resource against its own JSON,
//! and the patient index built from them), the other keys are checked as JSON and dropped — still a
//! 400 when they are not JSON — and rules never see them, on the HTTP and the in-process paths.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;
#[path = "support/synthea.rs"]
#[allow(dead_code)]
mod synthea;

use std::collections::BTreeSet;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal, parse_evaluation_time};
use cardinal::fhir::{PrefetchReads, PrefetchValue, Resource, concept_codings};
use cardinal::patient::PatientContext;
use common::{TestServer, project_path, request_fixture};
use serde_json::{Value, json};

const TODAY: &str = "2026-11-20";

/// The large patient and the small ones: every Synthea patient the project ships.
fn patients() -> Vec<(String, Value)> {
    let mut files = vec![project_path(
        "tests/fixtures/synthea-large/Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json.gz",
    )];
    files.extend(common::fhir_server::synthea_fixtures());
    files
        .into_iter()
        .map(|path| {
            let bundle = synthea::read_bundle(&path)
                .unwrap_or_else(|| panic!("{}: not a gzip Bundle", path.display()));
            (path.display().to_string(), bundle)
        })
        .collect()
}

fn cardinal() -> Cardinal {
    Cardinal::load(Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("rules: {e}"))
}

fn text(value: &Value, field: &str) -> Option<String> {
    value.get(field)?.as_str().map(str::to_owned)
}

/// The clinically relevant date of a resource as the index documents it, read from the full tree.
fn expected_date(resource: &Value) -> Option<String> {
    let start = |field: &str| {
        resource
            .get(field)
            .and_then(|p| p.get("start"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let first = |candidates: &[(&str, bool)]| {
        candidates.iter().find_map(|&(field, is_period)| {
            if is_period {
                start(field)
            } else {
                text(resource, field)
            }
        })
    };
    match resource["resourceType"].as_str()? {
        "Observation" | "DiagnosticReport" => first(&[
            ("effectiveDateTime", false),
            ("effectivePeriod", true),
            ("effectiveInstant", false),
            ("issued", false),
        ]),
        "Condition" | "AllergyIntolerance" => first(&[
            ("onsetDateTime", false),
            ("onsetPeriod", true),
            ("recordedDate", false),
        ]),
        "MedicationRequest" | "ServiceRequest" | "DeviceRequest" => first(&[("authoredOn", false)]),
        "MedicationDispense" => first(&[("whenHandedOver", false), ("whenPrepared", false)]),
        "Procedure" => first(&[("performedDateTime", false), ("performedPeriod", true)]),
        "Immunization" => first(&[("occurrenceDateTime", false), ("recorded", false)]),
        "Encounter" => first(&[("period", true)]),
        "Appointment" => first(&[("start", false)]),
        _ => first(&[
            ("date", false),
            ("authoredOn", false),
            ("effectiveDateTime", false),
        ]),
    }
}

/// The main code's (system, code) pairs, read from the full tree.
fn expected_codings(resource: &Value) -> Vec<(String, String)> {
    let field = match resource["resourceType"].as_str().unwrap_or_default() {
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationDispense"
        | "MedicationAdministration" => "medicationCodeableConcept",
        "Immunization" => "vaccineCode",
        "Encounter" | "Appointment" => "type",
        _ => "code",
    };
    let concepts: Vec<&Value> = match resource.get(field) {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(concept) => vec![concept],
        None => Vec::new(),
    };
    concepts
        .into_iter()
        .flat_map(|c| {
            c.get("coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|coding| {
                    Some((
                        text(coding, "system").unwrap_or_default(),
                        text(coding, "code")?,
                    ))
                })
        })
        .collect()
}

/// A resource as read equals its JSON in the request, field by indexed field.
fn assert_reads_as(resource: &Resource, json: &Value, label: &str) {
    assert_eq!(resource.json(), json, "{label}: the kept text");
    let reparsed: Value = serde_json::from_str(resource.text()).unwrap();
    assert_eq!(&reparsed, json, "{label}: text()");
    assert_eq!(
        Some(resource.resource_type()),
        json["resourceType"].as_str()
    );
    assert_eq!(
        resource.id().map(str::to_owned),
        text(json, "id"),
        "{label}"
    );
    assert_eq!(
        resource.status().map(str::to_owned),
        text(json, "status"),
        "{label}"
    );
    let codings: Vec<(String, String)> = resource
        .codings()
        .map(|(s, c)| (s.to_owned(), c.to_owned()))
        .collect();
    assert_eq!(codings, expected_codings(json), "{label}: codings");
    let clinical: Vec<&str> = resource.clinical_status().collect();
    let expected: Vec<&str> = json
        .get("clinicalStatus")
        .map(|c| concept_codings(c).map(|(_, code)| code).collect())
        .unwrap_or_default();
    assert_eq!(clinical, expected, "{label}: clinicalStatus");
    assert_eq!(
        resource.date().map(str::to_owned),
        expected_date(json),
        "{label}: date"
    );
}

/// The resources of one prefetch answer, in order.
fn resources(value: &PrefetchValue) -> Vec<&Resource> {
    match value {
        PrefetchValue::Null => Vec::new(),
        PrefetchValue::Resource(r) => vec![r],
        PrefetchValue::Bundle(items) => items.iter().collect(),
    }
}

/// Everything the index answers about the record, as comparable text.
fn index_view(patient: &PatientContext) -> Vec<String> {
    let mut view: Vec<String> = patient
        .record()
        .iter()
        .map(|r| r.text().to_owned())
        .collect();
    let types: BTreeSet<&str> = patient
        .record()
        .iter()
        .map(Resource::resource_type)
        .collect();
    for ty in types {
        let ids: Vec<_> = patient.of_type(ty).map(Resource::id).collect();
        view.push(format!("{ty}: {ids:?}"));
        let codes: BTreeSet<String> = patient
            .of_type(ty)
            .flat_map(|r| r.codings().map(|(s, c)| format!("{s}|{c}")))
            .collect();
        for code in codes {
            let hits: Vec<_> = patient
                .newest_first(ty, &[code.as_str()])
                .into_iter()
                .map(|r| (r.id(), r.date()))
                .collect();
            view.push(format!("{ty} {code}: {hits:?}"));
        }
    }
    view.push(format!(
        "patient: {:?}",
        patient.patient().map(Resource::id)
    ));
    view
}

#[test]
fn declared_keys_read_as_the_full_parse_and_the_others_are_only_named() {
    let cardinal = cardinal();
    for (name, bundle) in patients() {
        let request = synthea::opioid_request(&bundle, "order-sign", TODAY).unwrap();
        let body = serde_json::to_vec(&request).unwrap();
        let sent: BTreeSet<&str> = request["prefetch"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let everything = HookRequest::from_json_bytes(&body).unwrap();
        assert!(everything.ignored_prefetch.is_empty());
        for service in [
            "opioidcds-04-05",
            "opioidcds-10-order-sign",
            "hello-world-patient-view",
        ] {
            let label = format!("{name} {service}");
            let reads = cardinal.service(service).unwrap().prefetch.reads();
            let read = HookRequest::from_json_bytes_for(&body, &reads).unwrap();
            let declared: BTreeSet<&str> =
                sent.iter().copied().filter(|k| reads.reads(k)).collect();
            if service == "hello-world-patient-view" {
                // Declares no prefetch: reads whatever is sent.
                assert_eq!(reads, PrefetchReads::All);
                assert_eq!(declared, sent);
            }
            let ignored: Vec<&str> = sent.difference(&declared).copied().collect();
            assert_eq!(read.ignored_prefetch, ignored, "{label}");
            assert_eq!(
                read.prefetch
                    .keys()
                    .map(String::as_str)
                    .collect::<BTreeSet<_>>(),
                declared,
                "{label}"
            );
            for key in &declared {
                let json = &request["prefetch"][key];
                let expected: Vec<&Value> = match json["resourceType"].as_str() {
                    Some("Bundle") => json["entry"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| &e["resource"])
                        .collect(),
                    _ => vec![json],
                };
                let got = resources(&read.prefetch[*key]);
                assert_eq!(got.len(), expected.len(), "{label} {key}");
                for (i, (resource, json)) in got.iter().zip(&expected).enumerate() {
                    assert_reads_as(resource, json, &format!("{label} {key}[{i}]"));
                }
                let full = resources(&everything.prefetch[*key]);
                let texts =
                    |rs: &[&Resource]| rs.iter().map(|r| r.text().to_owned()).collect::<Vec<_>>();
                assert_eq!(texts(&got), texts(&full), "{label} {key}");
            }
            // The index over the declared keys is the index of the full parse without the others.
            let mut full = everything.prefetch.clone();
            full.retain(|k, _| declared.contains(k.as_str()));
            let from_full = PatientContext::build(everything.context.clone(), full);
            let from_read = PatientContext::build(read.context.clone(), read.prefetch.clone());
            assert_eq!(index_view(&from_read), index_view(&from_full), "{label}");
            assert!(from_read.record().len() > 5, "{label}: a real record");
        }
    }
}

#[test]
fn an_undeclared_key_never_reaches_the_rules_in_process() {
    let cardinal = cardinal();
    let options = CallOptions {
        evaluation_time: parse_evaluation_time("2026-11-25"),
        ..CallOptions::default()
    };
    let plain = request_fixture("metformin-egfr-low");
    let baseline = cardinal
        .evaluate(
            "metformin-renal",
            HookRequest::from_value(plain.clone()).unwrap(),
            options.clone(),
        )
        .unwrap();
    assert_eq!(baseline.response.cards.len(), 1, "the fixture fires");
    assert!(baseline.ignored_prefetch.is_empty());
    // A newer, normal eGFR under a key metformin-renal does not declare: read, it would silence the
    // card (the latest eGFR would be 75).
    let mut extra = plain.clone();
    extra["prefetch"]["recentLabs"] = normal_egfr_bundle();
    extra["prefetch"]["zz"] = Value::Null;
    // `from_value` reads every key (as the gRPC transport does); the prefetch step drops the others.
    let request = HookRequest::from_value(extra).unwrap();
    assert!(request.prefetch.contains_key("recentLabs"));
    let evaluation = cardinal
        .evaluate("metformin-renal", request, options)
        .unwrap();
    assert_eq!(evaluation.ignored_prefetch, ["recentLabs", "zz"]);
    let summaries = |e: &cardinal::evaluator::Evaluation| {
        e.response
            .cards
            .iter()
            .map(|c| c.summary.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(summaries(&evaluation), summaries(&baseline));
    let report = cardinal::explain::ExplainReport::new(&evaluation);
    assert_eq!(report.ignored_prefetch, ["recentLabs", "zz"]);
    assert!(
        report.to_string().contains(
            "prefetch ignored (not declared by the service, so not read): recentLabs, zz"
        ),
        "{report}"
    );
}

/// An eGFR of 75 on 2026-11-24 (LOINC 33914-3, as the fixture's), in a searchset.
fn normal_egfr_bundle() -> Value {
    json!({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {
        "resourceType": "Observation", "id": "egfr-normal", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
        "subject": {"reference": "Patient/pat-1"},
        "effectiveDateTime": "2026-11-24",
        "valueQuantity": {"value": 75, "unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org", "code": "mL/min/{1.73_m2}"}
    }}]})
}

#[tokio::test]
async fn over_http_undeclared_keys_are_checked_as_json_then_ignored() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let url = server.url("/cds-services/metformin-renal");
    let post = |body: Vec<u8>| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .header("x-cardinal-evaluation-time", "2026-11-25")
            .body(body)
            .send()
    };
    let plain = request_fixture("metformin-egfr-low");
    let text = serde_json::to_string(&plain).unwrap();
    // Spliced in as text, to send what serde_json would never write.
    let with_key = |key: &str, raw: &[u8]| -> Vec<u8> {
        let at = text.find("\"prefetch\":{").unwrap() + "\"prefetch\":{".len();
        let mut body = text.as_bytes()[..at].to_vec();
        body.extend_from_slice(format!("\"{key}\":").as_bytes());
        body.extend_from_slice(raw);
        body.push(b',');
        body.extend_from_slice(&text.as_bytes()[at..]);
        body
    };

    let response = post(serde_json::to_vec(&plain).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    let baseline: Value = response.json().await.unwrap();
    assert_eq!(baseline["cards"].as_array().map(Vec::len), Some(1));

    // Not JSON, in a key the service does not declare: refused, naming the key and the place.
    for (raw, what) in [
        (&br#"{"resourceType": "Bundle", "entry": [}"#[..], "syntax"),
        (
            &b"{\"resourceType\": \"Bundle\", \"id\": \"\xff\xfe\"}"[..],
            "UTF-8",
        ),
        (&br#"{"resourceType": "Bundle", "total": 01}"#[..], "number"),
    ] {
        let response = post(with_key("recentLabs", raw)).await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let outcome: Value = response.json().await.unwrap();
        let diagnostics = outcome["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default();
        assert!(
            diagnostics.starts_with("`prefetch.recentLabs` is not valid JSON (line 1, column "),
            "{what}: {diagnostics}"
        );
    }

    // JSON, even 100,000 levels deep or not a resource at all: ignored, and the answer unchanged.
    let deep = "[".repeat(100_000) + "]".repeat(100_000).as_str();
    let normal = serde_json::to_string(&normal_egfr_bundle()).unwrap();
    for raw in [normal.as_str(), deep.as_str(), "5", "null"] {
        let response = post(with_key("recentLabs", raw.as_bytes())).await.unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["cards"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            answer["cards"][0]["summary"],
            baseline["cards"][0]["summary"]
        );
    }

    // The explain report names what was ignored.
    let response = client
        .post(server.url("/cds-services/metformin-renal/explain"))
        .header("content-type", "application/json")
        .header("x-cardinal-evaluation-time", "2026-11-25")
        .body(with_key("recentLabs", normal.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["ignoredPrefetch"], json!(["recentLabs"]));
    server.stop().await;
}
