//! Repeat suppression against a real server on 127.0.0.1: a service with `suppress_repeat_hours = 24`
//! shows a card once per patient per 24 hours (evaluation times pinned with the header, so the
//! window is tested without waiting); the held-back card is in the explain report, the metrics and
//! the store's analytics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::path::Path;

use common::TestServer;
use serde_json::{Value, json};

fn write_service(dir: &Path) {
    let service = dir.join("hypertension-review");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"hypertension-review\"\nhook = \"patient-view\"\ndescription = \"Reminds to review blood pressure control\"\nversion = \"1.0.0\"\nsuppress_repeat_hours = 24\n\n[source]\nlabel = \"Cardinal\"\n",
    )
    .unwrap();
    std::fs::write(
        service.join("review.rhai"),
        "card(#{summary: \"Review blood pressure control\", indicator: \"info\"});\n",
    )
    .unwrap();
}

fn request(patient: &str) -> Value {
    json!({
        "hook": "patient-view",
        "hookInstance": "3f1d0c2e-9b7a-4c55-8e21-6a4f0d9b1c77",
        "context": {"userId": "Practitioner/1", "patientId": patient}
    })
}

async fn post(server: &TestServer, path: &str, patient: &str, at: &str) -> Value {
    let response = reqwest::Client::new()
        .post(server.url(path))
        .header("x-cardinal-evaluation-time", at)
        .json(&request(patient))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn summaries(body: &Value) -> Vec<String> {
    body["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["summary"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_same_card_is_shown_once_per_patient_within_the_window() {
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path());
    let server = TestServer::start_with_rules(dir.path()).await;
    let call = "/cds-services/hypertension-review";
    let first = post(&server, call, "p1", "2026-11-01T08:00:00Z").await;
    assert_eq!(summaries(&first), ["Review blood pressure control"]);

    // Within 24 hours: held back for p1, shown for p2.
    let repeat = post(&server, call, "p1", "2026-11-01T20:00:00Z").await;
    assert!(summaries(&repeat).is_empty(), "{repeat}");
    let other = post(&server, call, "p2", "2026-11-01T20:00:00Z").await;
    assert_eq!(summaries(&other), ["Review blood pressure control"]);

    // The explain report says why there is no card.
    let explain = post(
        &server,
        &format!("{call}/explain"),
        "p1",
        "2026-11-01T21:00:00Z",
    )
    .await;
    let held = explain["suppressed"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(held.len(), 1, "{explain}");
    assert_eq!(held[0]["ruleId"], "review");
    assert_eq!(held[0]["lastShown"], "2026-11-01T08:00:00Z");
    assert_eq!(held[0]["windowHours"], 24);

    // A day after it was shown, it is shown again.
    let next_day = post(&server, call, "p1", "2026-11-02T08:00:00Z").await;
    assert_eq!(summaries(&next_day), ["Review blood pressure control"]);

    let metrics = reqwest::get(server.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("cardinal_cards_suppressed_total") && l.contains("rule=\"review\""))
        .unwrap_or_else(|| panic!("no suppression metric:\n{metrics}"));
    assert!(
        line.trim_end().ends_with(" 2"),
        "the call and the explain call: {line}"
    );

    // The store counts the held-back cards apart (records are written off the response path).
    let mut analytics = Value::Null;
    for _ in 0..50 {
        analytics = reqwest::get(server.admin_url("/analytics/rules?since=30d"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if analytics.to_string().contains("\"suppressed\"") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        analytics.to_string().contains("\"suppressed\""),
        "{analytics}"
    );
    server.stop().await;
}

#[test]
fn cardinal_test_evaluates_every_case_as_a_first_call() {
    // Two identical cases: both see the card (suppression is for hook calls only).
    let dir = tempfile::tempdir().unwrap();
    write_service(dir.path());
    let tests = dir.path().join("hypertension-review/tests");
    std::fs::create_dir_all(&tests).unwrap();
    for name in ["a", "b"] {
        let case = json!({
            "service": "hypertension-review",
            "evaluation_time": "2026-11-01",
            "request": request("p1"),
            "expect": {"cards": [{"summary": "Review blood pressure control", "indicator": "info"}]}
        });
        std::fs::write(tests.join(format!("{name}.json")), case.to_string()).unwrap();
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
}

/// A summary that quotes something changing (here the date) would make every call a new card: the
/// rule's `repeatKey` says what "the same card" is.
#[tokio::test]
async fn a_rule_s_repeat_key_makes_cards_with_changing_summaries_the_same_card() {
    let dir = tempfile::tempdir().unwrap();
    let service = dir.path().join("statin-review");
    std::fs::create_dir_all(&service).unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"statin-review\"\nhook = \"patient-view\"\ndescription = \"Reminds to review statin therapy\"\nversion = \"1.0.0\"\nsuppress_repeat_hours = 72\n\n[source]\nlabel = \"Cardinal\"\n",
    )
    .unwrap();
    std::fs::write(
        service.join("review.rhai"),
        "card(#{summary: `Review statin therapy (as of ${today()})`, indicator: \"info\", repeatKey: \"statin-review\"});\n",
    )
    .unwrap();
    let server = TestServer::start_with_rules(dir.path()).await;
    let call = "/cds-services/statin-review";
    let first = post(&server, call, "p1", "2026-11-01T08:00:00Z").await;
    assert_eq!(
        summaries(&first),
        ["Review statin therapy (as of 2026-11-01)"]
    );
    assert!(
        first["cards"][0].get("repeatKey").is_none(),
        "never sent: {first}"
    );
    // The next day the summary differs, the key does not: held back within the 72 hours.
    let next_day = post(&server, call, "p1", "2026-11-02T08:00:00Z").await;
    assert!(summaries(&next_day).is_empty(), "{next_day}");
    let after = post(&server, call, "p1", "2026-11-05T09:00:00Z").await;
    assert_eq!(
        summaries(&after),
        ["Review statin therapy (as of 2026-11-05)"]
    );
    server.stop().await;
}
