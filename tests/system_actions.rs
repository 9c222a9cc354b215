//! CDS Hooks `systemActions`: a rule emits them with `system_action(...)`, they are validated like a
//! card's actions, and both transports return them. A rule that fails or stops on a condition
//! returns none.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::TestServer;
use serde_json::Value;

fn rules() -> std::path::PathBuf {
    common::project_path("tests/fixtures/rules-system-actions")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_actions_are_returned_over_http_and_grpc() {
    let server = TestServer::start_with_rules(&rules()).await;
    let body = common::request_fixture("kidney-followup-patient-view");

    // HTTP/JSON.
    let response = reqwest::Client::new()
        .post(server.url("/cds-services/kidney-followup"))
        .header("x-cardinal-evaluation-time", "2026-11-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json: Value = response.json().await.unwrap();
    assert_eq!(json["cards"], Value::Array(vec![]), "{json}");
    let actions = json["systemActions"].as_array().expect("systemActions");
    assert_eq!(actions.len(), 1, "{json}");
    assert_eq!(actions[0]["type"], "create");
    assert_eq!(actions[0]["resource"]["resourceType"], "Task");
    assert_eq!(actions[0]["resource"]["for"]["reference"], "Patient/pat-9");
    assert_eq!(actions[0]["resource"]["authoredOn"], "2026-11-01");
    // The invalid action is a rule error naming the field; the stopped rule sent nothing.
    let diagnostics = json["extension"]["org.cardinalcds.diagnostics"]
        .as_array()
        .unwrap();
    assert_eq!(diagnostics.len(), 1, "{json}");
    assert_eq!(diagnostics[0]["ruleId"], "b-invalid-action");
    assert!(
        diagnostics[0]["message"]
            .as_str()
            .unwrap()
            .contains("invalid system action: `system_action.resourceId` is required"),
        "{json}"
    );
    assert!(!json.to_string().contains("never sent"));

    // gRPC: the same action.
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let obj = body.as_object().unwrap();
    let request = proto::CallHookRequest {
        service_id: "kidney-followup".into(),
        hook: "patient-view".into(),
        hook_instance: obj["hookInstance"].as_str().unwrap().into(),
        context_json: obj["context"].to_string(),
        prefetch_json: obj["prefetch"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        evaluation_time: "2026-11-01".into(),
        ..Default::default()
    };
    let grpc = client.call_hook(request).await.unwrap().into_inner();
    assert!(grpc.cards.is_empty());
    assert_eq!(grpc.system_actions.len(), 1, "{grpc:?}");
    let action = &grpc.system_actions[0];
    assert_eq!(action.r#type, "create");
    let resource: Value = serde_json::from_str(&action.resource_json).unwrap();
    assert_eq!(resource, actions[0]["resource"]);
    assert_eq!(grpc.diagnostics.len(), 1);
    server.stop().await;
}
