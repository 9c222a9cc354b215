//! A condition that could not be decided because an element was absent is not a false one: the
//! response says which rule stopped on which absent elements (HTTP `extension` and gRPC), the explain
//! report marks the condition unknown, and the rule-run metric counts it with outcome `unknown`.
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
use cardinal::rule_tests::TestCase;
use common::TestServer;
use serde_json::Value;

fn case(name: &str) -> TestCase {
    TestCase::read(&common::project_path(&format!(
        "rules/opioid-cds/tests/{name}.json"
    )))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_without_category_is_reported_undecided_not_false() {
    let server = TestServer::start().await;
    let http = reqwest::Client::new();
    let undecided = case("cardinal/rec-01-draft-without-category");
    let decided = case("rec-01-out-inpatient-opioid");
    let post = |c: &TestCase, path: String| {
        http.post(server.url(&path))
            .header(
                "x-cardinal-evaluation-time",
                c.evaluation_time.clone().unwrap(),
            )
            .json(&c.request)
            .send()
    };

    let json: Value = post(&undecided, "/cds-services/opioidcds-01".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["cards"], Value::Array(vec![]));
    let entry = &json["extension"]["org.cardinalcds.undecided"][0];
    assert_eq!(entry["ruleId"], "rec01-nonopioid-acute-pain", "{json}");
    assert_eq!(entry["absent"][0], "MedicationRequest.category", "{json}");
    assert!(
        json["extension"]
            .get("org.cardinalcds.diagnostics")
            .is_none(),
        "not an error"
    );

    // Inpatient: decided (false), so nothing is undecided.
    let json: Value = post(&decided, "/cds-services/opioidcds-01".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        json["extension"].get("org.cardinalcds.undecided").is_none(),
        "{json}"
    );

    // The explain report marks the condition unknown, with the element.
    let report: Value = post(&undecided, "/cds-services/opioidcds-01/explain".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let condition = &report["rules"][0]["conditions"][0];
    assert_eq!(condition["met"], false);
    assert_eq!(
        condition["unknown"][0], "MedicationRequest.category",
        "{report}"
    );

    // gRPC carries the same.
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let obj = undecided.request.as_object().unwrap();
    let response = client
        .call_hook(proto::CallHookRequest {
            service_id: "opioidcds-01".into(),
            hook: "order-sign".into(),
            hook_instance: obj["hookInstance"].as_str().unwrap().into(),
            context_json: obj["context"].to_string(),
            prefetch_json: obj["prefetch"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            evaluation_time: undecided.evaluation_time.clone().unwrap(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.undecided.len(), 1);
    assert_eq!(response.undecided[0].absent, ["MedicationRequest.category"]);

    // The rule-run metric counts it apart.
    let metrics = http
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("cardinal_rule_evaluations_total")
                && l.contains("outcome=\"unknown\"")
                && l.contains("rec01-nonopioid-acute-pain")
        })
        .unwrap_or_else(|| panic!("no unknown outcome in /metrics:\n{metrics}"));
    // The hook call, the explain call and the gRPC call.
    assert!(line.trim_end().ends_with(" 3"), "{line}");
    server.stop().await;
}
