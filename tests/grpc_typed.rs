//! gRPC calls with a typed context and prefetch as bytes (`CallHookRequest.typed_context`,
//! `CallHookRequest.prefetch`), over a real socket: the same answers as the HTTP/JSON call for every
//! shipped test case of the opioid and greeting packs, and the same refusals, with no patient data in
//! them, for bytes that are not UTF-8, not JSON, not a FHIR resource, or nested too deeply.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::path::{Path, PathBuf};

use cardinal::loadgen::workload::grpc_request;
use cardinal::proto;
use cardinal::proto::call_hook_request::TypedContext;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use cardinal::rule_tests::TestCase;
use common::TestServer;
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

const EVALUATION_TIME_HEADER: &str = "x-cardinal-evaluation-time";
/// Stands for patient data in the refusal tests: it must never come back in a message.
const SECRET: &str = "Jane-Roe-MRN-4711";

/// The full-format test cases (with a CDS Hooks request) of a rule pack.
fn cases(pack: &str) -> Vec<TestCase> {
    let dir = common::project_path(&format!("rules/{pack}/tests"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let cases: Vec<TestCase> = paths
        .iter()
        .map(|path| TestCase::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|case| case.request.is_object())
        .collect();
    assert!(cases.len() >= 5, "{pack}: only {} cases", cases.len());
    cases
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

async fn http_call(server: &TestServer, case: &TestCase) -> (reqwest::StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .post(server.url(&format!("/cds-services/{}", case.service)))
        .json(&case.request);
    if let Some(time) = &case.evaluation_time {
        request = request.header(EVALUATION_TIME_HEADER, time);
    }
    let response = request.send().await.expect("HTTP call");
    let status = response.status();
    (status, response.json().await.expect("HTTP body is JSON"))
}

/// What the clinician and the audit see of a card, from the JSON answer: everything but the uuids
/// (new on every call) and the trace id.
fn view_of_json(card: &Value) -> Value {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let explanation = &card["extension"]["org.cardinalcds.explanation"];
    json!({
        "summary": text(&card["summary"]),
        "detail": text(&card["detail"]),
        "indicator": text(&card["indicator"]),
        "source": [text(&card["source"]["label"]), text(&card["source"]["url"])],
        "suggestions": list(&card["suggestions"]).iter().map(|s| json!({
            "label": text(&s["label"]),
            "actions": list(&s["actions"]).iter().map(|a| json!([
                text(&a["type"]), text(&a["description"]), a.get("resource").cloned().unwrap_or(Value::Null),
            ])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "links": list(&card["links"]).iter().map(|l| json!([text(&l["label"]), text(&l["url"]), text(&l["type"])])).collect::<Vec<_>>(),
        "overrideReasons": list(&card["overrideReasons"]).iter().map(|c| text(&c["code"])).collect::<Vec<_>>(),
        "rule": [text(&explanation["ruleId"]), text(&explanation["ruleVersion"]), text(&explanation["serviceId"]), text(&explanation["evaluatedAt"])],
        "facts": list(&explanation["facts"]).iter().map(|f| json!([
            text(&f["name"]), text(&f["value"]), text(&f["unit"]), text(&f["date"]), text(&f["reference"]), text(&f["origin"]),
        ])).collect::<Vec<_>>(),
    })
}

fn view_of_grpc(card: &proto::Card) -> Value {
    let indicator = match proto::Indicator::try_from(card.indicator) {
        Ok(proto::Indicator::Info) => "info",
        Ok(proto::Indicator::Warning) => "warning",
        Ok(proto::Indicator::Critical) => "critical",
        _ => "unspecified",
    };
    let source = card.source.clone().unwrap_or_default();
    let explanation = card.explanation.clone().unwrap_or_default();
    json!({
        "summary": card.summary,
        "detail": card.detail,
        "indicator": indicator,
        "source": [source.label, source.url],
        "suggestions": card.suggestions.iter().map(|s| json!({
            "label": s.label,
            "actions": s.actions.iter().map(|a| json!([
                a.r#type, a.description,
                if a.resource_json.is_empty() { Value::Null } else { serde_json::from_str::<Value>(&a.resource_json).unwrap() },
            ])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "links": card.links.iter().map(|l| json!([l.label, l.url, l.r#type])).collect::<Vec<_>>(),
        "overrideReasons": card.override_reasons.iter().map(|c| c.code.clone()).collect::<Vec<_>>(),
        "rule": [explanation.rule_id, explanation.rule_version, explanation.service_id, explanation.evaluated_at],
        "facts": explanation.facts.iter().map(|f| json!([f.name, f.value, f.unit, f.date, f.reference, f.origin])).collect::<Vec<_>>(),
    })
}

/// Every card of an answer, and its rule diagnostics and undecided conditions (compared as sets:
/// the order of cards is not part of the answer).
fn answer_of_json(body: &Value) -> Value {
    let mut cards: Vec<Value> = body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(view_of_json)
        .collect();
    cards.sort_by_key(Value::to_string);
    let extension = &body["extension"];
    let diagnostics: Vec<Value> = extension["org.cardinalcds.diagnostics"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|d| json!([d["ruleId"], d["kind"]]))
        .collect();
    let undecided: Vec<Value> = extension["org.cardinalcds.undecided"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|u| json!([u["ruleId"], u["condition"], u["absent"]]))
        .collect();
    json!({"cards": cards, "diagnostics": diagnostics, "undecided": undecided})
}

fn answer_of_grpc(response: &proto::CallHookResponse) -> Value {
    let mut cards: Vec<Value> = response.cards.iter().map(view_of_grpc).collect();
    cards.sort_by_key(Value::to_string);
    let diagnostics: Vec<Value> = response
        .diagnostics
        .iter()
        .map(|d| json!([d.rule_id, d.kind]))
        .collect();
    let undecided: Vec<Value> = response
        .undecided
        .iter()
        .map(|u| json!([u.rule_id, u.condition, u.absent]))
        .collect();
    json!({"cards": cards, "diagnostics": diagnostics, "undecided": undecided})
}

/// Each case over HTTP/JSON, over gRPC with the typed context and bytes prefetch, and over gRPC with
/// the JSON-text fields: the three answers are the same.
async fn typed_answers_match_http(pack: &str) {
    let server = TestServer::start().await;
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let mut with_cards = 0;
    let mut refusals = 0;
    let cases = cases(pack);
    let count = cases.len();
    for case in cases {
        let label = name(&case.path);
        let typed = grpc_request(
            &case.request,
            &case.service,
            case.evaluation_time.as_deref(),
        );
        assert!(
            typed.typed_context.is_some(),
            "{label}: a standard hook's context is sent typed"
        );
        assert!(typed.context_json.is_empty() && typed.prefetch_json.is_empty());
        let mut text = typed.clone();
        text.typed_context = None;
        text.context_json = case.request["context"].to_string();
        text.prefetch_json = text
            .prefetch
            .drain()
            .map(|(key, bytes)| (key, String::from_utf8(bytes).unwrap()))
            .collect();

        let (status, body) = http_call(&server, &case).await;
        if status != reqwest::StatusCode::OK {
            // A refused case (e.g. no prefetch and no FHIR server): the same refusal, in the same
            // words, over gRPC.
            assert_eq!(
                status,
                reqwest::StatusCode::PRECONDITION_FAILED,
                "{label}: {body}"
            );
            for message in [typed, text] {
                let refusal = client.call_hook(message).await.expect_err(&label);
                assert_eq!(refusal.code(), Code::FailedPrecondition, "{label}");
                assert_eq!(
                    refusal.message(),
                    body["issue"][0]["diagnostics"].as_str().unwrap(),
                    "{label}"
                );
            }
            refusals += 1;
            continue;
        }
        let expected = answer_of_json(&body);
        let typed_answer = client
            .call_hook(typed)
            .await
            .unwrap_or_else(|s| panic!("{label}: {s:?}"))
            .into_inner();
        assert_eq!(answer_of_grpc(&typed_answer), expected, "{label}");
        let text_answer = client
            .call_hook(text)
            .await
            .unwrap_or_else(|s| panic!("{label}: {s:?}"))
            .into_inner();
        assert_eq!(answer_of_grpc(&text_answer), expected, "{label}");
        if !typed_answer.cards.is_empty() {
            with_cards += 1;
        }
    }
    // The packs' cases are mostly cases that fire: a comparison of empty answers only would prove
    // little.
    assert!(
        with_cards >= 3,
        "{pack}: only {with_cards} cases with cards"
    );
    assert!(
        refusals < count / 2,
        "{pack}: {refusals} of {count} cases refused"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opioid_cases_answer_the_same_typed_as_over_http() {
    typed_answers_match_http("opioid-cds").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeting_cases_answer_the_same_typed_as_over_http() {
    typed_answers_match_http("patient-greeting").await;
}

/// The opioid pack's order-select case (`opioidcds-10`), typed field by field as a caller would
/// write it, without the load generator's mapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_order_select_call_answers_like_http() {
    let server = TestServer::start().await;
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let case = TestCase::read(&common::project_path(
        "rules/opioid-cds/tests/rec-10-illicit-drugs-POS-Cocaine.json",
    ))
    .unwrap();
    let request = &case.request;
    let context = &request["context"];
    assert_eq!(request["hook"], "order-select");
    let message = proto::CallHookRequest {
        service_id: case.service.clone(),
        hook: "order-select".into(),
        hook_instance: request["hookInstance"].as_str().unwrap().into(),
        typed_context: Some(TypedContext::OrderSelect(proto::OrderSelectContext {
            user_id: context["userId"].as_str().unwrap().into(),
            patient_id: context["patientId"].as_str().unwrap().into(),
            encounter_id: context["encounterId"].as_str().unwrap().into(),
            selections: context["selections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect(),
            draft_orders: serde_json::to_vec(&context["draftOrders"]).unwrap(),
        })),
        prefetch: request["prefetch"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_vec(v).unwrap()))
            .collect(),
        evaluation_time: case.evaluation_time.clone().unwrap(),
        ..proto::CallHookRequest::default()
    };
    let answer = client.call_hook(message).await.unwrap().into_inner();
    let (status, body) = http_call(&server, &case).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert!(!answer.cards.is_empty(), "the case fires");
    assert_eq!(answer_of_grpc(&answer), answer_of_json(&body));
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// A valid typed order-sign call for `metformin-renal`, whose patient id is [`SECRET`].
fn order_sign() -> proto::CallHookRequest {
    let fixture = common::request_fixture("metformin-egfr-low");
    let mut message = grpc_request(&fixture, "metformin-renal", Some("2026-11-01"));
    let Some(TypedContext::OrderSign(context)) = &mut message.typed_context else {
        panic!("the fixture is an order-sign call");
    };
    context.patient_id = SECRET.into();
    message
}

fn draft_orders(message: &mut proto::CallHookRequest) -> &mut Vec<u8> {
    match &mut message.typed_context {
        Some(TypedContext::OrderSign(context)) => &mut context.draft_orders,
        _ => panic!("order-sign"),
    }
}

async fn refused(client: &mut CdsHooksClient<Channel>, message: proto::CallHookRequest) -> String {
    match client.call_hook(message).await {
        Ok(answer) => panic!("expected a refusal, got {:?}", answer.into_inner()),
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                !status.message().contains(SECRET) && !status.message().contains("Jane"),
                "a refusal never quotes the request: {}",
                status.message()
            );
            status.message().to_owned()
        }
    }
}

/// A deeply nested JSON array around `SECRET`.
fn deep(levels: usize) -> Vec<u8> {
    format!("{}\"{SECRET}\"{}", "[".repeat(levels), "]".repeat(levels)).into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bytes_in_typed_fields_are_invalid_argument_without_patient_data() {
    let server = TestServer::start().await;
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    // The valid message is answered (so each refusal below is the field's doing).
    let answer = client.call_hook(order_sign()).await.unwrap().into_inner();
    assert!(!answer.cards.is_empty());

    let secret_bytes = SECRET.as_bytes();
    let not_utf8 = [secret_bytes, &[0xff, 0xfe, b'"'], secret_bytes].concat();
    let not_json = [
        b"{\"resourceType\": \"Bundle\", \"id\": ".as_slice(),
        secret_bytes,
    ]
    .concat();
    let not_bundle = format!(r#"{{"resourceType": "Patient", "id": "{SECRET}"}}"#).into_bytes();

    for (bytes, expected) in [
        (
            not_utf8.clone(),
            "`order_sign.draft_orders` is not valid UTF-8 (at byte 17)".to_owned(),
        ),
        (
            not_json.clone(),
            "`order_sign.draft_orders` is not valid JSON (line 1, column 34)".to_owned(),
        ),
        (
            not_bundle.clone(),
            "field `context.draftOrders` must be a FHIR Bundle".to_owned(),
        ),
        // The limit is the JSON context's (which counts the context itself), in HTTP's words.
        (
            deep(cardinal::fhir::MAX_JSON_DEPTH),
            format!(
                "`context` nests JSON deeper than {} levels",
                cardinal::fhir::MAX_JSON_DEPTH
            ),
        ),
        (
            Vec::new(),
            "required field `context.draftOrders` is missing".to_owned(),
        ),
    ] {
        let mut message = order_sign();
        *draft_orders(&mut message) = bytes;
        assert_eq!(refused(&mut client, message).await, expected);
    }

    // HTTP gives the same message for the same JSON context.
    let mut body = common::request_fixture("metformin-egfr-low");
    body["context"]["draftOrders"] = serde_json::from_slice(&not_bundle).unwrap();
    let response = reqwest::Client::new()
        .post(server.url("/cds-services/metformin-renal"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let outcome: Value = response.json().await.unwrap();
    assert_eq!(
        outcome["issue"][0]["diagnostics"],
        "field `context.draftOrders` must be a FHIR Bundle"
    );

    // Prefetch bytes: each refusal names the key, never the content.
    for (bytes, expected) in [
        (
            not_utf8,
            "`prefetch[egfr]` is not valid UTF-8 (at byte 17)".to_owned(),
        ),
        (
            not_json,
            "`prefetch[egfr]` must be a FHIR resource, a Bundle or null (line 1, column 34)"
                .to_owned(),
        ),
        (
            format!(r#"{{"id": "{SECRET}"}}"#).into_bytes(),
            "`prefetch[egfr]` must be a FHIR resource, a Bundle or null".to_owned(),
        ),
        (
            format!(
                r#"{{"resourceType": "Observation", "id": "{SECRET}", "note": {}}}"#,
                String::from_utf8(deep(200)).unwrap()
            )
            .into_bytes(),
            format!(
                "`prefetch[egfr]` nests JSON deeper than {} levels",
                cardinal::fhir::MAX_JSON_DEPTH
            ),
        ),
    ] {
        let mut message = order_sign();
        message.prefetch.insert("egfr".into(), bytes);
        let got = refused(&mut client, message).await;
        assert!(got.starts_with(&expected), "{got}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_context_fields_are_validated_like_the_json_context() {
    let server = TestServer::start().await;
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let edit = |change: &dyn Fn(&mut proto::OrderSignContext)| {
        let mut message = order_sign();
        let Some(TypedContext::OrderSign(context)) = &mut message.typed_context else {
            unreachable!()
        };
        change(context);
        message
    };
    let cases: Vec<(proto::CallHookRequest, &str)> = vec![
        (
            edit(&|c| c.patient_id.clear()),
            "required field `context.patientId` is missing",
        ),
        (
            edit(&|c| c.user_id = SECRET.into()),
            "`context.userId` must be a FHIR reference of the form `Type/id`",
        ),
        (
            {
                let mut message = order_sign();
                message.hook = "patient-view".into();
                message
            },
            "the typed context is the context of hook `order-sign`, and `hook` names another",
        ),
        (
            {
                let mut message = order_sign();
                message.context_json = format!(r#"{{"patientId": "{SECRET}"}}"#);
                message
            },
            "send the context as `context_json` or as a typed context, not both",
        ),
        (
            {
                let mut message = order_sign();
                let bytes = message.prefetch["egfr"].clone();
                message
                    .prefetch_json
                    .insert("egfr".into(), String::from_utf8(bytes).unwrap());
                message
            },
            "prefetch key `egfr` is in both `prefetch_json` and `prefetch`",
        ),
        (
            {
                let mut message = order_sign();
                message.typed_context =
                    Some(TypedContext::OrderSelect(proto::OrderSelectContext {
                        user_id: "Practitioner/1".into(),
                        patient_id: SECRET.into(),
                        selections: vec!["MedicationRequest/1".into()],
                        draft_orders: br#"{"resourceType": "Bundle", "entry": []}"#.to_vec(),
                        ..proto::OrderSelectContext::default()
                    }));
                message
            },
            "the typed context is the context of hook `order-select`, and `hook` names another",
        ),
    ];
    for (message, expected) in cases {
        assert_eq!(refused(&mut client, message).await, expected);
    }

    // An order-select context without selections (proto3 cannot send an empty list apart from
    // none): missing, as in JSON.
    let mut message = order_sign();
    message.hook = "order-select".into();
    message.typed_context = Some(TypedContext::OrderSelect(proto::OrderSelectContext {
        user_id: "Practitioner/1".into(),
        patient_id: SECRET.into(),
        draft_orders: br#"{"resourceType": "Bundle", "entry": []}"#.to_vec(),
        ..proto::OrderSelectContext::default()
    }));
    message.service_id = "opioidcds-10".into();
    assert_eq!(
        refused(&mut client, message).await,
        "required field `context.selections` is missing"
    );
    server.stop().await;
}
