//! The CDS Hooks HTTP/JSON API, over real HTTP against a real server on 127.0.0.1:0: discovery, the
//! starter services (fired and not fired), explanations, evaluation-time pinning, feedback, every
//! refusal (status, OperationOutcome, no patient data echoed), CORS, health, the rule sandbox, and
//! refusing to start on broken rules.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use cardinal::config::Config;
use cardinal::engine::SandboxLimits;
use cardinal::evaluator::Cardinal;
use common::{TestServer, project_path, request_fixture};
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

const EXPLANATION: &str = "org.cardinalcds.explanation";
const DIAGNOSTICS: &str = "org.cardinalcds.diagnostics";
const EVALUATION_TIME_HEADER: &str = "x-cardinal-evaluation-time";
const FHIR_JSON: &str = "application/fhir+json";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Status and JSON body of a response (panics with the raw text if the body is not JSON).
async fn read_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {text}"));
    (status, body)
}

async fn get_json(server: &TestServer, path: &str) -> (StatusCode, Value) {
    let response = client().get(server.url(path)).send().await.expect("GET");
    read_json(response).await
}

async fn post_json(server: &TestServer, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .expect("POST");
    read_json(response).await
}

/// A POST with a raw body, sent as JSON.
fn post_raw(server: &TestServer, path: &str, body: impl Into<String>) -> RequestBuilder {
    client()
        .post(server.url(path))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
}

/// Posts `body` to a service and expects a 200 with a `cards` array.
async fn call_ok(server: &TestServer, service: &str, body: &Value) -> Value {
    let (status, response) = post_json(server, &format!("/cds-services/{service}"), body).await;
    assert_eq!(status, StatusCode::OK, "{service}: {response:#}");
    assert!(
        response["cards"].is_array(),
        "{service}: no cards array: {response:#}"
    );
    response
}

/// A refusal, as the client sees it.
struct Refusal {
    /// The whole response body, to check that nothing from the request is echoed.
    text: String,
    /// `issue[0].code`.
    code: String,
    /// `issue[0].diagnostics`.
    diagnostics: String,
    headers: HeaderMap,
}

/// Sends `request` and checks the refusal: `expected` status, `application/fhir+json`, and a FHIR
/// OperationOutcome with one error issue carrying a non-empty diagnostics message.
async fn expect_refusal(request: RequestBuilder, expected: StatusCode) -> Refusal {
    let response = request.send().await.expect("send");
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("response body");
    assert_eq!(status, expected, "body: {text}");
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(
        content_type, FHIR_JSON,
        "content-type of a {status} answer; body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: OperationOutcome is not JSON ({e}): {text}"));
    assert_eq!(body["resourceType"], "OperationOutcome", "{body:#}");
    let issues = body["issue"].as_array().expect("issue array");
    assert_eq!(issues.len(), 1, "{body:#}");
    assert_eq!(issues[0]["severity"], "error", "{body:#}");
    let diagnostics = issues[0]["diagnostics"]
        .as_str()
        .expect("diagnostics string")
        .to_owned();
    assert!(!diagnostics.trim().is_empty(), "{body:#}");
    Refusal {
        code: issues[0]["code"].as_str().expect("issue code").to_owned(),
        text,
        diagnostics,
        headers,
    }
}

fn assert_mentions(diagnostics: &str, needles: &[&str]) {
    for needle in needles {
        assert!(
            diagnostics.contains(needle),
            "diagnostics should mention {needle:?}: {diagnostics:?}"
        );
    }
}

/// Paths of every `null`, `""`, `[]` or `{}` below `value` (the spec omits empty optionals instead).
fn empty_fields(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Null => found.push(path.to_owned()),
        Value::String(s) if s.is_empty() => found.push(path.to_owned()),
        Value::Array(items) if items.is_empty() => found.push(path.to_owned()),
        Value::Object(map) if map.is_empty() => found.push(path.to_owned()),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                empty_fields(item, &format!("{path}[{i}]"), found);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                empty_fields(item, &format!("{path}.{key}"), found);
            }
        }
        _ => {}
    }
}

fn assert_no_empty_fields(value: &Value) {
    let mut found = Vec::new();
    empty_fields(value, "$", &mut found);
    assert!(
        found.is_empty(),
        "null or empty optional fields {found:?} in {value:#}"
    );
}

fn cards(response: &Value) -> &Vec<Value> {
    response["cards"].as_array().expect("cards array")
}

/// The only card of a response.
fn single_card(response: &Value) -> &Value {
    let cards = cards(response);
    assert_eq!(cards.len(), 1, "expected exactly one card: {response:#}");
    &cards[0]
}

fn explanation(card: &Value) -> &Value {
    let explanation = &card["extension"][EXPLANATION];
    assert!(explanation.is_object(), "card has no explanation: {card:#}");
    explanation
}

/// The fact of an explanation with this name.
fn fact<'a>(card: &'a Value, name: &str) -> &'a Value {
    explanation(card)["facts"]
        .as_array()
        .expect("facts array")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no fact {name:?} in {card:#}"))
}

fn detail(card: &Value) -> &str {
    card["detail"].as_str().expect("detail string")
}

/// Checks the explanation every card carries: service, rule, version, an RFC 3339 time.
fn assert_explained(card: &Value, service: &str, rule: &str, version: &str) {
    let explanation = explanation(card);
    assert_eq!(explanation["serviceId"], service, "{card:#}");
    assert_eq!(explanation["ruleId"], rule, "{card:#}");
    assert_eq!(explanation["ruleVersion"], version, "{card:#}");
    let evaluated_at = explanation["evaluatedAt"]
        .as_str()
        .expect("evaluatedAt string");
    assert!(
        chrono::DateTime::parse_from_rfc3339(evaluated_at).is_ok(),
        "evaluatedAt {evaluated_at:?} is not RFC 3339"
    );
    assert!(
        detail(card).contains("**Why this card**"),
        "detail has no \"Why this card\" section: {card:#}"
    );
}

fn diagnostics(response: &Value) -> &Vec<Value> {
    response["extension"][DIAGNOSTICS]
        .as_array()
        .expect("diagnostics array")
}

fn diagnostic<'a>(response: &'a Value, rule: &str) -> &'a Value {
    diagnostics(response)
        .iter()
        .find(|d| d["ruleId"] == rule)
        .unwrap_or_else(|| panic!("no diagnostic for {rule}: {response:#}"))
}

/// The metformin fixture with the latest eGFR (`egfr-2026-10`) set to `value`.
fn metformin_with_egfr(value: i64) -> Value {
    let mut request = request_fixture("metformin-egfr-low");
    let latest = &mut request["prefetch"]["egfr"]["entry"][0]["resource"];
    assert_eq!(latest["id"], "egfr-2026-10", "fixture changed");
    latest["valueQuantity"]["value"] = json!(value);
    request
}

/// No cards, and nothing else but the trace id that lets the EHR find the call's trace and the
/// rule-set version that answered.
fn assert_no_cards(response: &Value) {
    assert_eq!(response["cards"], json!([]), "{response:#}");
    let extension = response["extension"].as_object().expect("extension");
    assert_eq!(extension.len(), 2, "{response:#}");
    let rule_set = extension["org.cardinalcds.ruleSet"]
        .as_str()
        .expect("rule set version");
    assert_eq!(rule_set.len(), 12, "{response:#}");
    let trace_id = extension["org.cardinalcds.traceId"]
        .as_str()
        .expect("trace id");
    assert_eq!(trace_id.len(), 32, "{response:#}");
    assert!(
        trace_id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{response:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Discovery
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_lists_the_three_shipped_services() {
    let server = TestServer::start().await;
    let response = client()
        .get(server.url("/cds-services"))
        .send()
        .await
        .expect("GET");
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let (status, body) = read_json(response).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    assert_no_empty_fields(&body);

    let services = body["services"].as_array().expect("services array");
    let ids: HashSet<&str> = services.iter().filter_map(|s| s["id"].as_str()).collect();
    let mut shipped: HashSet<&str> = HashSet::from([
        "patient-greeting",
        "metformin-renal",
        "warfarin-nsaid",
        "hyperkalemia",
    ]);
    shipped.extend(common::OPIOID_SERVICES);
    assert_eq!(ids, shipped, "{body:#}");
    assert_eq!(services.len(), 20, "each service once: {body:#}");

    let expected = [
        ("patient-greeting", "patient-view", &["patient"][..]),
        ("metformin-renal", "order-sign", &["patient", "egfr"][..]),
        (
            "warfarin-nsaid",
            "order-sign",
            &["patient", "medications"][..],
        ),
    ];
    for (id, hook, prefetch_keys) in expected {
        let service = services.iter().find(|s| s["id"] == id).expect("listed");
        assert_eq!(service["hook"], hook, "{service:#}");
        let description = service["description"].as_str().expect("description");
        assert!(description.len() > 20, "{service:#}");
        assert!(service["title"].is_string(), "{service:#}");
        let prefetch = service["prefetch"].as_object().expect("prefetch object");
        let keys: HashSet<&str> = prefetch.keys().map(String::as_str).collect();
        assert_eq!(keys, prefetch_keys.iter().copied().collect(), "{service:#}");
        assert_eq!(
            prefetch["patient"], "Patient/{{context.patientId}}",
            "{service:#}"
        );
        assert_eq!(
            service["extension"]["org.cardinalcds.service"]["version"], "1.0.0",
            "{service:#}"
        );
    }
    let metformin = services
        .iter()
        .find(|s| s["id"] == "metformin-renal")
        .expect("listed");
    let egfr_query = metformin["prefetch"]["egfr"]
        .as_str()
        .expect("egfr template");
    assert!(
        egfr_query.starts_with("Observation?patient={{context.patientId}}&code="),
        "{egfr_query}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Starter services, fired and not fired
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_greeting_fires_with_the_patient_and_is_silent_without_one() {
    let server = TestServer::start().await;
    let mut request = request_fixture("patient-view-greeting");
    request["extension"] = json!({"org.cardinalcds.evaluationTime": "2026-01-01"});

    let response = call_ok(&server, "patient-greeting", &request).await;
    assert_no_empty_fields(&response);
    let card = single_card(&response);
    assert_eq!(card["summary"], "Now seeing: Maren Holt", "{card:#}");
    assert_eq!(card["indicator"], "info", "{card:#}");
    assert_eq!(card["source"]["label"], "Cardinal", "{card:#}");
    assert_explained(card, "patient-greeting", "greeting", "1.0.0");
    // Born 1964-09-05, seen on 2026-01-01: 61 completed years.
    assert_eq!(fact(card, "Age")["value"], "61", "{card:#}");
    assert!(detail(card).starts_with("Age 61."), "{card:#}");
    assert!(detail(card).contains("- Age: 61"), "{card:#}");

    // `null` in prefetch means "no such resource": no Patient, no greeting.
    request["prefetch"]["patient"] = Value::Null;
    let response = call_ok(&server, "patient-greeting", &request).await;
    assert_no_cards(&response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metformin_renal_is_critical_below_30_with_a_cancel_suggestion() {
    let server = TestServer::start().await;
    let response = call_ok(
        &server,
        "metformin-renal",
        &request_fixture("metformin-egfr-low"),
    )
    .await;
    assert_no_empty_fields(&response);
    let card = single_card(&response);
    assert_eq!(card["indicator"], "critical", "{card:#}");
    assert_eq!(
        card["summary"], "Metformin is contraindicated: eGFR below 30",
        "{card:#}"
    );
    assert!(
        card["source"]["label"]
            .as_str()
            .expect("source label")
            .contains("FDA"),
        "{card:#}"
    );
    assert_eq!(card["selectionBehavior"], "at-most-one", "{card:#}");

    let suggestions = card["suggestions"].as_array().expect("suggestions");
    assert_eq!(suggestions.len(), 1, "{card:#}");
    assert_eq!(suggestions[0]["isRecommended"], true, "{card:#}");
    assert!(suggestions[0]["uuid"].is_string(), "{card:#}");
    let actions = suggestions[0]["actions"].as_array().expect("actions");
    assert_eq!(actions.len(), 1, "{card:#}");
    assert_eq!(actions[0]["type"], "delete", "{card:#}");
    assert_eq!(
        actions[0]["resourceId"], "MedicationRequest/medrx-metformin",
        "{card:#}"
    );

    let reasons = card["overrideReasons"].as_array().expect("overrideReasons");
    assert!(
        !reasons.is_empty() && reasons.iter().all(|r| r["display"].is_string()),
        "{card:#}"
    );
    assert_eq!(card["links"][0]["type"], "absolute", "{card:#}");

    assert_explained(card, "metformin-renal", "metformin-egfr", "1.0.0");
    let order = fact(card, "Metformin order");
    assert_eq!(
        order["reference"], "MedicationRequest/medrx-metformin",
        "{card:#}"
    );
    // The latest of the two eGFR results (24 in 2026-10, not 52 in 2026-04).
    let egfr = fact(card, "eGFR");
    assert_eq!(egfr["reference"], "Observation/egfr-2026-10", "{card:#}");
    assert_eq!(egfr["value"], "24", "{card:#}");
    assert_eq!(egfr["origin"], "prefetch", "{card:#}");
    assert!(detail(card).contains("- eGFR: 24"), "{card:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metformin_renal_warns_between_30_and_45() {
    let server = TestServer::start().await;
    let response = call_ok(&server, "metformin-renal", &metformin_with_egfr(38)).await;
    let card = single_card(&response);
    assert_eq!(card["indicator"], "warning", "{card:#}");
    assert_eq!(
        card["summary"], "Starting metformin is not recommended: eGFR 30-45",
        "{card:#}"
    );
    assert!(card.get("suggestions").is_none(), "{card:#}");
    assert_explained(card, "metformin-renal", "metformin-egfr", "1.0.0");
    assert_eq!(fact(card, "eGFR")["value"], "38", "{card:#}");
    assert_eq!(
        fact(card, "Metformin order")["reference"],
        "MedicationRequest/medrx-metformin",
        "{card:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metformin_renal_is_silent_at_egfr_60_or_without_metformin() {
    let server = TestServer::start().await;
    let response = call_ok(&server, "metformin-renal", &metformin_with_egfr(60)).await;
    assert_no_cards(&response);

    // Same low eGFR as the firing fixture, but the draft order is lisinopril.
    let mut request = request_fixture("metformin-egfr-low");
    let order = &mut request["context"]["draftOrders"]["entry"][0]["resource"];
    order["id"] = json!("medrx-lisinopril");
    order["medicationCodeableConcept"] = json!({
        "coding": [{
            "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
            "code": "314076",
            "display": "lisinopril 10 MG Oral Tablet"
        }],
        "text": "lisinopril 10 MG Oral Tablet"
    });
    let response = call_ok(&server, "metformin-renal", &request).await;
    assert_no_cards(&response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warfarin_nsaid_warns_when_ibuprofen_is_ordered_on_active_warfarin() {
    let server = TestServer::start().await;
    let request = request_fixture("warfarin-active-ibuprofen-ordered");
    let response = call_ok(&server, "warfarin-nsaid", &request).await;
    assert_no_empty_fields(&response);
    let card = single_card(&response);
    assert_eq!(card["indicator"], "warning", "{card:#}");
    assert_eq!(
        card["summary"], "Bleeding risk: ibuprofen 600 MG Oral Tablet with warfarin",
        "{card:#}"
    );
    assert_eq!(
        card["source"]["label"], "Cardinal drug-drug interaction checks",
        "{card:#}"
    );
    let action = &card["suggestions"][0]["actions"][0];
    assert_eq!(action["type"], "delete", "{card:#}");
    assert_eq!(
        action["resourceId"], "MedicationRequest/medrx-ibuprofen-draft",
        "{card:#}"
    );
    assert_eq!(card["selectionBehavior"], "at-most-one", "{card:#}");

    assert_explained(card, "warfarin-nsaid", "warfarin-nsaid", "1.0.0");
    let warfarin = fact(card, "Warfarin");
    assert_eq!(
        warfarin["reference"], "MedicationRequest/medrx-warfarin-active",
        "{card:#}"
    );
    assert_eq!(warfarin["origin"], "prefetch", "{card:#}");
    let nsaid = fact(card, "NSAID");
    assert_eq!(
        nsaid["reference"], "MedicationRequest/medrx-ibuprofen-draft",
        "{card:#}"
    );
    assert!(
        detail(card).contains("- Warfarin: warfarin sodium 5 MG Oral Tablet"),
        "{card:#}"
    );
    assert!(
        detail(card).contains("- NSAID: ibuprofen 600 MG Oral Tablet"),
        "{card:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warfarin_nsaid_is_silent_without_active_warfarin() {
    let server = TestServer::start().await;
    let response = call_ok(
        &server,
        "warfarin-nsaid",
        &request_fixture("ibuprofen-ordered-no-warfarin"),
    )
    .await;
    assert_no_cards(&response);

    // Warfarin on record but stopped: not an active medication, no interaction.
    let mut request = request_fixture("warfarin-active-ibuprofen-ordered");
    let warfarin = &mut request["prefetch"]["medications"]["entry"][0]["resource"];
    assert_eq!(warfarin["id"], "medrx-warfarin-active", "fixture changed");
    warfarin["status"] = json!("stopped");
    let response = call_ok(&server, "warfarin-nsaid", &request).await;
    assert_no_cards(&response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_and_suggestion_uuids_are_unique_across_cards_and_calls() {
    let server = TestServer::start().await;
    let mut uuids = Vec::new();
    for _ in 0..2 {
        for (service, fixture) in [
            ("metformin-renal", "metformin-egfr-low"),
            ("warfarin-nsaid", "warfarin-active-ibuprofen-ordered"),
        ] {
            let response = call_ok(&server, service, &request_fixture(fixture)).await;
            for card in cards(&response) {
                uuids.push(card["uuid"].as_str().expect("card uuid").to_owned());
                for suggestion in card["suggestions"].as_array().expect("suggestions") {
                    uuids.push(
                        suggestion["uuid"]
                            .as_str()
                            .expect("suggestion uuid")
                            .to_owned(),
                    );
                }
            }
        }
    }
    // Two calls of each service, one card and one suggestion per call.
    assert_eq!(uuids.len(), 8, "{uuids:?}");
    for uuid in &uuids {
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "not a UUID: {uuid}");
    }
    let distinct: HashSet<&String> = uuids.iter().collect();
    assert_eq!(distinct.len(), uuids.len(), "repeated uuids: {uuids:?}");
}

// ---------------------------------------------------------------------------------------------
// 3. Evaluation time pinning
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_time_header_pins_evaluated_at_and_what_rules_see() {
    let server = TestServer::start().await;
    let response = client()
        .post(server.url("/cds-services/metformin-renal"))
        .header(EVALUATION_TIME_HEADER, "2026-01-01")
        .json(&request_fixture("metformin-egfr-low"))
        .send()
        .await
        .expect("POST");
    let (status, body) = read_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(
        explanation(single_card(&body))["evaluatedAt"],
        "2026-01-01T00:00:00Z"
    );

    // The rules' "today" moves too: the greeting's age is computed at the pinned date.
    let response = client()
        .post(server.url("/cds-services/patient-greeting"))
        .header(EVALUATION_TIME_HEADER, "2026-01-01")
        .json(&request_fixture("patient-view-greeting"))
        .send()
        .await
        .expect("POST");
    let (status, body) = read_json(response).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let card = single_card(&body);
    assert_eq!(explanation(card)["evaluatedAt"], "2026-01-01T00:00:00Z");
    assert_eq!(fact(card, "Age")["value"], "61", "{card:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluation_time_extension_pins_evaluated_at_in_utc() {
    let server = TestServer::start().await;
    let mut request = request_fixture("patient-view-greeting");
    // 08:00 at +02:00 is 06:00 UTC, on the patient's 66th birthday.
    request["extension"] = json!({"org.cardinalcds.evaluationTime": "2030-09-05T08:00:00+02:00"});
    let response = call_ok(&server, "patient-greeting", &request).await;
    let card = single_card(&response);
    assert_eq!(
        explanation(card)["evaluatedAt"],
        "2030-09-05T06:00:00Z",
        "{card:#}"
    );
    assert_eq!(fact(card, "Age")["value"], "66", "{card:#}");

    let mut request = request_fixture("metformin-egfr-low");
    request["extension"] = json!({"org.cardinalcds.evaluationTime": "2026-11-20T09:00:00Z"});
    let response = call_ok(&server, "metformin-renal", &request).await;
    assert_eq!(
        explanation(single_card(&response))["evaluatedAt"],
        "2026-11-20T09:00:00Z"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_evaluation_time_is_refused() {
    let server = TestServer::start().await;
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .header(EVALUATION_TIME_HEADER, "next tuesday")
        .json(&request_fixture("metformin-egfr-low"));
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &[EVALUATION_TIME_HEADER]);

    let mut body = request_fixture("metformin-egfr-low");
    body["extension"] = json!({"org.cardinalcds.evaluationTime": "2026-13-45"});
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["org.cardinalcds.evaluationTime"]);
}

// ---------------------------------------------------------------------------------------------
// 4. Feedback
// ---------------------------------------------------------------------------------------------

fn feedback_url(server: &TestServer, service: &str) -> String {
    server.url(&format!("/cds-services/{service}/feedback"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_accepts_accepted_and_overridden_entries() {
    let server = TestServer::start().await;
    // Feedback about a card this server really returned.
    let response = call_ok(
        &server,
        "metformin-renal",
        &request_fixture("metformin-egfr-low"),
    )
    .await;
    let card = single_card(&response);
    let card_uuid = card["uuid"].as_str().expect("card uuid");
    let suggestion_uuid = card["suggestions"][0]["uuid"]
        .as_str()
        .expect("suggestion uuid");

    let accepted = json!({"feedback": [{
        "card": card_uuid,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion_uuid}],
        "outcomeTimestamp": "2026-11-20T10:15:00Z"
    }]});
    let response = client()
        .post(feedback_url(&server, "metformin-renal"))
        .json(&accepted);
    let response = response.send().await.expect("POST");
    assert_eq!(response.status(), StatusCode::OK);

    let overridden = json!({"feedback": [{
        "card": card_uuid,
        "outcome": "overridden",
        "overrideReason": {
            "reason": {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": "MEDPREC",
                "display": "medical precaution"
            },
            "userComment": "Nephrology agreed to a trial at reduced dose"
        },
        "outcomeTimestamp": "2026-11-20T10:16:30Z"
    }]});
    let response = client()
        .post(feedback_url(&server, "metformin-renal"))
        .json(&overridden);
    let response = response.send().await.expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_refuses_incomplete_or_invalid_entries() {
    let server = TestServer::start().await;
    let url = feedback_url(&server, "metformin-renal");
    let entry = json!({
        "card": "0b9c5c44-5d34-4b0a-9a6a-2f4e0c1d8e11",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "6a2d1f7e-0c3b-4e59-8d4a-91b2c3d4e5f6"}],
        "outcomeTimestamp": "2026-11-20T10:15:00Z"
    });

    let mut missing_timestamp = entry.clone();
    missing_timestamp
        .as_object_mut()
        .expect("object")
        .remove("outcomeTimestamp");
    let request = client()
        .post(&url)
        .json(&json!({"feedback": [missing_timestamp]}));
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["feedback[0].outcomeTimestamp"]);
    assert_eq!(refusal.code, "required");

    let mut bad_outcome = entry.clone();
    bad_outcome["outcome"] = json!("ignored");
    let request = client()
        .post(&url)
        .json(&json!({"feedback": [bad_outcome]}));
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(
        &refusal.diagnostics,
        &["feedback[0].outcome", "accepted", "overridden"],
    );

    let mut no_suggestions = entry.clone();
    no_suggestions
        .as_object_mut()
        .expect("object")
        .remove("acceptedSuggestions");
    let request = client()
        .post(&url)
        .json(&json!({"feedback": [no_suggestions]}));
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["feedback[0].acceptedSuggestions"]);

    // The second entry is the bad one: the index points at it.
    let mut bad_timestamp = entry.clone();
    bad_timestamp["outcomeTimestamp"] = json!("20 Nov 2026");
    let request = client()
        .post(&url)
        .json(&json!({"feedback": [entry, bad_timestamp]}));
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(
        &refusal.diagnostics,
        &["feedback[1].outcomeTimestamp", "RFC 3339"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_for_an_unknown_service_is_404() {
    let server = TestServer::start().await;
    let body = json!({"feedback": [{
        "card": "0b9c5c44-5d34-4b0a-9a6a-2f4e0c1d8e11",
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T10:15:00Z"
    }]});
    let request = client()
        .post(feedback_url(&server, "no-such-service"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::NOT_FOUND).await;
    assert_mentions(&refusal.diagnostics, &["no-such-service"]);
    assert_eq!(refusal.code, "not-found");
}

// ---------------------------------------------------------------------------------------------
// 5. Bad input
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_is_400_with_line_and_column() {
    let server = TestServer::start().await;
    let body = "{\n  \"hook\": \"patient-view\",\n  \"hookInstance\": ,\n  \"context\": {}\n}";
    let parse_error = serde_json::from_str::<Value>(body).expect_err("body is malformed");
    let request = post_raw(&server, "/cds-services/patient-greeting", body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_eq!(parse_error.line(), 3);
    assert_mentions(
        &refusal.diagnostics,
        &[
            "not valid JSON",
            &format!(
                "line {}, column {}",
                parse_error.line(),
                parse_error.column()
            ),
        ],
    );
    assert_eq!(refusal.code, "structure");

    let request = post_raw(&server, "/cds-services/patient-greeting", "");
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["not valid JSON"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_an_object_is_400() {
    let server = TestServer::start().await;
    let body =
        serde_json::to_string(&json!([request_fixture("patient-view-greeting")])).expect("json");
    let request = post_raw(&server, "/cds-services/patient-greeting", body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["must be a JSON object"]);
    assert_eq!(refusal.code, "structure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_required_fields_are_400_naming_the_field() {
    let server = TestServer::start().await;
    for field in ["hook", "hookInstance", "context"] {
        let mut body = request_fixture("patient-view-greeting");
        body.as_object_mut().expect("object").remove(field);
        let request = client()
            .post(server.url("/cds-services/patient-greeting"))
            .json(&body);
        let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
        assert_mentions(&refusal.diagnostics, &[&format!("`{field}`"), "missing"]);
        assert_eq!(refusal.code, "required", "{field}");
    }
    // A required context field of the hook.
    let mut body = request_fixture("patient-view-greeting");
    body["context"]
        .as_object_mut()
        .expect("object")
        .remove("patientId");
    let request = client()
        .post(server.url("/cds-services/patient-greeting"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["`context.patientId`", "missing"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_of_the_wrong_type_is_400() {
    let server = TestServer::start().await;
    for context in [json!("Patient/pat-7"), json!(["Patient/pat-7"]), json!(42)] {
        let mut body = request_fixture("patient-view-greeting");
        body["context"] = context;
        let request = client()
            .post(server.url("/cds-services/patient-greeting"))
            .json(&body);
        let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
        assert_mentions(&refusal.diagnostics, &["`context`", "JSON object"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_sign_without_draft_orders_is_400() {
    let server = TestServer::start().await;
    let mut body = request_fixture("metformin-egfr-low");
    body["context"]
        .as_object_mut()
        .expect("object")
        .remove("draftOrders");
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["`context.draftOrders`", "missing"]);

    // Present but not a Bundle.
    let mut body = request_fixture("metformin-egfr-low");
    body["context"]["draftOrders"] = json!({"resourceType": "MedicationRequest", "id": "x"});
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(&refusal.diagnostics, &["context.draftOrders", "Bundle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_that_is_not_a_reference_is_400() {
    let server = TestServer::start().await;
    for user_id in ["pract-1", "Practitioner/", "/pract-1"] {
        let mut body = request_fixture("patient-view-greeting");
        body["context"]["userId"] = json!(user_id);
        let request = client()
            .post(server.url("/cds-services/patient-greeting"))
            .json(&body);
        let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
        assert_mentions(&refusal.diagnostics, &["`context.userId`", "Type/id"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_the_service_does_not_answer_is_400() {
    let server = TestServer::start().await;
    let body = request_fixture("patient-view-greeting");
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(
        &refusal.diagnostics,
        &["patient-view", "metformin-renal", "order-sign"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_authorization_without_fhir_server_is_400() {
    let server = TestServer::start().await;
    let mut body = request_fixture("patient-view-greeting");
    body.as_object_mut().expect("object").remove("fhirServer");
    body["fhirAuthorization"] = json!({
        "access_token": "eyJhbGciOiJSUzM4NCJ9.secret-access-token-4711",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/Patient.read patient/Observation.read",
        "subject": "cardinal-cds"
    });
    let request = client()
        .post(server.url("/cds-services/patient-greeting"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
    assert_mentions(
        &refusal.diagnostics,
        &["`fhirServer`", "`fhirAuthorization`"],
    );
    assert!(
        !refusal.text.contains("secret-access-token"),
        "token echoed: {}",
        refusal.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_404_even_with_a_bad_body() {
    let server = TestServer::start().await;
    let request = client()
        .post(server.url("/cds-services/no-such-service"))
        .json(&request_fixture("patient-view-greeting"));
    let refusal = expect_refusal(request, StatusCode::NOT_FOUND).await;
    assert_mentions(&refusal.diagnostics, &["no-such-service"]);
    assert_eq!(refusal.code, "not-found");

    let request = post_raw(&server, "/cds-services/no-such-service", "{not json");
    let refusal = expect_refusal(request, StatusCode::NOT_FOUND).await;
    assert_mentions(&refusal.diagnostics, &["no-such-service"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_with_an_operation_outcome() {
    let server = TestServer::start().await;
    for path in [
        "/no-such-path",
        "/cds-services/metformin-renal/feedback/extra",
        "/",
    ] {
        let refusal = expect_refusal(client().get(server.url(path)), StatusCode::NOT_FOUND).await;
        assert_mentions(&refusal.diagnostics, &["/cds-services"]);
        assert_eq!(refusal.code, "not-found", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413() {
    let server = TestServer::start_with(Config {
        rules_dir: project_path("rules"),
        max_body_bytes: 1024,
        ..Config::default().development()
    })
    .await;
    // The same request under the limit is served: the 413 is about size alone.
    let small = request_fixture("patient-view-greeting");
    let small_len = serde_json::to_vec(&small).expect("json").len();
    assert!(small_len < 1024, "fixture is {small_len} bytes");
    let (status, body) = post_json(&server, "/cds-services/patient-greeting", &small).await;
    assert_eq!(status, StatusCode::OK, "{body:#}");

    let mut large = small.clone();
    large["prefetch"]["patient"]["text"] = json!({"status": "generated", "div": "x".repeat(2048)});
    let request = client()
        .post(server.url("/cds-services/patient-greeting"))
        .json(&large);
    let refusal = expect_refusal(request, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_mentions(&refusal.diagnostics, &["size limit"]);
    assert_eq!(refusal.code, "too-long");

    let feedback = json!({"feedback": [{
        "card": "x".repeat(2048),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-20T10:15:00Z"
    }]});
    let request = client()
        .post(feedback_url(&server, "patient-greeting"))
        .json(&feedback);
    expect_refusal(request, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_method_is_405_with_allow() {
    let server = TestServer::start().await;
    let cases = [
        (Method::DELETE, "/cds-services", "GET"),
        (Method::GET, "/cds-services/metformin-renal", "POST"),
        (
            Method::PUT,
            "/cds-services/metformin-renal/feedback",
            "POST",
        ),
    ];
    for (method, path, allowed) in cases {
        let request = client().request(method.clone(), server.url(path));
        let refusal = expect_refusal(request, StatusCode::METHOD_NOT_ALLOWED).await;
        assert_mentions(&refusal.diagnostics, &[method.as_str()]);
        assert_eq!(refusal.code, "not-supported", "{method} {path}");
        // RFC 9110 §15.5.6: a 405 must say which methods the resource supports.
        let allow = refusal
            .headers
            .get(header::ALLOW)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            allow.contains(allowed),
            "{method} {path}: Allow header is {allow:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_messages_never_echo_patient_data() {
    const NAME: &str = "Zebulon Quixwell-Marchetti";
    let server = TestServer::start().await;
    let greeting = request_fixture("patient-view-greeting");
    let metformin = request_fixture("metformin-egfr-low");

    let mut cases: Vec<(&str, Value, &str)> = Vec::new();
    let mut body = greeting.clone();
    body["context"]["patientId"] = json!({"name": [{"text": NAME}]});
    cases.push(("patient-greeting", body, "context.patientId"));
    let mut body = greeting.clone();
    body["context"]["userId"] = json!(NAME);
    cases.push(("patient-greeting", body, "context.userId"));
    let mut body = greeting.clone();
    body["context"]["encounterId"] = json!([NAME]);
    cases.push(("patient-greeting", body, "context.encounterId"));
    let mut body = greeting.clone();
    body["prefetch"]["patient"] = json!(format!("Patient {NAME}, born 1964-09-05"));
    cases.push(("patient-greeting", body, "prefetch.patient"));
    let mut body = metformin.clone();
    body["context"]["draftOrders"] = json!(format!("metformin for {NAME}"));
    cases.push(("metformin-renal", body, "context.draftOrders"));
    let mut body = metformin;
    body["context"]["draftOrders"]["entry"] = json!({"patient": NAME});
    cases.push(("metformin-renal", body, "context.draftOrders.entry"));

    for (service, body, field) in cases {
        let request = client()
            .post(server.url(&format!("/cds-services/{service}")))
            .json(&body);
        let refusal = expect_refusal(request, StatusCode::BAD_REQUEST).await;
        assert_mentions(&refusal.diagnostics, &[field]);
        for part in NAME.split(['-', ' ']) {
            assert!(
                !refusal.text.contains(part),
                "{part:?} echoed: {}",
                refusal.text
            );
        }
    }

    // Malformed JSON around the name: the position is reported, not the text.
    let body =
        format!("{{\"hook\": \"patient-view\", \"context\": {{\"name\": \"{NAME}\" \"x\"}}}}");
    let refusal = expect_refusal(
        post_raw(&server, "/cds-services/patient-greeting", body),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(!refusal.text.contains("Quixwell"), "{}", refusal.text);
}

// ---------------------------------------------------------------------------------------------
// 6. CORS
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_authorization_and_content_type() {
    let server = TestServer::start().await;
    let origin = "https://ehr.example.org";
    let response = client()
        .request(Method::OPTIONS, server.url("/cds-services/metformin-renal"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            "authorization,content-type",
        )
        .send()
        .await
        .expect("OPTIONS");
    assert!(response.status().is_success(), "{}", response.status());
    let value = |name: header::HeaderName| {
        response
            .headers()
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", response.headers()))
    };
    let allow_origin = value(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    assert!(
        allow_origin == "*" || allow_origin == origin,
        "{allow_origin}"
    );
    let allow_headers = value(header::ACCESS_CONTROL_ALLOW_HEADERS);
    assert!(allow_headers.contains("authorization"), "{allow_headers}");
    assert!(allow_headers.contains("content-type"), "{allow_headers}");
    let allow_methods = value(header::ACCESS_CONTROL_ALLOW_METHODS);
    assert!(allow_methods.contains("post"), "{allow_methods}");

    // The actual cross-origin call carries the header too.
    let response = client()
        .get(server.url("/cds-services"))
        .header(header::ORIGIN, origin)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "{:?}",
        response.headers()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Health
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_json_on_the_admin_listener_only() {
    let server = TestServer::start().await;
    let admin_json = |path: &'static str| {
        let url = server.admin_url(path);
        async move { read_json(client().get(url).send().await.expect("GET")).await }
    };
    let (status, body) = admin_json("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));

    let (status, body) = admin_json("/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "ready", "{body:#}");
    assert_eq!(body["services"], 20, "{body:#}");
    assert_eq!(body["rules"], 20, "{body:#}");
    assert_eq!(body["audit"]["status"], "writing", "{body:#}");

    // Not on the EHR-facing port.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = get_json(&server, path).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{path} on the EHR-facing port"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Sandbox
// ---------------------------------------------------------------------------------------------

const SANDBOX_RULES: &str = "tests/fixtures/rules-sandbox";

async fn call_sandbox(server: &TestServer) -> Value {
    call_ok(server, "sandbox", &request_fixture("sandbox-patient-view")).await
}

fn card_with_summary<'a>(response: &'a Value, prefix: &str) -> &'a Value {
    cards(response)
        .iter()
        .find(|c| c["summary"].as_str().is_some_and(|s| s.starts_with(prefix)))
        .unwrap_or_else(|| panic!("no card {prefix:?}: {response:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_contains_misbehaving_rules() {
    let server = TestServer::start_with_rules(&project_path(SANDBOX_RULES)).await;
    let response = call_sandbox(&server).await;

    // Exactly the two well-behaved rules fired.
    let summaries: Vec<&str> = cards(&response)
        .iter()
        .filter_map(|c| c["summary"].as_str())
        .collect();
    assert_eq!(summaries.len(), 2, "{response:#}");
    card_with_summary(&response, "mutator ran");
    let reader = card_with_summary(&response, "reader:");
    // a-mutator's changes were not seen by f-reader.
    assert_eq!(
        reader["summary"], "reader: 2 observations, gender male, born 1971-07-30, 1 names",
        "{reader:#}"
    );
    assert_explained(reader, "sandbox", "f-reader", "2.3.4");
    assert_eq!(
        fact(reader, "Observations seen")["value"],
        "2",
        "{reader:#}"
    );
    let uuids: HashSet<&str> = cards(&response)
        .iter()
        .filter_map(|c| c["uuid"].as_str())
        .collect();
    assert_eq!(uuids.len(), 2, "card uuids must differ: {response:#}");

    // Stopped by its operation limit, whatever the machine's load.
    let looped = diagnostic(&response, "b-infinite-loop");
    assert_eq!(looped["kind"], "operations", "{looped:#}");
    let runtime = diagnostic(&response, "c-runtime-error");
    assert_eq!(runtime["kind"], "runtime", "{runtime:#}");
    assert_eq!(runtime["line"], 3, "{runtime:#}");
    assert!(
        runtime["message"]
            .as_str()
            .expect("message")
            .contains("no_such_function"),
        "{runtime:#}"
    );
    assert_eq!(
        diagnostic(&response, "d-deep-recursion")["kind"],
        "size-limit"
    );
    assert_eq!(diagnostic(&response, "e-huge-string")["kind"], "size-limit");
    let invalid = diagnostic(&response, "g-invalid-card");
    assert_eq!(invalid["kind"], "runtime", "{invalid:#}");
    assert!(
        invalid["message"]
            .as_str()
            .expect("message")
            .contains("indicator"),
        "{invalid:#}"
    );

    // h-not-met's unmet `require` is neither a card nor a failure; the others fired cleanly.
    let failed: HashSet<&str> = diagnostics(&response)
        .iter()
        .filter_map(|d| d["ruleId"].as_str())
        .collect();
    assert_eq!(
        failed,
        HashSet::from([
            "b-infinite-loop",
            "c-runtime-error",
            "d-deep-recursion",
            "e-huge-string",
            "g-invalid-card"
        ]),
        "{response:#}"
    );
    assert!(!summaries.contains(&"never"), "{response:#}");

    // The server is still healthy, and a second call sees the same untouched data.
    let again = call_sandbox(&server).await;
    assert_eq!(
        card_with_summary(&again, "reader:")["summary"],
        reader["summary"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_operation_limit_stops_the_loop() {
    let server = TestServer::start_with(Config {
        rules_dir: project_path(SANDBOX_RULES),
        sandbox: SandboxLimits {
            max_operations: 10_000,
            ..SandboxLimits::default()
        },
        ..Config::default().development()
    })
    .await;
    let response = call_sandbox(&server).await;
    let looped = diagnostic(&response, "b-infinite-loop");
    assert_eq!(looped["kind"], "operations", "{looped:#}");
    assert!(
        looped["message"]
            .as_str()
            .is_some_and(|m| m.contains("10000 operations")),
        "{looped:#}"
    );
    card_with_summary(&response, "reader: 2 observations");
}

// ---------------------------------------------------------------------------------------------
// 9. Broken rules
// ---------------------------------------------------------------------------------------------

const BROKEN_RULES: &str = "tests/fixtures/rules-broken";
const BROKEN_LOCATIONS: [&str; 3] = ["broken.rhai:3:14", "misspelt.rhai:2:9", "service.toml:5:1"];

fn assert_lists_broken_locations(text: &str) {
    for location in BROKEN_LOCATIONS {
        assert!(text.contains(location), "{location} not reported:\n{text}");
    }
    assert!(
        !text.contains("good/"),
        "the correct service was reported:\n{text}"
    );
}

fn cardinal_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cardinal"));
    command
        .args(args)
        .current_dir(project_path(""))
        .env_remove("CARDINAL_CONFIG")
        .stdin(Stdio::null());
    command
}

/// Runs a command that must exit on its own; a server that starts serving instead is killed
/// (a watchdog against hanging the test run, not a timing assertion).
fn run_to_exit(mut command: Command) -> (ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cardinal");
    let mut stderr = child.stderr.take().expect("stderr pipe");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        let _ = tx.send(text);
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(text) => (child.wait().expect("wait"), text),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cardinal kept running: it should have refused to start");
        }
    }
}

#[test]
fn loading_broken_rules_fails_with_every_location() {
    let config = Config {
        rules_dir: project_path(BROKEN_RULES),
        ..Config::default().development()
    };
    let errors = match Cardinal::load(config) {
        Ok(_) => panic!("broken rules loaded"),
        Err(errors) => errors,
    };
    assert_eq!(errors.0.len(), 3, "{errors}");
    assert_lists_broken_locations(&errors.to_string());
}

#[test]
fn serve_refuses_to_start_on_broken_rules() {
    let dir = project_path(BROKEN_RULES);
    let dir = dir.to_str().expect("utf-8 path");
    let command = cardinal_command(&["serve", "--rules", dir, "--listen", "127.0.0.1:0"]);
    let (status, stderr) = run_to_exit(command);
    assert!(!status.success(), "{status}\n{stderr}");
    assert_lists_broken_locations(&stderr);
    assert!(stderr.contains("refusing to start"), "{stderr}");
}

#[test]
fn check_reports_broken_rules_and_passes_the_shipped_ones() {
    let output = cardinal_command(&["check", BROKEN_RULES])
        .output()
        .expect("run cardinal check");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}\n{stderr}", output.status);
    assert_lists_broken_locations(&stderr);
    assert!(stderr.contains("3 error(s)"), "{stderr}");

    let output = cardinal_command(&["check", "rules"])
        .output()
        .expect("run cardinal check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("20 services, 20 rules"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_that_was_not_provided_is_412_naming_the_keys() {
    let server = TestServer::start().await;
    // No prefetch at all, and no `fhirServer` to fetch it from: both declared keys are named.
    // (Fetching from a FHIR server is tested in tests/prefetch.rs.)
    let mut body = request_fixture("metformin-egfr-low");
    body.as_object_mut().expect("object").remove("prefetch");
    body.as_object_mut().expect("object").remove("fhirServer");
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::PRECONDITION_FAILED).await;
    assert_mentions(&refusal.diagnostics, &["egfr, patient", "not provided"]);
    assert_eq!(refusal.code, "incomplete");

    // An OperationOutcome in a key (the EHR's prefetch failed) counts as not provided.
    let mut body = request_fixture("metformin-egfr-low");
    body.as_object_mut().expect("object").remove("fhirServer");
    body["prefetch"]["egfr"] = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout", "diagnostics": "search timed out"}]
    });
    let request = client()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body);
    let refusal = expect_refusal(request, StatusCode::PRECONDITION_FAILED).await;
    assert_mentions(&refusal.diagnostics, &["prefetch egfr"]);
    assert!(
        !refusal.diagnostics.contains("patient,"),
        "{}",
        refusal.diagnostics
    );

    // `null` means "no such resource": provided, so the call is evaluated (and, without an eGFR,
    // the rule asks for one).
    let mut body = request_fixture("metformin-egfr-low");
    body["prefetch"]["egfr"] = Value::Null;
    let response = call_ok(&server, "metformin-renal", &body).await;
    assert_eq!(
        response["cards"][0]["summary"], "Check kidney function: no eGFR in the past 12 months",
        "{response:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_patient_is_read_and_the_newest_result_used() {
    let server = TestServer::start().await;
    let mut body = request_fixture("metformin-egfr-low");
    // 400 older eGFR results, all normal, around the two in the fixture: only the newest counts.
    let entries = body["prefetch"]["egfr"]["entry"]
        .as_array_mut()
        .expect("egfr entries");
    for i in 0..400 {
        entries.push(json!({"resource": {
            "resourceType": "Observation",
            "id": format!("egfr-old-{i}"),
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3",
                "display": "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in Serum or Plasma by Creatinine-based formula (MDRD)"}]},
            "subject": {"reference": "Patient/pat-1"},
            "effectiveDateTime": format!("20{:02}-{:02}-15T08:00:00Z", 10 + i % 15, 1 + i % 12),
            "valueQuantity": {"value": 70 + i % 20, "unit": "mL/min/{1.73_m2}",
                "system": "http://unitsofmeasure.org", "code": "mL/min/{1.73_m2}"}
        }}));
    }
    let size = serde_json::to_vec(&body).expect("json").len();
    assert!(
        size > 100 * 1024,
        "the request should be large, is {size} bytes"
    );
    let response = call_ok(&server, "metformin-renal", &body).await;
    let cards = response["cards"].as_array().expect("cards");
    assert_eq!(cards.len(), 1, "{response:#}");
    assert_eq!(cards[0]["indicator"], "critical");
    let facts = &cards[0]["extension"][EXPLANATION]["facts"];
    let egfr = facts
        .as_array()
        .expect("facts")
        .iter()
        .find(|f| f["name"] == "eGFR")
        .expect("the eGFR fact");
    assert_eq!(egfr["reference"], "Observation/egfr-2026-10", "{facts:#}");
}
