//! The gRPC API over a real socket: the generated `CdsHooks` client, the standard health service,
//! server reflection, and the HTTP/JSON API on the same port for comparison.
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

use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::TestServer;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const EVALUATION_TIME: &str = "2026-11-01";
const EVALUATION_TIME_HEADER: &str = "x-cardinal-evaluation-time";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn client(server: &TestServer) -> CdsHooksClient<Channel> {
    CdsHooksClient::new(server.grpc_channel().await)
}

fn str_field(obj: &serde_json::Map<String, Value>, field: &str) -> String {
    match obj.get(field) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => panic!("fixture field `{field}` is not a string: {other}"),
    }
}

/// A CDS Hooks JSON request rebuilt as a `CallHookRequest`: the context as JSON text, each prefetch
/// entry as JSON text (`null` stays the JSON literal `null`).
fn call_request(service_id: &str, body: &Value, evaluation_time: &str) -> proto::CallHookRequest {
    let obj = body.as_object().expect("request fixture is a JSON object");
    let fhir_authorization = obj
        .get("fhirAuthorization")
        .filter(|v| !v.is_null())
        .map(|a| {
            let text = |k: &str| {
                a.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            proto::FhirAuthorization {
                access_token: text("access_token"),
                token_type: text("token_type"),
                expires_in: a
                    .get("expires_in")
                    .and_then(Value::as_i64)
                    .unwrap_or_default(),
                scope: text("scope"),
                subject: text("subject"),
                patient: text("patient"),
            }
        });
    let prefetch_json = obj
        .get("prefetch")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    proto::CallHookRequest {
        service_id: service_id.to_owned(),
        hook: str_field(obj, "hook"),
        hook_instance: str_field(obj, "hookInstance"),
        fhir_server: str_field(obj, "fhirServer"),
        fhir_authorization,
        context_json: obj.get("context").map(Value::to_string).unwrap_or_default(),
        prefetch_json,
        extension_json: obj
            .get("extension")
            .filter(|v| !v.is_null())
            .map(Value::to_string)
            .unwrap_or_default(),
        evaluation_time: evaluation_time.to_owned(),
        ..proto::CallHookRequest::default()
    }
}

fn metformin_fixture() -> Value {
    common::request_fixture("metformin-egfr-low")
}

/// POSTs a hook call over plain HTTP; returns the status and the JSON body.
async fn http_call(
    server: &TestServer,
    service_id: &str,
    body: &Value,
    evaluation_time: Option<&str>,
) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/cds-services/{service_id}")))
        .json(body);
    if let Some(t) = evaluation_time {
        request = request.header(EVALUATION_TIME_HEADER, t);
    }
    let response = request.send().await.expect("HTTP call");
    let status = response.status();
    let bytes = response.bytes().await.expect("HTTP body");
    let json: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "HTTP body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

async fn http_feedback(
    server: &TestServer,
    service_id: &str,
    body: &Value,
) -> (reqwest::StatusCode, String) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/cds-services/{service_id}/feedback")))
        .json(body)
        .send()
        .await
        .expect("HTTP feedback");
    let status = response.status();
    let text = response.text().await.expect("HTTP body");
    (status, text)
}

/// The single `issue[0].diagnostics` text of an OperationOutcome.
fn diagnostics_of(outcome: &Value) -> String {
    assert_eq!(
        outcome["resourceType"], "OperationOutcome",
        "not an OperationOutcome: {outcome}"
    );
    let issues = outcome["issue"].as_array().expect("issue array");
    assert_eq!(issues.len(), 1, "{outcome}");
    issues[0]["diagnostics"]
        .as_str()
        .unwrap_or_else(|| panic!("no diagnostics text: {outcome}"))
        .to_owned()
}

async fn grpc_error(
    client: &mut CdsHooksClient<Channel>,
    request: proto::CallHookRequest,
) -> tonic::Status {
    match client.call_hook(request).await {
        Ok(response) => panic!("expected an error, got {:?}", response.into_inner()),
        Err(status) => status,
    }
}

/// Map keys in a stable order (protobuf maps arrive as a `HashMap`).
fn sorted_keys(map: &std::collections::HashMap<String, String>) -> Vec<&str> {
    let mut keys: Vec<&str> = map.keys().map(String::as_str).collect();
    keys.sort_unstable();
    keys
}

fn indicator_name(i: proto::Indicator) -> &'static str {
    match i {
        proto::Indicator::Unspecified => "unspecified",
        proto::Indicator::Info => "info",
        proto::Indicator::Warning => "warning",
        proto::Indicator::Critical => "critical",
    }
}

/// What must be identical between the HTTP and the gRPC rendering of a card.
#[derive(Debug, PartialEq, Eq)]
struct CardView {
    summary: String,
    detail: String,
    indicator: String,
    source_label: String,
    rule_id: String,
    rule_version: String,
    service_id: String,
    evaluated_at: String,
    /// (name, value, reference)
    facts: Vec<(String, String, String)>,
    /// (type, resourceId) of every suggestion action.
    actions: Vec<(String, String)>,
    override_codes: Vec<String>,
    link_urls: Vec<String>,
}

fn view_of_grpc(card: &proto::Card) -> CardView {
    let explanation = card
        .explanation
        .as_ref()
        .expect("gRPC card has an explanation");
    CardView {
        summary: card.summary.clone(),
        detail: card.detail.clone(),
        indicator: indicator_name(card.indicator()).to_owned(),
        source_label: card
            .source
            .as_ref()
            .map(|s| s.label.clone())
            .unwrap_or_default(),
        rule_id: explanation.rule_id.clone(),
        rule_version: explanation.rule_version.clone(),
        service_id: explanation.service_id.clone(),
        evaluated_at: explanation.evaluated_at.clone(),
        facts: explanation
            .facts
            .iter()
            .map(|f| (f.name.clone(), f.value.clone(), f.reference.clone()))
            .collect(),
        actions: card
            .suggestions
            .iter()
            .flat_map(|s| &s.actions)
            .map(|a| (a.r#type.clone(), a.resource_id.clone()))
            .collect(),
        override_codes: card
            .override_reasons
            .iter()
            .map(|c| c.code.clone())
            .collect(),
        link_urls: card.links.iter().map(|l| l.url.clone()).collect(),
    }
}

fn view_of_json(card: &Value) -> CardView {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let explanation = &card["extension"]["org.cardinalcds.explanation"];
    assert!(
        explanation.is_object(),
        "HTTP card has no explanation: {card}"
    );
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    CardView {
        summary: text(&card["summary"]),
        detail: text(&card["detail"]),
        indicator: text(&card["indicator"]),
        source_label: text(&card["source"]["label"]),
        rule_id: text(&explanation["ruleId"]),
        rule_version: text(&explanation["ruleVersion"]),
        service_id: text(&explanation["serviceId"]),
        evaluated_at: text(&explanation["evaluatedAt"]),
        facts: list(&explanation["facts"])
            .iter()
            .map(|f| (text(&f["name"]), text(&f["value"]), text(&f["reference"])))
            .collect(),
        actions: list(&card["suggestions"])
            .iter()
            .flat_map(|s| list(&s["actions"]))
            .map(|a| (text(&a["type"]), text(&a["resourceId"])))
            .collect(),
        override_codes: list(&card["overrideReasons"])
            .iter()
            .map(|c| text(&c["code"]))
            .collect(),
        link_urls: list(&card["links"])
            .iter()
            .map(|l| text(&l["url"]))
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Discover
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_lists_the_shipped_services() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let response = client
        .discover(proto::DiscoverRequest {})
        .await
        .expect("Discover")
        .into_inner();

    let services: BTreeMap<&str, &proto::ServiceDescriptor> = response
        .services
        .iter()
        .map(|s| (s.id.as_str(), s))
        .collect();
    let mut shipped = vec![
        "hyperkalemia",
        "metformin-renal",
        "patient-greeting",
        "warfarin-nsaid",
    ];
    shipped.extend(common::OPIOID_SERVICES);
    shipped.sort_unstable();
    assert_eq!(
        services.keys().copied().collect::<Vec<_>>(),
        shipped,
        "exactly the shipped services, once each"
    );
    assert_eq!(response.services.len(), 20);

    let expected_hooks = [
        ("metformin-renal", "order-sign"),
        ("patient-greeting", "patient-view"),
        ("warfarin-nsaid", "order-sign"),
    ];
    for (id, hook) in expected_hooks {
        let s = services[id];
        assert_eq!(s.hook, hook, "{id}");
        assert_eq!(s.version, "1.0.0", "{id}");
        assert!(!s.description.trim().is_empty(), "{id} has a description");
        assert!(!s.title.trim().is_empty(), "{id} has a title");
    }

    let metformin = services["metformin-renal"];
    assert!(
        metformin
            .description
            .starts_with("Warns when metformin is ordered"),
        "{}",
        metformin.description
    );
    assert_eq!(metformin.title, "Metformin and kidney function");
    assert_eq!(sorted_keys(&metformin.prefetch), ["egfr", "patient"]);
    assert_eq!(
        metformin.prefetch["patient"],
        "Patient/{{context.patientId}}"
    );
    assert!(
        metformin.prefetch["egfr"].starts_with("Observation?patient={{context.patientId}}&code="),
        "{}",
        metformin.prefetch["egfr"]
    );

    let greeting = services["patient-greeting"];
    assert_eq!(
        greeting.prefetch,
        [(
            "patient".to_owned(),
            "Patient/{{context.patientId}}".to_owned()
        )]
        .into()
    );
    assert!(
        greeting.description.starts_with("Greets the patient"),
        "{}",
        greeting.description
    );

    let warfarin = services["warfarin-nsaid"];
    assert_eq!(sorted_keys(&warfarin.prefetch), ["medications", "patient"]);
    assert_eq!(
        warfarin.prefetch["medications"],
        "MedicationRequest?patient={{context.patientId}}&status=active"
    );

    // Same list as HTTP discovery.
    let http: Value = reqwest::get(server.url("/cds-services"))
        .await
        .expect("GET /cds-services")
        .json()
        .await
        .expect("discovery JSON");
    let http_ids: Vec<&str> = http["services"]
        .as_array()
        .expect("services array")
        .iter()
        .map(|s| s["id"].as_str().expect("id"))
        .collect();
    let grpc_ids: Vec<&str> = response.services.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(grpc_ids, http_ids);
    for s in http["services"].as_array().expect("services") {
        let g = services[s["id"].as_str().expect("id")];
        assert_eq!(s["hook"], g.hook.as_str());
        assert_eq!(s["description"], g.description.as_str());
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. CallHook
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hook_metformin_low_egfr_returns_a_critical_explained_card() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let request = call_request("metformin-renal", &metformin_fixture(), EVALUATION_TIME);
    assert_eq!(
        request.prefetch_json.len(),
        2,
        "patient and egfr prefetch are sent"
    );

    let response = client
        .call_hook(request)
        .await
        .expect("CallHook")
        .into_inner();
    assert!(
        response.diagnostics.is_empty(),
        "{:?}",
        response.diagnostics
    );
    assert!(response.system_actions.is_empty());
    assert_eq!(response.cards.len(), 1, "{:#?}", response.cards);
    let card = &response.cards[0];

    assert_eq!(card.indicator(), proto::Indicator::Critical);
    assert_eq!(card.summary, "Metformin is contraindicated: eGFR below 30");
    assert!(card.detail.contains("24"), "{}", card.detail);
    assert!(!card.uuid.is_empty(), "card has a uuid");
    let source = card.source.as_ref().expect("card source");
    assert!(
        source.label.starts_with("FDA Drug Safety Communication"),
        "{}",
        source.label
    );

    // Typed suggestion with a delete action on the draft order.
    assert_eq!(card.suggestions.len(), 1, "{:#?}", card.suggestions);
    let suggestion = &card.suggestions[0];
    assert_eq!(suggestion.label, "Cancel the metformin order");
    assert!(suggestion.is_recommended);
    assert!(!suggestion.uuid.is_empty(), "suggestion has a uuid");
    assert_eq!(suggestion.actions.len(), 1);
    let action = &suggestion.actions[0];
    assert_eq!(action.r#type, "delete");
    assert_eq!(action.resource_id, "MedicationRequest/medrx-metformin");
    assert!(
        action.resource_json.is_empty(),
        "a delete carries no resource"
    );

    let codes: Vec<&str> = card
        .override_reasons
        .iter()
        .map(|c| c.code.as_str())
        .collect();
    assert_eq!(codes, ["result-not-current", "benefit-outweighs-risk"]);
    assert_eq!(card.links.len(), 1);
    assert_eq!(card.links[0].r#type, "absolute");

    // Typed explanation.
    let explanation = card.explanation.as_ref().expect("typed explanation");
    assert_eq!(explanation.service_id, "metformin-renal");
    assert_eq!(explanation.rule_id, "metformin-egfr");
    assert_eq!(explanation.rule_version, "1.0.0");
    assert!(
        explanation.evaluated_at.starts_with("2026-11-01T00:00:00"),
        "evaluation_time is reflected: {}",
        explanation.evaluated_at
    );
    let egfr = explanation
        .facts
        .iter()
        .find(|f| f.reference == "Observation/egfr-2026-10")
        .unwrap_or_else(|| {
            panic!(
                "no fact from Observation/egfr-2026-10: {:#?}",
                explanation.facts
            )
        });
    assert_eq!(egfr.value, "24");
    assert_eq!(egfr.unit, "mL/min/{1.73_m2}");
    assert!(egfr.date.starts_with("2026-10-02"), "{}", egfr.date);
    assert_eq!(egfr.origin, "prefetch");
    assert!(
        explanation
            .facts
            .iter()
            .any(|f| f.reference == "MedicationRequest/medrx-metformin"),
        "the order is a fact too: {:#?}",
        explanation.facts
    );
    assert!(
        explanation
            .facts
            .iter()
            .all(|f| f.reference != "Observation/egfr-2026-04"),
        "the older eGFR is not what the rule relied on"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reports_each_rule_like_the_http_endpoint() {
    // The test server turns the explain endpoint on.
    let server = TestServer::start().await;
    let mut grpc = client(&server).await;
    let report = grpc
        .explain(call_request(
            "metformin-renal",
            &metformin_fixture(),
            EVALUATION_TIME,
        ))
        .await
        .expect("Explain")
        .into_inner();
    assert_eq!(report.service_id, "metformin-renal");
    assert_eq!(report.hook, "order-sign");
    assert_eq!(report.rules.len(), 1, "{report:#?}");
    let rule = &report.rules[0];
    assert_eq!(rule.rule_id, "metformin-egfr");
    assert_eq!(rule.verdict, "fired");
    assert_eq!(rule.file, "metformin-renal/metformin-egfr.rhai");
    assert!(rule.conditions.iter().all(|c| c.met), "{rule:#?}");
    assert!(rule.facts.iter().any(|f| f.name == "eGFR"), "{rule:#?}");
    let response = report.response.expect("the cards of the call");
    assert_eq!(response.cards.len(), 1);

    // Not fired: which condition was false.
    let mut normal = metformin_fixture();
    normal["prefetch"]["egfr"]["entry"][0]["resource"]["valueQuantity"]["value"] = json!(61);
    let report = grpc
        .explain(call_request("metformin-renal", &normal, EVALUATION_TIME))
        .await
        .expect("Explain")
        .into_inner();
    assert_eq!(report.rules[0].verdict, "not-fired");
    assert_eq!(report.rules[0].failed_condition, "eGFR below 45");
    // The values it compared, as over HTTP.
    let stopped = report.rules[0]
        .conditions
        .iter()
        .find(|c| !c.met)
        .expect("the false condition");
    let compared = stopped.compared.as_ref().expect("compared values");
    assert!(compared.left.starts_with("61"), "{compared:?}");
    assert_eq!((compared.op.as_str(), compared.right.as_str()), ("<", "45"));
    server.stop().await;

    // Off by default, as over HTTP.
    let server = TestServer::start_with(cardinal::config::Config {
        rules_dir: common::project_path("rules"),
        ..cardinal::config::Config::default()
    })
    .await;
    let mut grpc = client(&server).await;
    let status = grpc
        .explain(call_request(
            "metformin-renal",
            &metformin_fixture(),
            EVALUATION_TIME,
        ))
        .await
        .expect_err("explain is off");
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().contains("explain_endpoint"), "{status:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hook_metformin_not_fired_returns_no_cards() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;

    // eGFR 60: above both thresholds.
    let mut body = metformin_fixture();
    body["prefetch"]["egfr"]["entry"][0]["resource"]["valueQuantity"]["value"] = json!(60);
    let response = client
        .call_hook(call_request("metformin-renal", &body, EVALUATION_TIME))
        .await
        .expect("CallHook")
        .into_inner();
    assert!(response.cards.is_empty(), "{:#?}", response.cards);
    assert!(
        response.diagnostics.is_empty(),
        "{:?}",
        response.diagnostics
    );

    // No eGFR on record: the prefetch entry is the JSON literal `null`.
    let mut body = metformin_fixture();
    body["prefetch"]["egfr"] = Value::Null;
    let request = call_request("metformin-renal", &body, EVALUATION_TIME);
    assert_eq!(request.prefetch_json["egfr"], "null");
    let response = client
        .call_hook(request)
        .await
        .expect("CallHook with null prefetch")
        .into_inner();
    // Without an eGFR the rule does not stay silent: it asks for a kidney function check.
    assert_eq!(response.cards.len(), 1, "{:#?}", response.cards);
    assert_eq!(response.cards[0].indicator(), proto::Indicator::Info);
    assert!(
        response.diagnostics.is_empty(),
        "{:?}",
        response.diagnostics
    );

    // Same patient on the other order-sign service: no warfarin, no NSAID.
    let response = client
        .call_hook(call_request(
            "warfarin-nsaid",
            &with_empty_medications(metformin_fixture()),
            EVALUATION_TIME,
        ))
        .await
        .expect("CallHook warfarin-nsaid")
        .into_inner();
    assert!(response.cards.is_empty(), "{:#?}", response.cards);
    server.stop().await;
}

/// The warfarin-nsaid service also declares a `medications` prefetch key: answer it with an empty
/// search result (the patient takes nothing else), as an EHR would.
fn with_empty_medications(mut body: Value) -> Value {
    body["prefetch"]["medications"] =
        json!({"resourceType": "Bundle", "type": "searchset", "total": 0});
    body
}

// ---------------------------------------------------------------------------------------------
// 3. Same semantics as HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_return_the_same_cards() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;

    let mut egfr_38 = metformin_fixture();
    egfr_38["prefetch"]["egfr"]["entry"][0]["resource"]["valueQuantity"]["value"] = json!(38);
    let cases = [
        ("metformin-renal", metformin_fixture(), 1),
        ("metformin-renal", egfr_38, 1),
        (
            "warfarin-nsaid",
            with_empty_medications(metformin_fixture()),
            0,
        ),
        (
            "patient-greeting",
            common::request_fixture("sandbox-patient-view"),
            1,
        ),
    ];
    for (service_id, body, expected_cards) in cases {
        let grpc = client
            .call_hook(call_request(service_id, &body, EVALUATION_TIME))
            .await
            .unwrap_or_else(|s| panic!("{service_id}: CallHook failed: {s:?}"))
            .into_inner();
        let (status, http) = http_call(&server, service_id, &body, Some(EVALUATION_TIME)).await;
        assert_eq!(status, reqwest::StatusCode::OK, "{service_id}: {http}");

        let http_cards: Vec<CardView> = http["cards"]
            .as_array()
            .unwrap_or_else(|| panic!("{service_id}: no cards array: {http}"))
            .iter()
            .map(view_of_json)
            .collect();
        let grpc_cards: Vec<CardView> = grpc.cards.iter().map(view_of_grpc).collect();
        assert_eq!(
            grpc_cards.len(),
            expected_cards,
            "{service_id}: {grpc_cards:#?}"
        );
        assert_eq!(
            grpc_cards, http_cards,
            "{service_id}: gRPC and HTTP cards differ"
        );

        // The explicit comparisons the API promises, spelled out.
        let summaries = |v: &[CardView]| v.iter().map(|c| c.summary.clone()).collect::<Vec<_>>();
        let indicators = |v: &[CardView]| v.iter().map(|c| c.indicator.clone()).collect::<Vec<_>>();
        let rule_ids = |v: &[CardView]| v.iter().map(|c| c.rule_id.clone()).collect::<Vec<_>>();
        assert_eq!(
            summaries(&grpc_cards),
            summaries(&http_cards),
            "{service_id}"
        );
        assert_eq!(
            indicators(&grpc_cards),
            indicators(&http_cards),
            "{service_id}"
        );
        assert_eq!(rule_ids(&grpc_cards), rule_ids(&http_cards), "{service_id}");
        for card in &grpc_cards {
            assert!(
                card.evaluated_at.starts_with("2026-11-01"),
                "{service_id}: {card:?}"
            );
            assert_eq!(card.service_id, service_id);
        }
    }

    // The warning branch really is the warning branch on both transports.
    let mut body = metformin_fixture();
    body["prefetch"]["egfr"]["entry"][0]["resource"]["valueQuantity"]["value"] = json!(38);
    let grpc = client
        .call_hook(call_request("metformin-renal", &body, EVALUATION_TIME))
        .await
        .expect("CallHook")
        .into_inner();
    assert_eq!(grpc.cards[0].indicator(), proto::Indicator::Warning);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hook_invalid_context_json_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let mut request = call_request("metformin-renal", &metformin_fixture(), EVALUATION_TIME);
    request.context_json = r#"{"patientId": "pat-secret-42", "userId": "#.to_owned();

    let status = grpc_error(&mut client, request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("context_json"),
        "{}",
        status.message()
    );
    assert!(
        !status.message().contains("pat-secret-42"),
        "error messages never echo request content: {}",
        status.message()
    );

    // A prefetch entry that is not JSON names its key.
    let mut request = call_request("metformin-renal", &metformin_fixture(), EVALUATION_TIME);
    request
        .prefetch_json
        .insert("egfr".into(), "{not json".into());
    let status = grpc_error(&mut client, request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("egfr"), "{}", status.message());

    // Valid JSON but not an object: the same check as HTTP's `context` field.
    let mut request = call_request("metformin-renal", &metformin_fixture(), EVALUATION_TIME);
    request.context_json = "[1, 2]".into();
    let status = grpc_error(&mut client, request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let mut body = metformin_fixture();
    body["context"] = json!([1, 2]);
    let (http_status, outcome) =
        http_call(&server, "metformin-renal", &body, Some(EVALUATION_TIME)).await;
    assert_eq!(http_status, reqwest::StatusCode::BAD_REQUEST);
    assert_eq!(status.message(), diagnostics_of(&outcome));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hook_bad_evaluation_time_is_invalid_argument() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    for bad in ["yesterday", "2026-13-45", "2026-11-01 10:00"] {
        let status = grpc_error(
            &mut client,
            call_request("metformin-renal", &metformin_fixture(), bad),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(
            status.message().contains("evaluation_time"),
            "{bad}: {}",
            status.message()
        );
    }
    // HTTP refuses the equivalent header the same way (its message names the header instead).
    let (http_status, outcome) = http_call(
        &server,
        "metformin-renal",
        &metformin_fixture(),
        Some("yesterday"),
    )
    .await;
    assert_eq!(http_status, reqwest::StatusCode::BAD_REQUEST);
    assert!(
        diagnostics_of(&outcome).contains(EVALUATION_TIME_HEADER),
        "{outcome}"
    );

    // A full RFC 3339 date-time is accepted and reflected.
    let response = client
        .call_hook(call_request(
            "metformin-renal",
            &metformin_fixture(),
            "2026-11-01T10:30:00Z",
        ))
        .await
        .expect("RFC 3339 evaluation_time")
        .into_inner();
    let explanation = response.cards[0].explanation.as_ref().expect("explanation");
    assert!(
        explanation.evaluated_at.starts_with("2026-11-01T10:30:00"),
        "{}",
        explanation.evaluated_at
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. SubmitFeedback
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_feedback() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let response = client
        .call_hook(call_request(
            "metformin-renal",
            &metformin_fixture(),
            EVALUATION_TIME,
        ))
        .await
        .expect("CallHook")
        .into_inner();
    let card = &response.cards[0];
    let suggestion_id = card.suggestions[0].uuid.clone();

    let accepted = proto::Feedback {
        card: card.uuid.clone(),
        outcome: "accepted".into(),
        accepted_suggestions: vec![proto::AcceptedSuggestion {
            id: suggestion_id.clone(),
        }],
        override_reason: None,
        outcome_timestamp: "2026-11-01T10:00:00Z".into(),
    };
    let reply = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: vec![accepted.clone()],
        })
        .await
        .expect("accepted feedback")
        .into_inner();
    assert_eq!(reply.accepted, 1);

    let overridden = proto::Feedback {
        card: card.uuid.clone(),
        outcome: "overridden".into(),
        accepted_suggestions: Vec::new(),
        override_reason: Some(proto::OverrideReason {
            reason: Some(proto::Coding {
                system: "http://snomed.info/sct".into(),
                code: "428119001".into(),
                display: "Procedure not indicated".into(),
            }),
            user_comment: "Nephrology agrees to a short course".into(),
        }),
        outcome_timestamp: "2026-11-01T10:05:00+01:00".into(),
    };
    let reply = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: vec![overridden.clone()],
        })
        .await
        .expect("overridden feedback")
        .into_inner();
    assert_eq!(reply.accepted, 1);

    let reply = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: vec![accepted.clone(), overridden.clone()],
        })
        .await
        .expect("two feedback entries")
        .into_inner();
    assert_eq!(reply.accepted, 2);

    // Missing outcome timestamp: refused, with HTTP's message.
    let mut no_timestamp = accepted.clone();
    no_timestamp.outcome_timestamp.clear();
    let status = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: vec![no_timestamp],
        })
        .await
        .expect_err("feedback without outcomeTimestamp must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("outcomeTimestamp"),
        "{}",
        status.message()
    );
    let http_body = json!({"feedback": [{
        "card": card.uuid,
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion_id}],
    }]});
    let (http_status, text) = http_feedback(&server, "metformin-renal", &http_body).await;
    assert_eq!(http_status, reqwest::StatusCode::BAD_REQUEST, "{text}");
    let outcome: Value = serde_json::from_str(&text).expect("OperationOutcome JSON");
    assert_eq!(status.message(), diagnostics_of(&outcome));

    // Nothing to report is not feedback.
    let status = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: Vec::new(),
        })
        .await
        .expect_err("empty feedback must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    // Unknown service.
    let status = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "no-such-service".into(),
            feedback: vec![accepted],
        })
        .await
        .expect_err("feedback for an unknown service must be refused");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let (http_status, text) = http_feedback(&server, "no-such-service", &http_body).await;
    assert_eq!(http_status, reqwest::StatusCode::NOT_FOUND, "{text}");
    let outcome: Value = serde_json::from_str(&text).expect("OperationOutcome JSON");
    assert_eq!(status.message(), diagnostics_of(&outcome));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Sandbox diagnostics over gRPC
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_rule_failures_are_reported_as_diagnostics() {
    let server =
        TestServer::start_with_rules(&common::project_path("tests/fixtures/rules-sandbox")).await;
    let mut client = client(&server).await;
    let body = common::request_fixture("sandbox-patient-view");
    let response = client
        .call_hook(call_request("sandbox", &body, EVALUATION_TIME))
        .await
        .expect("CallHook on the sandbox service")
        .into_inner();

    // Well-behaved rules still answer.
    let summaries: Vec<&str> = response.cards.iter().map(|c| c.summary.as_str()).collect();
    assert!(summaries.contains(&"mutator ran"), "{summaries:?}");
    let reader = response
        .cards
        .iter()
        .find(|c| c.summary.starts_with("reader:"))
        .unwrap_or_else(|| panic!("f-reader card missing: {summaries:?}"));
    assert_eq!(
        reader.summary, "reader: 2 observations, gender male, born 1971-07-30, 1 names",
        "a-mutator's changes must not leak into f-reader"
    );
    let explanation = reader.explanation.as_ref().expect("explanation");
    assert_eq!(explanation.rule_id, "f-reader");
    assert_eq!(explanation.rule_version, "2.3.4");
    assert!(!summaries.contains(&"never"), "h-not-met must not fire");
    assert!(
        !summaries.contains(&"bad indicator"),
        "g-invalid-card must not produce a card"
    );

    let by_rule: BTreeMap<&str, &proto::Diagnostic> = response
        .diagnostics
        .iter()
        .map(|d| (d.rule_id.as_str(), d))
        .collect();
    let looped = by_rule.get("b-infinite-loop").unwrap_or_else(|| {
        panic!(
            "no diagnostic for b-infinite-loop: {:#?}",
            response.diagnostics
        )
    });
    assert_eq!(
        looped.kind, "operations",
        "infinite loop stopped by its operation limit: {looped:?}"
    );
    let failed = by_rule.get("c-runtime-error").unwrap_or_else(|| {
        panic!(
            "no diagnostic for c-runtime-error: {:#?}",
            response.diagnostics
        )
    });
    assert_eq!(failed.kind, "runtime", "{failed:?}");
    assert_eq!(failed.line, 3, "{failed:?}");
    assert!(failed.message.contains("no_such_function"), "{failed:?}");
    for rule in ["d-deep-recursion", "e-huge-string", "g-invalid-card"] {
        assert!(
            by_rule.contains_key(rule),
            "no diagnostic for {rule}: {:#?}",
            response.diagnostics
        );
    }
    for rule in ["a-mutator", "f-reader", "h-not-met"] {
        assert!(
            !by_rule.contains_key(rule),
            "{rule} did not fail: {:#?}",
            response.diagnostics
        );
    }

    // HTTP reports the same rules as failed.
    let (status, http) = http_call(&server, "sandbox", &body, Some(EVALUATION_TIME)).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{http}");
    let http_rules: Vec<&str> = http["extension"]["org.cardinalcds.diagnostics"]
        .as_array()
        .unwrap_or_else(|| panic!("no diagnostics over HTTP: {http}"))
        .iter()
        .map(|d| d["ruleId"].as_str().expect("ruleId"))
        .collect();
    let grpc_rules: Vec<&str> = response
        .diagnostics
        .iter()
        .map(|d| d.rule_id.as_str())
        .collect();
    assert_eq!(grpc_rules, http_rules);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. grpc.health.v1
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_reports_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let server = TestServer::start().await;
    let mut health = HealthClient::new(server.grpc_channel().await);
    for service in ["", "cardinal.v1.CdsHooks"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|s| panic!("health check {service:?}: {s:?}"))
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
    let status = health
        .check(HealthCheckRequest {
            service: "no.such.v1.Service".into(),
        })
        .await
        .expect_err("an unknown service has no health status");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 8. Server reflection
// ---------------------------------------------------------------------------------------------

async fn reflect(
    server: &TestServer,
    request: tonic_reflection::pb::v1::server_reflection_request::MessageRequest,
) -> tonic_reflection::pb::v1::server_reflection_response::MessageResponse {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;

    let mut reflection = ServerReflectionClient::new(server.grpc_channel().await);
    let outbound = tonic::codegen::tokio_stream::iter([ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    }]);
    let mut inbound = reflection
        .server_reflection_info(outbound)
        .await
        .expect("ServerReflectionInfo")
        .into_inner();
    let response = inbound
        .message()
        .await
        .expect("reflection stream")
        .expect("one reflection response");
    response
        .message_response
        .expect("reflection message_response")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_cds_hooks_and_health() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let server = TestServer::start().await;
    let MessageResponse::ListServicesResponse(list) =
        reflect(&server, MessageRequest::ListServices(String::new())).await
    else {
        panic!("expected a list of services");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"cardinal.v1.CdsHooks"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // The descriptors behind the names are served too.
    for symbol in ["cardinal.v1.CdsHooks", "grpc.health.v1.Health"] {
        match reflect(&server, MessageRequest::FileContainingSymbol(symbol.into())).await {
            MessageResponse::FileDescriptorResponse(files) => {
                assert!(
                    files.file_descriptor_proto.iter().any(|f| !f.is_empty()),
                    "{symbol}: empty descriptor"
                );
            }
            other => panic!("{symbol}: expected a file descriptor, got {other:?}"),
        }
    }
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 9. Plain HTTP on the shared port
// ---------------------------------------------------------------------------------------------

/// Sends a plain HTTP/1.1 request (JSON, not gRPC) and checks it is answered by a JSON 404
/// OperationOutcome rather than by the gRPC stack.
async fn assert_plain_http_404(server: &TestServer, method: reqwest::Method, path: &str) {
    let response = reqwest::Client::new()
        .request(method.clone(), server.url(path))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "{method} {path}: headers {headers:?}, body {text:?}"
    );
    assert!(
        headers.get("grpc-status").is_none(),
        "{method} {path}: plain HTTP must not get a gRPC answer: {headers:?}"
    );
    let content_type = headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.contains("json"),
        "{method} {path}: content-type {content_type:?}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: body is not JSON ({e}): {text:?}"));
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert_eq!(body["issue"][0]["code"], "not-found", "{body}");
    assert!(!diagnostics_of(&body).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_unknown_path_is_a_json_404() {
    let server = TestServer::start().await;
    assert_plain_http_404(&server, reqwest::Method::GET, "/no/such/path").await;
    assert_plain_http_404(&server, reqwest::Method::POST, "/no/such/path").await;
    assert_plain_http_404(
        &server,
        reqwest::Method::GET,
        "/cds-services/metformin-renal/nope",
    )
    .await;
    assert_plain_http_404(
        &server,
        reqwest::Method::GET,
        "/cardinal.v1.NoSuchService/Call",
    )
    .await;
    // The port still serves real HTTP next to gRPC.
    let discovery: Value = reqwest::get(server.url("/cds-services"))
        .await
        .expect("GET /cds-services")
        .json()
        .await
        .expect("discovery JSON");
    assert!(discovery["services"].is_array(), "{discovery:#}");
    server.stop().await;
}

/// A plain HTTP request whose path merely starts with a gRPC service name is still an unknown
/// path for an HTTP caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_under_a_grpc_service_prefix_is_a_json_404() {
    let server = TestServer::start().await;
    assert_plain_http_404(
        &server,
        reqwest::Method::GET,
        "/cardinal.v1.CdsHooks/NoSuchMethod",
    )
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_call_to_an_unknown_service_is_unimplemented() {
    use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

    let server = TestServer::start().await;
    let mut grpc = tonic::client::Grpc::new(server.grpc_channel().await);
    grpc.ready().await.expect("channel ready");
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let status = grpc
        .unary(
            tonic::Request::new(HealthCheckRequest {
                service: String::new(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/cardinal.v1.NoSuchService/Call"),
            codec,
        )
        .await
        .expect_err("no such gRPC service");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    server.stop().await;
}

/// A request both transports must refuse the same way: same cause, matching status, same message.
struct Refused {
    what: &'static str,
    service: &'static str,
    body: Value,
    grpc: Code,
    http: reqwest::StatusCode,
    /// Words the message must contain.
    mentions: &'static [&'static str],
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_hook_refusals_match_http() {
    let server = TestServer::start().await;
    let mut client = client(&server).await;
    let without = |mut body: Value, pointer: &str, field: &str| {
        let target = if pointer.is_empty() {
            &mut body
        } else {
            body.pointer_mut(pointer).expect("fixture path")
        };
        target.as_object_mut().expect("object").remove(field);
        body
    };
    let cases = [
        Refused {
            what: "unknown service",
            service: "no-such-service",
            body: metformin_fixture(),
            grpc: Code::NotFound,
            http: reqwest::StatusCode::NOT_FOUND,
            mentions: &["no-such-service"],
        },
        Refused {
            what: "missing hook",
            service: "metformin-renal",
            body: without(metformin_fixture(), "", "hook"),
            grpc: Code::InvalidArgument,
            http: reqwest::StatusCode::BAD_REQUEST,
            mentions: &["`hook`", "missing"],
        },
        Refused {
            what: "order-sign without draft orders",
            service: "metformin-renal",
            body: without(metformin_fixture(), "/context", "draftOrders"),
            grpc: Code::InvalidArgument,
            http: reqwest::StatusCode::BAD_REQUEST,
            mentions: &["context.draftOrders"],
        },
        Refused {
            what: "hook not answered by the service",
            service: "metformin-renal",
            body: common::request_fixture("sandbox-patient-view"),
            grpc: Code::InvalidArgument,
            http: reqwest::StatusCode::BAD_REQUEST,
            mentions: &["patient-view", "order-sign"],
        },
        Refused {
            what: "declared prefetch not provided",
            service: "metformin-renal",
            body: without(
                without(metformin_fixture(), "/prefetch", "egfr"),
                "",
                "fhirServer",
            ),
            grpc: Code::FailedPrecondition,
            http: reqwest::StatusCode::PRECONDITION_FAILED,
            mentions: &["egfr"],
        },
    ];
    for case in cases {
        let what = case.what;
        let status = grpc_error(
            &mut client,
            call_request(case.service, &case.body, EVALUATION_TIME),
        )
        .await;
        assert_eq!(status.code(), case.grpc, "{what}: {status:?}");
        for word in case.mentions {
            assert!(
                status.message().contains(word),
                "{what}: {}",
                status.message()
            );
        }
        let (http_status, outcome) =
            http_call(&server, case.service, &case.body, Some(EVALUATION_TIME)).await;
        assert_eq!(http_status, case.http, "{what}: {outcome}");
        assert_eq!(status.message(), diagnostics_of(&outcome), "{what}");
    }
    server.stop().await;
}
