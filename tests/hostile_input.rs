//! No input can crash Cardinal: hostile requests against a real server (HTTP and gRPC on one port),
//! each class answered with a refusal that names the field and the limit and quotes at most a short
//! prefix of what the caller sent (or with a plain 200 where the input is legal), and the server still
//! answering a normal call afterwards.
//!
//! Classes: CDS Hooks 1.0 `{"resource": ...}` wrappers ~4,000 deep (52 KB); Bundles ~3,000 deep with
//! `entry` before `resourceType` (the re-read path); 100,000 nested arrays in `context` and inside a
//! resource field; a ~65 KB gRPC `CallHookRequest` of deep `prefetch_json`; the same nesting in a FHIR
//! server's answer to a prefetch fetch; non-ASCII dates in every dated field Cardinal indexes, in
//! `prefetch` and in `context.draftOrders`; 65 KB service ids, hooks, prefetch keys and methods; deep
//! feedback.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::BTreeMap;

use cardinal::config::Config;
use cardinal::prefetch::PrefetchConfig;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::{TestServer, project_path, request_fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tonic::Code;

/// The order-sign service of CDC opioid Recommendations 4 and 5: keys `patient`, `conditions`,
/// `encounters`, `medicationRequests`.
const OPIOID_SERVICE: &str = "opioidcds-04-05";
/// The longest a refusal may be: the fixed wording plus a short excerpt of a caller's value.
const MAX_MESSAGE: usize = 300;
/// The nesting limits Cardinal documents in its messages.
const NESTING_MESSAGE: &str = "nests Bundles or resource wrappers deeper than 16 levels";
const JSON_DEPTH_MESSAGE: &str = "nests JSON deeper than 64 levels";

// ---------------------------------------------------------------------------------------------
// Inputs
// ---------------------------------------------------------------------------------------------

/// The opioid pack's own test request for Recommendation 5 (a fentanyl order, real FHIR).
fn opioid_request() -> Value {
    let path = project_path("rules/opioid-cds/tests/rec-04-05-mme-greater-than-fifty.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    case["request"].clone()
}

/// A request body whose `pointer` (a JSON pointer) holds `raw` as JSON text: values too deep for
/// `serde_json::Value` are spliced in as text.
fn body_with(mut request: Value, pointer: &str, raw: &str) -> String {
    const MARK: &str = "\"@@hostile@@\"";
    *request
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("no {pointer} in the request")) = json!("@@hostile@@");
    let text = request.to_string();
    assert_eq!(text.matches(MARK).count(), 1);
    text.replace(MARK, raw)
}

/// `levels` CDS Hooks 1.0 wrappers around a MedicationRequest: 13 bytes a level.
fn deep_wrappers(levels: usize) -> String {
    let resource =
        r#"{"resourceType":"MedicationRequest","id":"m1","status":"active","intent":"order"}"#;
    "{\"resource\":".repeat(levels) + resource + "}".repeat(levels).as_str()
}

/// `levels` searchset Bundles, each the only entry of the one around it, `entry` written before
/// `resourceType`.
fn deep_bundles(levels: usize) -> String {
    let resource = r#"{"resourceType":"Condition","id":"c1","code":{"coding":[{"system":"http://snomed.info/sct","code":"38341003"}]}}"#;
    "{\"entry\":[{\"resource\":".repeat(levels)
        + resource
        + "}],\"resourceType\":\"Bundle\",\"type\":\"searchset\"}"
            .repeat(levels)
            .as_str()
}

/// `levels` nested arrays.
fn deep_arrays(levels: usize) -> String {
    "[".repeat(levels) + "]".repeat(levels).as_str()
}

// ---------------------------------------------------------------------------------------------
// Calls and checks
// ---------------------------------------------------------------------------------------------

async fn post(server: &TestServer, path: &str, body: String) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        // Not the error itself: it quotes the URL, which can be 65 KB here.
        .unwrap_or_else(|e| panic!("HTTP call failed: {:.300}", e.to_string()));
    let status = response.status();
    (status, response.text().await.expect("HTTP body"))
}

async fn call(server: &TestServer, service: &str, body: String) -> (StatusCode, String) {
    post(server, &format!("/cds-services/{service}"), body).await
}

/// The diagnostics of an OperationOutcome answer, checked to be short.
fn diagnostics(body: &str) -> String {
    let outcome: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:.300}"));
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{body:.300}");
    let message = outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_else(|| panic!("no diagnostics: {body:.300}"))
        .to_owned();
    assert!(
        message.chars().count() <= MAX_MESSAGE,
        "{} chars: {message:.300}",
        message.chars().count()
    );
    message
}

/// A 4xx OperationOutcome whose message is exactly `expected`.
fn assert_refused(status: StatusCode, body: &str, want_status: StatusCode, expected: &str) {
    assert_eq!(status, want_status, "{body:.300}");
    assert_eq!(diagnostics(body), expected);
}

/// The server still evaluates a normal call: metformin at an eGFR of 24 gives a card.
async fn assert_still_serves(server: &TestServer) {
    let body = request_fixture("metformin-egfr-low").to_string();
    let (status, text) = call(server, "metformin-renal", body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    let response: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        response["cards"].as_array().is_some_and(|c| !c.is_empty()),
        "{text:.300}"
    );
}

async fn grpc(server: &TestServer) -> CdsHooksClient<tonic::transport::Channel> {
    CdsHooksClient::new(server.grpc_channel().await)
}

/// The opioid request as a `CallHookRequest`, with `prefetch_json` as given.
fn grpc_request(
    prefetch_json: BTreeMap<String, String>,
    context_json: String,
) -> proto::CallHookRequest {
    let request = opioid_request();
    proto::CallHookRequest {
        service_id: OPIOID_SERVICE.into(),
        hook: "order-sign".into(),
        hook_instance: request["hookInstance"].as_str().unwrap_or_default().into(),
        context_json,
        prefetch_json: prefetch_json.into_iter().collect(),
        ..proto::CallHookRequest::default()
    }
}

/// The opioid request's own prefetch as gRPC text.
fn grpc_prefetch() -> BTreeMap<String, String> {
    opioid_request()["prefetch"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect()
}

fn assert_status(
    result: Result<tonic::Response<proto::CallHookResponse>, tonic::Status>,
    code: Code,
    expected: &str,
) {
    let status = result.err().unwrap_or_else(|| panic!("expected {code:?}"));
    assert_eq!(status.code(), code, "{:.300}", status.message());
    assert_eq!(status.message(), expected);
}

// ---------------------------------------------------------------------------------------------
// Nesting
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deep_cds_hooks_1_0_wrappers_are_refused() {
    let server = TestServer::start().await;
    let deep = deep_wrappers(4_000);
    assert!(deep.len() > 52_000);
    let body = body_with(opioid_request(), "/prefetch/medicationRequests", &deep);
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_refused(
        status,
        &text,
        StatusCode::BAD_REQUEST,
        &format!("`prefetch.medicationRequests` {NESTING_MESSAGE}"),
    );
    // The same wrappers as a draft order: not indexed (draft orders are read leniently), not a crash.
    let body = body_with(
        opioid_request(),
        "/context/draftOrders/entry/0/resource",
        &deep_wrappers(40),
    );
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn deep_bundles_with_entry_first_are_refused() {
    let server = TestServer::start().await;
    let body = body_with(
        opioid_request(),
        "/prefetch/conditions",
        &deep_bundles(3_000),
    );
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_refused(
        status,
        &text,
        StatusCode::BAD_REQUEST,
        &format!("`prefetch.conditions` {NESTING_MESSAGE}"),
    );
    // 16 levels, as deep as Cardinal reads, is a legal request: its Condition is indexed.
    let body = body_with(opioid_request(), "/prefetch/conditions", &deep_bundles(16));
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn deep_json_in_context_and_in_resources_is_refused() {
    let server = TestServer::start().await;
    let arrays = deep_arrays(100_000);
    let cases = [
        (
            "/context/encounterId",
            "`context` nests JSON deeper than 64 levels",
        ),
        (
            "/context/draftOrders/entry/0/resource/dosageInstruction",
            "`context` nests JSON deeper than 64 levels",
        ),
        ("/extension", "`extension` nests JSON deeper than 64 levels"),
        (
            "/prefetch/patient/extension/0/extension",
            "`prefetch.patient` nests JSON deeper than 64 levels",
        ),
        (
            "/prefetch/patient/gender",
            "`prefetch.patient` nests JSON deeper than 64 levels",
        ),
    ];
    for (pointer, expected) in cases {
        let mut request = opioid_request();
        request["extension"] = json!({"x": 1});
        let body = body_with(request, pointer, &arrays);
        let (status, text) = call(&server, OPIOID_SERVICE, body).await;
        assert_refused(status, &text, StatusCode::BAD_REQUEST, expected);
    }
    // Inside a resource of a searchset Bundle.
    let observation = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{{"resourceType":"Condition","id":"c1","note":[{{"text":"x"}}],"evidence":{arrays}}}}}]}}"#
    );
    let body = body_with(opioid_request(), "/prefetch/conditions", &observation);
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_refused(
        status,
        &text,
        StatusCode::BAD_REQUEST,
        &format!("`prefetch.conditions` {JSON_DEPTH_MESSAGE}"),
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn deep_feedback_is_refused() {
    let server = TestServer::start().await;
    let body = format!(
        r#"{{"feedback":[{{"card":"b2c3a1d0-0000-4000-8000-000000000001","outcome":"overridden","outcomeTimestamp":"2026-11-25T10:00:00Z","overrideReason":{{"reason":{}}}}}]}}"#,
        deep_arrays(100_000)
    );
    let (status, text) = post(&server, "/cds-services/metformin-renal/feedback", body).await;
    assert_refused(
        status,
        &text,
        StatusCode::BAD_REQUEST,
        "`feedback` nests JSON deeper than 64 levels",
    );
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_large_grpc_request_with_deep_prefetch_is_refused() {
    let server = TestServer::start().await;
    let mut client = grpc(&server).await;
    let context = opioid_request()["context"].to_string();

    let mut prefetch = grpc_prefetch();
    prefetch.insert("medicationRequests".into(), deep_wrappers(5_000));
    let request = grpc_request(prefetch, context.clone());
    let size = prost::Message::encoded_len(&request);
    assert!((64_000..80_000).contains(&size), "{size} bytes");
    assert_status(
        client.call_hook(request).await,
        Code::InvalidArgument,
        &format!("`prefetch_json[medicationRequests]` {NESTING_MESSAGE}"),
    );

    let mut prefetch = grpc_prefetch();
    prefetch.insert("conditions".into(), deep_bundles(3_000));
    assert_status(
        client
            .call_hook(grpc_request(prefetch, context.clone()))
            .await,
        Code::InvalidArgument,
        &format!("`prefetch_json[conditions]` {NESTING_MESSAGE}"),
    );

    let mut prefetch = grpc_prefetch();
    prefetch.insert(
        "patient".into(),
        format!(
            r#"{{"resourceType":"Patient","id":"p1","extension":{}}}"#,
            deep_arrays(100_000)
        ),
    );
    assert_status(
        client
            .call_hook(grpc_request(prefetch, context.clone()))
            .await,
        Code::InvalidArgument,
        &format!("`prefetch_json[patient]` {JSON_DEPTH_MESSAGE}"),
    );

    let deep_context = body_with(
        opioid_request()["context"].clone(),
        "/encounterId",
        &deep_arrays(100_000),
    );
    assert_status(
        client
            .call_hook(grpc_request(grpc_prefetch(), deep_context))
            .await,
        Code::InvalidArgument,
        &format!("`context_json` {JSON_DEPTH_MESSAGE}"),
    );

    // The same connection still evaluates a normal call.
    let ok = client
        .call_hook(grpc_request(grpc_prefetch(), context))
        .await
        .map(tonic::Response::into_inner);
    assert!(ok.is_ok_and(|r| !r.cards.is_empty()));
    assert_still_serves(&server).await;
}

/// A FHIR server that answers every GET with `answer`, on 127.0.0.1:0.
async fn fhir_server_answering(answer: String) -> (String, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(move || {
        let answer = answer.clone();
        async move { ([("content-type", "application/fhir+json")], answer) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/fhir"), handle)
}

#[tokio::test]
async fn a_deep_answer_from_the_fhir_server_is_not_used() {
    let mut fhir_servers = Vec::new();
    for answer in [
        deep_bundles(3_000),
        deep_wrappers(4_000),
        format!(
            r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"resource":{{"resourceType":"MedicationRequest","id":"m1","note":{}}}}}]}}"#,
            deep_arrays(100_000)
        ),
    ] {
        fhir_servers.push(fhir_server_answering(answer).await);
    }
    let server = TestServer::start_with(Config {
        rules_dir: project_path("rules"),
        // A generous deadline: the refusal under test, not the clock, decides.
        prefetch: PrefetchConfig {
            deadline_ms: 30_000,
            allowed_fhir_servers: fhir_servers.iter().map(|(base, _)| base.clone()).collect(),
            ..PrefetchConfig::default()
        },
        ..Config::default()
    })
    .await;
    for (fhir_base, fhir) in fhir_servers {
        let mut request = opioid_request();
        request["fhirServer"] = json!(fhir_base);
        if let Some(prefetch) = request["prefetch"].as_object_mut() {
            prefetch.remove("medicationRequests");
        }
        let (status, text) = call(&server, OPIOID_SERVICE, request.to_string()).await;
        // The depth refusal is logged; the caller gets the one fixed reason for anything the
        // FHIR server did.
        assert_refused(
            status,
            &text,
            StatusCode::PRECONDITION_FAILED,
            "required FHIR data could not be obtained: prefetch medicationRequests not provided by the EHR and not fetched: it could not be obtained from the FHIR server",
        );
        fhir.abort();
    }
    assert_still_serves(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// Dates that are not dates: multi-byte characters at the positions Cardinal reads, non-ASCII
/// digits, a NUL, out-of-range times.
const BAD_DATES: &[&str] = &[
    "2023é-",
    "2023é-01",
    "2023-é5",
    "2023-05é01",
    "2023-05-0é",
    "2023-05-01é",
    "2023-05-01Té0:00:00Z",
    "2023-05-01T10:00:00+05:3é",
    "é023-05-01",
    "2023年5月1日",
    "２０２３-０５-０１",
    "😀😀😀😀😀😀😀",
    "2023\u{0}05",
    "2023-05-01T25:61:61Z",
];

/// Every (resource type, dated field) Cardinal indexes (`src/fhir/summary.rs`); `true` for a
/// Period, whose `start` counts.
const DATED_FIELDS: &[(&str, &str, bool)] = &[
    ("Observation", "effectiveDateTime", false),
    ("Observation", "effectivePeriod", true),
    ("Observation", "effectiveInstant", false),
    ("Observation", "issued", false),
    ("DiagnosticReport", "effectiveDateTime", false),
    ("DiagnosticReport", "effectivePeriod", true),
    ("DiagnosticReport", "issued", false),
    ("Condition", "onsetDateTime", false),
    ("Condition", "onsetPeriod", true),
    ("Condition", "recordedDate", false),
    ("AllergyIntolerance", "onsetDateTime", false),
    ("AllergyIntolerance", "recordedDate", false),
    ("MedicationRequest", "authoredOn", false),
    ("ServiceRequest", "authoredOn", false),
    ("DeviceRequest", "authoredOn", false),
    ("MedicationStatement", "effectiveDateTime", false),
    ("MedicationStatement", "effectivePeriod", true),
    ("MedicationStatement", "dateAsserted", false),
    ("MedicationAdministration", "effectiveDateTime", false),
    ("MedicationDispense", "whenHandedOver", false),
    ("MedicationDispense", "whenPrepared", false),
    ("Procedure", "performedDateTime", false),
    ("Procedure", "performedPeriod", true),
    ("Immunization", "occurrenceDateTime", false),
    ("Immunization", "recorded", false),
    ("Encounter", "period", true),
    ("Appointment", "start", false),
    ("DocumentReference", "date", false),
    ("Task", "authoredOn", false),
    ("ClinicalImpression", "effectiveDateTime", false),
];

/// One resource of `ty` per bad date, the date in `field`, coded like the opioid pack's data (a
/// fentanyl order, a pain condition) so that the rules read them.
fn dated_resources(ty: &str, field: &str, period: bool) -> Vec<Value> {
    BAD_DATES
        .iter()
        .enumerate()
        .map(|(i, date)| {
            let mut resource = json!({
                "resourceType": ty,
                "id": format!("{}-{field}-{i}", ty.to_lowercase()),
                "status": "active",
                "intent": "order",
                "subject": {"reference": "Patient/example-rec-05-mme-greater-than-fifty"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "82423001"}]},
                "medicationCodeableConcept": {"coding": [{
                    "system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "197696",
                    "display": "72 HR Fentanyl 0.075 MG/HR Transdermal System"}]},
                "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1.0, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 1.0, "unit": "patch", "system": "http://unitsofmeasure.org", "code": "{patch}"}}]}],
                "dispenseRequest": {"validityPeriod": {"start": date, "end": date},
                    "expectedSupplyDuration": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}},
            });
            resource[field] = if period {
                json!({"start": date, "end": date})
            } else {
                json!(date)
            };
            resource
        })
        .collect()
}

fn bundle(resources: Vec<Value>) -> Value {
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| json!({"resource": r}))
        .collect();
    json!({"resourceType": "Bundle", "type": "searchset", "entry": entry})
}

/// The opioid request with every dated field of every type holding every bad date, in `prefetch`
/// and in `context.draftOrders`; the Patient's birth date too.
fn bad_dates_request() -> Value {
    let all: Vec<Value> = DATED_FIELDS
        .iter()
        .flat_map(|&(ty, field, period)| dated_resources(ty, field, period))
        .collect();
    let mut request = opioid_request();
    request["prefetch"]["medicationRequests"] = bundle(all.clone());
    request["prefetch"]["conditions"] = bundle(all.clone());
    request["prefetch"]["patient"]["birthDate"] = json!("2023é-");
    let mut draft = bundle(all);
    draft["type"] = json!("collection");
    request["context"]["draftOrders"] = draft;
    request
}

#[tokio::test]
async fn non_ascii_dates_in_every_dated_field_are_read_without_a_crash() {
    let server = TestServer::start().await;
    let request = bad_dates_request();
    let (status, text) = call(&server, OPIOID_SERVICE, request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text:.500}");
    let response: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(response["cards"].is_array(), "{text:.500}");

    // Every shipped order-sign service, each key of its prefetch holding all of them.
    let discovery: Value = reqwest::get(server.url("/cds-services"))
        .await
        .expect("discovery")
        .json()
        .await
        .expect("discovery JSON");
    let services = discovery["services"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let order_sign: Vec<&Value> = services
        .iter()
        .filter(|s| s["hook"] == "order-sign")
        .collect();
    assert!(order_sign.len() >= 4, "{discovery}");
    for service in order_sign {
        let id = service["id"].as_str().unwrap_or_default();
        let mut request = request.clone();
        for key in service["prefetch"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
        {
            if key != "patient" {
                request["prefetch"][key] = request["prefetch"]["conditions"].clone();
            }
        }
        let (status, text) = call(&server, id, request.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{id}: {text:.500}");
    }

    // The same over gRPC.
    let prefetch = request["prefetch"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    let response = grpc(&server)
        .await
        .call_hook(grpc_request(prefetch, request["context"].to_string()))
        .await;
    assert!(response.is_ok(), "{:?}", response.err());
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn a_long_bad_date_is_not_echoed() {
    let server = TestServer::start().await;
    let long_date = format!("2023é-{}", "x".repeat(65 * 1024));
    let mut request = opioid_request();
    request["context"]["draftOrders"]["entry"][0]["resource"]["authoredOn"] = json!(long_date);
    request["prefetch"]["patient"]["birthDate"] = json!(long_date);
    let (status, text) = call(&server, OPIOID_SERVICE, request.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text:.500}");
    assert!(
        !text.contains(&"x".repeat(100)),
        "the value came back: {text:.500}"
    );
    assert_still_serves(&server).await;
}

// ---------------------------------------------------------------------------------------------
// Caller values in messages
// ---------------------------------------------------------------------------------------------

/// `message` quotes `value` only as a short excerpt ending in `…`.
fn assert_excerpt_only(message: &str, value: &str) {
    assert!(message.contains('…'), "{message}");
    assert!(!message.contains(&value[..100]), "{message:.300}");
}

#[tokio::test]
async fn long_caller_values_are_quoted_only_in_part() {
    let server = TestServer::start().await;
    // 65 KB: as long as a URI may be (`http` caps it just under 64 KiB). Over HTTP a request line
    // that long is refused by the header limit (`server.max_header_bytes`) before any handler.
    let long = "a".repeat(65_000);
    let (status, _) = call(&server, &long, opioid_request().to_string()).await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    let long = "a".repeat(16_000);

    // An unknown service id of 16 KB: 404 over HTTP, NOT_FOUND over gRPC.
    let (status, text) = call(&server, &long, opioid_request().to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text:.300}");
    let message = diagnostics(&text);
    assert!(
        message.starts_with("unknown CDS service `aaaa"),
        "{message}"
    );
    assert_excerpt_only(&message, &long);
    let (status, text) = post(
        &server,
        &format!("/cds-services/{long}/feedback"),
        "{}".into(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text:.300}");
    assert_excerpt_only(&diagnostics(&text), &long);
    let mut request = grpc_request(grpc_prefetch(), opioid_request()["context"].to_string());
    request.service_id = long.clone();
    let status = grpc(&server).await.call_hook(request).await.err();
    let status = status.unwrap_or_else(|| panic!("an unknown service was called"));
    assert_eq!(status.code(), Code::NotFound, "{:.300}", status.message());
    assert!(status.message().len() <= MAX_MESSAGE * 4);
    assert_excerpt_only(status.message(), &long);

    // A hook of 65 KB, with control characters.
    let mut request = opioid_request();
    request["hook"] = json!(format!("\n\u{1b}[2J{long}"));
    let (status, text) = call(&server, OPIOID_SERVICE, request.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text:.300}");
    let message = diagnostics(&text);
    assert!(message.starts_with("hook `??[2Jaaa"), "{message}");
    assert!(
        message
            .ends_with("…` does not match service `opioidcds-04-05`, which answers `order-sign`")
    );
    assert_excerpt_only(&message, &long);

    // A prefetch key of 65 KB (not one the service declares): its value is only checked to be JSON,
    // so what is not JSON is refused naming a part of the key; a value that is JSON but not a
    // resource, or nests too deeply, is ignored.
    for (value, refused) in [
        ("{\"resourceType\": [}".to_owned(), true),
        ("5".to_owned(), false),
        (deep_wrappers(100), false),
    ] {
        let mut request = opioid_request();
        request["prefetch"][&long] = json!("@@key@@");
        let body = request.to_string().replace("\"@@key@@\"", &value);
        let (status, text) = call(&server, OPIOID_SERVICE, body).await;
        if !refused {
            assert_eq!(status, StatusCode::OK, "{text:.300}");
            continue;
        }
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text:.300}");
        let message = diagnostics(&text);
        assert!(message.starts_with("`prefetch.aaaa"), "{message}");
        assert!(
            message.contains("…` is not valid JSON (line 1, column "),
            "{message}"
        );
        assert_excerpt_only(&message, &long);
    }
    // Under a key the service declares, the value must be a resource, nesting within bounds.
    for (value, reason) in [
        (
            "5".to_owned(),
            "must be a FHIR resource (JSON object with a `resourceType`) or null",
        ),
        (deep_wrappers(100), NESTING_MESSAGE),
    ] {
        let mut request = opioid_request();
        request["prefetch"]["conditions"] = json!("@@key@@");
        let body = request.to_string().replace("\"@@key@@\"", &value);
        let (status, text) = call(&server, OPIOID_SERVICE, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text:.300}");
        let message = diagnostics(&text);
        assert_eq!(message, format!("`prefetch.conditions` {reason}"));
    }
    let mut prefetch = grpc_prefetch();
    prefetch.insert(long.clone(), "5".into());
    let status = grpc(&server)
        .await
        .call_hook(grpc_request(
            prefetch,
            opioid_request()["context"].to_string(),
        ))
        .await
        .err()
        .unwrap_or_else(|| panic!("a bad prefetch value was read"));
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("`prefetch_json[aaaa"),
        "{:.300}",
        status.message()
    );
    assert_excerpt_only(status.message(), &long);

    // An extension method of 65 KB.
    let method = reqwest::Method::from_bytes(long.to_uppercase().as_bytes()).expect("method");
    let response = reqwest::Client::new()
        .request(method, server.url("/cds-services"))
        .send()
        .await
        .expect("HTTP call");
    assert!(response.status().is_client_error(), "{}", response.status());
    let text = response.text().await.expect("body");
    assert!(!text.contains(&long.to_uppercase()[..100]), "{text:.300}");

    assert_still_serves(&server).await;
}

/// Fields Cardinal skips without keeping them are not a reason to refuse, at any depth.
#[tokio::test]
async fn deep_fields_cardinal_does_not_read_are_skipped() {
    let server = TestServer::start().await;
    let mut request = opioid_request();
    request["somethingElse"] = json!("@@hostile@@");
    let body = body_with(request, "/somethingElse", &deep_arrays(100_000));
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    // An entry's fields other than `resource` are skipped too.
    let searchset = format!(
        r#"{{"resourceType":"Bundle","type":"searchset","entry":[{{"search":{{"mode":{}}},"resource":{{"resourceType":"Condition","id":"c1"}}}}]}}"#,
        deep_arrays(100_000)
    );
    let body = body_with(opioid_request(), "/prefetch/conditions", &searchset);
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    // So are a Bundle's own fields (only its entries are kept).
    let body = body_with(
        opioid_request(),
        "/prefetch/medicationRequests/total",
        &deep_arrays(100_000),
    );
    let (status, text) = call(&server, OPIOID_SERVICE, body).await;
    assert_eq!(status, StatusCode::OK, "{text:.300}");
    assert_still_serves(&server).await;
}

#[tokio::test]
async fn text_json_cannot_represent_is_refused_not_hidden() {
    let server = TestServer::start().await;
    // A lone surrogate escape in a name, and a number beyond a 64-bit float: kept as raw text, either
    // would make the whole resource read as nothing when a rule opens it.
    for (field, value) in [
        ("name", r#"[{"family": "Ro\ud800e"}]"#),
        ("multipleBirthInteger", "1e400"),
    ] {
        let body = format!(
            r#"{{"hook": "patient-view", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
                "context": {{"userId": "Practitioner/1", "patientId": "p1"}},
                "prefetch": {{"patient": {{"resourceType": "Patient", "id": "p1",
                    "birthDate": "1960-05-01", "{field}": {value}}}}}}}"#
        );
        let response = reqwest::Client::new()
            .post(server.url("/cds-services/patient-greeting"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{field}");
        let text = response.text().await.expect("body");
        assert!(text.contains("`prefetch.patient`"), "{text}");
        assert!(text.contains("cannot represent"), "{text}");
    }
    server.stop().await;
}
