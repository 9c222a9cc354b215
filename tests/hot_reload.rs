//! Rule sets as versioned snapshots, hot reload gated by the rules' own test cases, silent rules and
//! candidate versions — against real servers on 127.0.0.1 (in-process, and the `cardinal` binary
//! for SIGHUP, the directory watcher and a Kubernetes-style `..data` link swap) and temporary rules
//! directories.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cardinal::config::Config;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use cardinal::proto::rule_set_admin_client::RuleSetAdminClient;
use cardinal::reload;
use cardinal::rule_set::{ReloadResult, Trigger};
use common::TestServer;
use common::process::CardinalProcess;
use serde_json::{Value, json};

const RULE_SET_HEADER: &str = "x-cardinal-rule-set";
const RULE_SET_EXTENSION: &str = "org.cardinalcds.ruleSet";
const HBA1C_VALUE_SET: &str =
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.198.12.1013";

fn request() -> Value {
    json!({
        "hook": "patient-view",
        "hookInstance": "0f6b3c1e-6a43-4a52-9f1e-2b8f4c9d7a10",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-01",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4",
                        "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}]},
                    "valueQuantity": {"value": 7.9, "unit": "%"}}}
            ]}
        }
    })
}

/// A one-service rule set whose card names `tag`, with a test case that expects exactly that card:
/// every version passes its own tests.
fn write_greeting(dir: &Path, tag: &str) {
    let service = dir.join("greeting");
    std::fs::create_dir_all(service.join("tests")).unwrap();
    std::fs::write(
        service.join("service.toml"),
        format!(
            "id = \"greeting\"\nhook = \"patient-view\"\ndescription = \"Greets\"\nversion = \"{tag}\"\n\n[source]\nlabel = \"Cardinal\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        service.join("hello.rhai"),
        format!("card(#{{summary: \"Hello {tag}\", indicator: \"info\"}});\n"),
    )
    .unwrap();
    write_case(dir, tag);
}

fn write_case(dir: &Path, tag: &str) {
    let case = json!({
        "service": "greeting",
        "evaluation_time": "2026-11-01",
        "request": request(),
        "expect": {"cards": [{"summary": format!("Hello {tag}"), "indicator": "info"}]}
    });
    std::fs::write(
        dir.join("greeting/tests/hello.json"),
        serde_json::to_string_pretty(&case).unwrap(),
    )
    .unwrap();
}

/// A service whose rule names a value set shipped in its `valuesets/` folder.
fn write_value_set_service(dir: &Path) {
    let service = dir.join("a1c");
    std::fs::create_dir_all(service.join("valuesets")).unwrap();
    std::fs::copy(
        common::project_path(
            "tests/fixtures/rules-terminology/terminology-check/valuesets/hba1c-laboratory-test.json",
        ),
        service.join("valuesets/hba1c-laboratory-test.json"),
    )
    .unwrap();
    std::fs::write(
        service.join("service.toml"),
        "id = \"a1c\"\nhook = \"patient-view\"\ndescription = \"HbA1c on record\"\nversion = \"1\"\n",
    )
    .unwrap();
    std::fs::write(
        service.join("a1c.rhai"),
        format!(
            "require(\"HbA1c on record\", patient.resources_in(\"Observation\", \"{HBA1C_VALUE_SET}\").len() > 0);\ncard(#{{summary: \"HbA1c on record\", indicator: \"info\"}});\n"
        ),
    )
    .unwrap();
}

async fn server_on(dir: &Path) -> TestServer {
    TestServer::start_with_rules(dir).await
}

/// One HTTP call: (header version, extension version, card explanation versions, summaries).
async fn call_http(base: &str) -> (String, String, Vec<String>, Vec<String>) {
    let response = reqwest::Client::new()
        .post(format!("{base}/cds-services/greeting"))
        .json(&request())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let header = response
        .headers()
        .get(RULE_SET_HEADER)
        .expect("X-Cardinal-Rule-Set")
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    let extension = body["extension"][RULE_SET_EXTENSION]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let cards = body["cards"].as_array().cloned().unwrap_or_default();
    let explained = cards
        .iter()
        .map(|c| {
            c["extension"]["org.cardinalcds.explanation"]["ruleSet"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let summaries = cards
        .iter()
        .map(|c| c["summary"].as_str().unwrap_or_default().to_owned())
        .collect();
    (header, extension, explained, summaries)
}

async fn admin_reload(server: &TestServer) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.admin_url("/admin/reload"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Whether a series of `name` carries every one of `labels` (`key="value"`).
fn has_series(metrics: &str, name: &str, labels: &[&str]) -> bool {
    metrics
        .lines()
        .any(|l| l.starts_with(name) && labels.iter().all(|label| l.contains(label)))
}

async fn explain(server: &TestServer) -> Value {
    reqwest::Client::new()
        .post(server.url("/cds-services/greeting/explain"))
        .json(&request())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get_json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn every_response_names_its_rule_set_and_a_good_change_is_swapped_in() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let server = server_on(dir.path()).await;
    let (header, extension, explained, summaries) = call_http(&server.base).await;
    assert_eq!(header.len(), 12, "{header}");
    assert!(header.chars().all(|c| c.is_ascii_hexdigit()), "{header}");
    assert_eq!(extension, header);
    assert_eq!(explained, vec![header.clone()]);
    assert_eq!(summaries, ["Hello v1"]);

    // Nothing changed: nothing is swapped.
    let (status, report) = admin_reload(&server).await;
    assert_eq!(
        (status, report["result"].as_str()),
        (200, Some("unchanged"))
    );

    write_greeting(dir.path(), "v2");
    let (status, report) = admin_reload(&server).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["result"], "swapped", "{report}");
    assert_eq!(report["from"], header.as_str());
    assert_eq!(
        report["test_cases"], 1,
        "the new set's own case ran: {report}"
    );
    let (new_header, _, _, summaries) = call_http(&server.base).await;
    assert_eq!(report["to"], new_header.as_str());
    assert_ne!(new_header, header);
    assert_eq!(summaries, ["Hello v2"]);

    // gRPC names the same version, in the response and its metadata.
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let body = request();
    let response = client
        .call_hook(proto::CallHookRequest {
            service_id: "greeting".into(),
            hook: "patient-view".into(),
            hook_instance: body["hookInstance"].as_str().unwrap().into(),
            context_json: body["context"].to_string(),
            prefetch_json: [(
                "observations".to_owned(),
                body["prefetch"]["observations"].to_string(),
            )]
            .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        response
            .metadata()
            .get(RULE_SET_HEADER)
            .unwrap()
            .to_str()
            .unwrap(),
        new_header
    );
    let response = response.into_inner();
    assert_eq!(response.rule_set, new_header);
    assert_eq!(
        response.cards[0].explanation.as_ref().unwrap().rule_set,
        new_header
    );

    // /readyz shows the serving set and the last reload.
    let ready = get_json(&server.admin_url("/readyz")).await;
    assert_eq!(ready["rule_set"]["version"], new_header.as_str(), "{ready}");
    assert_eq!(
        ready["rule_set"]["last_reload"]["result"], "swapped",
        "{ready}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_syntax_error_is_rejected_with_its_location_and_the_old_set_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let server = server_on(dir.path()).await;
    let (before, ..) = call_http(&server.base).await;

    std::fs::write(
        dir.path().join("greeting/hello.rhai"),
        "card(#{summary: \"Hello v2\", indicator: \"info\"};\n",
    )
    .unwrap();
    let (status, report) = admin_reload(&server).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["result"], "rejected", "{report}");
    assert_eq!(report["serving"], before.as_str());
    assert_eq!(report["affected_services"], json!(["greeting"]), "{report}");
    let errors = report["errors"].to_string();
    assert!(
        errors.contains("hello.rhai:1:"),
        "file:line:column expected: {errors}"
    );

    let (after, _, _, summaries) = call_http(&server.base).await;
    assert_eq!(after, before);
    assert_eq!(summaries, ["Hello v1"]);
    let ready = reqwest::get(server.admin_url("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "the replica still serves its previous set"
    );
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(
        ready["rule_set"]["last_reload"]["result"], "rejected",
        "{ready}"
    );
    assert!(
        ready["rule_set"]["last_reload"]["errors"]
            .to_string()
            .contains("hello.rhai:1:")
    );
    let metrics = metrics(&server).await;
    assert!(
        has_series(
            &metrics,
            "cardinal_rule_set_reloads_total",
            &["result=\"rejected\"", "trigger=\"admin\""]
        ),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_set_that_fails_its_own_test_case_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let server = server_on(dir.path()).await;
    let (before, ..) = call_http(&server.base).await;
    // The rule changes, its test case still expects the old card: a malfunction the tests catch.
    write_greeting(dir.path(), "v2");
    write_case(dir.path(), "v1");
    let (status, report) = admin_reload(&server).await;
    assert_eq!(status, 422, "{report}");
    let errors = report["errors"].to_string();
    assert!(errors.contains("greeting/tests/hello.json"), "{errors}");
    assert!(errors.contains("test case failed"), "{errors}");
    assert_eq!(report["affected_services"], json!(["greeting"]));
    assert_eq!(call_http(&server.base).await.0, before);
    assert_eq!(call_http(&server.base).await.3, ["Hello v1"]);
    server.stop().await;
}

#[tokio::test]
async fn removing_a_value_set_a_rule_names_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    write_value_set_service(dir.path());
    let server = server_on(dir.path()).await;
    let before = server.cardinal.rule_set().version().to_owned();
    std::fs::remove_file(dir.path().join("a1c/valuesets/hba1c-laboratory-test.json")).unwrap();
    let report = reload::reload_async(&server.cardinal, Trigger::Admin).await;
    match &report.result {
        ReloadResult::Rejected {
            serving,
            errors,
            affected_services,
        } => {
            assert_eq!(serving, &before);
            assert_eq!(affected_services, &["a1c".to_owned()]);
            assert!(
                errors
                    .iter()
                    .any(|e| e.contains("a1c.rhai:1:") && e.contains(HBA1C_VALUE_SET)),
                "{errors:?}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    // The value set is still there for the set that serves.
    let response: Value = reqwest::Client::new()
        .post(server.url("/cds-services/a1c"))
        .json(&request())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        response["cards"][0]["summary"], "HbA1c on record",
        "{response}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_calls_during_50_reloads_every_response_is_one_versions() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v0");
    let server = server_on(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut callers = Vec::new();
    for _ in 0..3 {
        let base = server.base.clone();
        let stop = stop.clone();
        callers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(call_http(&base).await);
            }
            seen
        }));
    }
    let grpc = {
        let channel = server.grpc_channel().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut client = CdsHooksClient::new(channel);
            let body = request();
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let response = client
                    .call_hook(proto::CallHookRequest {
                        service_id: "greeting".into(),
                        hook: "patient-view".into(),
                        hook_instance: body["hookInstance"].as_str().unwrap().into(),
                        context_json: body["context"].to_string(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                let header = response
                    .metadata()
                    .get(RULE_SET_HEADER)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                let response = response.into_inner();
                let explained = response
                    .cards
                    .iter()
                    .map(|c| c.explanation.as_ref().unwrap().rule_set.clone())
                    .collect();
                let summaries = response.cards.iter().map(|c| c.summary.clone()).collect();
                seen.push((header, response.rule_set, explained, summaries));
            }
            seen
        })
    };
    let mut swapped = 0;
    for n in 1..=50 {
        write_greeting(dir.path(), &format!("v{n}"));
        let report = reload::reload_async(&server.cardinal, Trigger::Admin).await;
        assert!(
            matches!(report.result, ReloadResult::Swapped { .. }),
            "reload {n}: {report:?}"
        );
        swapped += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = grpc.await.unwrap();
    for caller in callers {
        all.extend(caller.await.unwrap());
    }
    assert_eq!(swapped, 50);
    // A version always means the same card, and header, extension and card agree.
    let mut card_of: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (header, extension, explained, summaries) in &all {
        assert_eq!(header, extension);
        assert!(
            explained.iter().all(|v| v == header),
            "{explained:?} vs {header}"
        );
        assert_eq!(summaries.len(), 1);
        card_of
            .entry(header.clone())
            .or_default()
            .insert(summaries.clone());
    }
    for (version, cards) in &card_of {
        assert_eq!(cards.len(), 1, "version {version} answered {cards:?}");
    }
    let distinct_cards: BTreeSet<_> = card_of.values().flatten().collect();
    assert_eq!(distinct_cards.len(), card_of.len(), "one card per version");
    assert!(
        card_of.len() > 1,
        "calls saw more than one version: {card_of:?}"
    );
    assert!(all.len() >= 50, "{} calls", all.len());
    server.stop().await;
}

#[tokio::test]
async fn grpc_reload_reports_like_http() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let server = server_on(dir.path()).await;
    let mut admin = RuleSetAdminClient::new(server.admin_grpc_channel().await);
    // Not on the EHR-facing port.
    let mut outside = RuleSetAdminClient::new(server.grpc_channel().await);
    assert_eq!(
        outside
            .reload(proto::ReloadRequest {})
            .await
            .unwrap_err()
            .code(),
        tonic::Code::Unimplemented
    );
    let not_here = reqwest::Client::new()
        .post(server.url("/admin/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(not_here.status(), 404);
    let unchanged = admin
        .reload(proto::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unchanged.result, "unchanged");
    write_greeting(dir.path(), "v2");
    let swapped = admin
        .reload(proto::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(swapped.result, "swapped");
    assert_eq!(swapped.previous, unchanged.serving);
    assert_eq!(swapped.serving, server.cardinal.rule_set().version());
    assert_eq!(swapped.test_cases, 1);
    std::fs::write(dir.path().join("greeting/service.toml"), "id = \n").unwrap();
    let rejected = admin
        .reload(proto::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rejected.result, "rejected");
    assert_eq!(rejected.serving, swapped.serving);
    assert!(
        rejected
            .errors
            .iter()
            .any(|e| e.contains("service.toml:1:")),
        "{:?}",
        rejected.errors
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The binary: SIGHUP, the directory watcher, a ConfigMap volume
// ---------------------------------------------------------------------------------------------

/// Calls until the header is no longer `old` (or `limit` passes); returns the last answer.
async fn wait_for_new_version(base: &str, old: &str, limit: Duration) -> (String, Vec<String>) {
    let started = Instant::now();
    loop {
        let (header, _, _, summaries) = call_http(base).await;
        if header != old || started.elapsed() > limit {
            return (header, summaries);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hang_up(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_and_the_new_version_is_in_the_header() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    // Only the signal may reload here.
    let cardinal = CardinalProcess::spawn(dir.path(), &[("CARDINAL_RELOAD__WATCH", "false")]);
    let (before, _, _, summaries) = call_http(&cardinal.base).await;
    assert_eq!(summaries, ["Hello v1"]);
    write_greeting(dir.path(), "v2");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        call_http(&cardinal.base).await.0,
        before,
        "no reload without the signal"
    );
    hang_up(cardinal.pid());
    let (after, summaries) =
        wait_for_new_version(&cardinal.base, &before, Duration::from_secs(30)).await;
    assert_ne!(after, before, "SIGHUP did not reload");
    assert_eq!(summaries, ["Hello v2"]);
    let logs = cardinal.stop(Duration::from_secs(10));
    assert!(logs.stderr.contains("rule set reloaded"), "{}", logs.stderr);
    assert!(
        logs.stderr.contains("\"trigger\":\"signal\""),
        "{}",
        logs.stderr
    );
}

#[tokio::test]
async fn a_file_edit_is_picked_up_by_the_watcher() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let cardinal = CardinalProcess::spawn(dir.path(), &[("CARDINAL_RELOAD__DEBOUNCE_MS", "100")]);
    let (before, ..) = call_http(&cardinal.base).await;
    write_greeting(dir.path(), "v2");
    let (after, summaries) =
        wait_for_new_version(&cardinal.base, &before, Duration::from_secs(30)).await;
    assert_ne!(after, before, "the edit was not picked up");
    assert_eq!(summaries, ["Hello v2"]);
    // A broken edit is refused and logged with its location; v2 keeps answering.
    std::fs::write(dir.path().join("greeting/hello.rhai"), "let = 1;\n").unwrap();
    assert!(
        cardinal
            .wait_for_log("rule set rejected", Duration::from_secs(30))
            .await,
        "{}",
        cardinal.logs_so_far().1
    );
    assert_eq!(call_http(&cardinal.base).await.3, ["Hello v2"]);
    let logs = cardinal.stop(Duration::from_secs(10));
    assert!(
        logs.stderr.contains("greeting/hello.rhai:1:"),
        "{}",
        logs.stderr
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_configmap_data_link_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    // A ConfigMap volume: the files live in a timestamped hidden folder, `..data` links to it, and
    // the visible entries link through `..data`. An update writes a new folder and swaps the link.
    let volume = tempfile::tempdir().unwrap();
    let root = volume.path();
    let first = root.join("..2026_11_29_10_00_00.000000001");
    write_greeting(&first, "v1");
    symlink("..2026_11_29_10_00_00.000000001", root.join("..data")).unwrap();
    symlink("..data/greeting", root.join("greeting")).unwrap();
    let cardinal = CardinalProcess::spawn(root, &[("CARDINAL_RELOAD__DEBOUNCE_MS", "100")]);
    let (before, _, _, summaries) = call_http(&cardinal.base).await;
    assert_eq!(summaries, ["Hello v1"]);

    let second = root.join("..2026_11_29_10_05_00.000000002");
    write_greeting(&second, "v2");
    symlink("..2026_11_29_10_05_00.000000002", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let (after, summaries) =
        wait_for_new_version(&cardinal.base, &before, Duration::from_secs(30)).await;
    assert_ne!(after, before, "the ..data swap was not picked up");
    assert_eq!(summaries, ["Hello v2"]);
    cardinal.stop(Duration::from_secs(10));
}

#[tokio::test]
async fn a_broken_rule_set_still_refuses_to_start_and_names_the_services() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    write_value_set_service(dir.path());
    std::fs::write(dir.path().join("greeting/hello.rhai"), "let = 1;\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--rules"])
        .arg(dir.path())
        .env("CARDINAL_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hello.rhai:1:"), "{stderr}");
    assert!(stderr.contains("services affected: greeting"), "{stderr}");
    assert!(!stderr.contains("services affected: a1c"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Silent rules and candidates
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_silent_rule_is_evaluated_and_counted_but_returns_no_card() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    // A second rule, switched on silently.
    std::fs::write(
        dir.path().join("greeting/new-alert.rhai"),
        "card(#{summary: \"New alert\", indicator: \"warning\"});\n",
    )
    .unwrap();
    let mut manifest = std::fs::read_to_string(dir.path().join("greeting/service.toml")).unwrap();
    manifest.push_str("\n[rules.new-alert]\nmode = \"silent\"\n");
    std::fs::write(dir.path().join("greeting/service.toml"), manifest).unwrap();
    let server = server_on(dir.path()).await;

    let (_, _, _, summaries) = call_http(&server.base).await;
    assert_eq!(
        summaries,
        ["Hello v1"],
        "the silent rule's card must not reach the EHR"
    );

    let explain = explain(&server).await;
    let rule = explain["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ruleId"] == "new-alert")
        .cloned()
        .unwrap();
    assert_eq!(rule["mode"], "silent", "{explain}");
    assert_eq!(rule["verdict"], "fired", "{explain}");
    assert_eq!(rule["cards"], json!(["New alert"]), "{explain}");
    assert_eq!(explain["cards"].as_array().unwrap().len(), 1, "{explain}");

    let metrics = metrics(&server).await;
    assert!(
        has_series(
            &metrics,
            "cardinal_rule_silent_cards_total",
            &["rule=\"new-alert\"", "indicator=\"warning\""]
        ),
        "{metrics}"
    );
    assert!(
        !has_series(&metrics, "cardinal_cards_total", &["rule=\"new-alert\""]),
        "a silent card is not a returned card: {metrics}"
    );
    server.stop().await;
}

/// The greeting with a candidate version of its rule that answers differently.
fn write_candidate(dir: &Path, summary: &str) {
    let candidates = dir.join("greeting/candidates");
    std::fs::create_dir_all(&candidates).unwrap();
    std::fs::write(
        candidates.join("hello.rhai"),
        format!("card(#{{summary: \"{summary}\", indicator: \"warning\"}});\n"),
    )
    .unwrap();
    let mut manifest = std::fs::read_to_string(dir.join("greeting/service.toml")).unwrap();
    manifest.push_str("\n[candidates.hello]\nversion = \"2.0.0-rc1\"\n");
    std::fs::write(dir.join("greeting/service.toml"), manifest).unwrap();
}

#[tokio::test]
async fn a_candidate_that_disagrees_is_counted_and_shown_beside_the_rule_in_use() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    write_candidate(dir.path(), "Hello from the candidate");
    let server = server_on(dir.path()).await;
    let (_, _, _, summaries) = call_http(&server.base).await;
    assert_eq!(summaries, ["Hello v1"], "candidates are never shown");

    let explain = explain(&server).await;
    let disagreements = explain["disagreements"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(disagreements.len(), 1, "{explain}");
    let d = &disagreements[0];
    assert_eq!(d["ruleId"], "hello");
    assert_eq!(d["activeVersion"], "v1");
    assert_eq!(d["candidateVersion"], "2.0.0-rc1");
    let differences = d["differences"].to_string();
    assert!(
        differences.contains("indicator: info in use, warning candidate"),
        "{differences}"
    );
    assert!(
        differences.contains("Hello from the candidate"),
        "{differences}"
    );
    let candidate = explain["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["mode"] == "candidate")
        .cloned()
        .unwrap();
    assert_eq!(candidate["ruleVersion"], "2.0.0-rc1");
    assert_eq!(candidate["file"], "greeting/candidates/hello.rhai");

    let metrics = metrics(&server).await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cardinal_candidate_disagreements_total")
                && l.contains("rule=\"hello\"")
                && l.trim_end().ends_with(" 2")),
        "the call and the explain call each disagreed: {metrics}"
    );
    server.stop().await;
}

#[test]
fn cardinal_test_reports_where_a_candidate_differs() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    write_candidate(dir.path(), "Hello from the candidate");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .arg("test")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the rule in use passes its case: {stdout}"
    );
    assert!(stdout.contains("1 passed, 0 failed"), "{stdout}");
    assert!(
        stdout.contains("CANDIDATE DIFFERS rule hello v1 vs candidate 2.0.0-rc1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("candidates: 1 of 1 cases differ"),
        "{stdout}"
    );

    // A candidate that agrees is not reported.
    let agreeing = tempfile::tempdir().unwrap();
    write_greeting(agreeing.path(), "v1");
    let candidates = agreeing.path().join("greeting/candidates");
    std::fs::create_dir_all(&candidates).unwrap();
    std::fs::copy(
        agreeing.path().join("greeting/hello.rhai"),
        candidates.join("hello.rhai"),
    )
    .unwrap();
    let mut manifest =
        std::fs::read_to_string(agreeing.path().join("greeting/service.toml")).unwrap();
    manifest.push_str("\n[candidates.hello]\nversion = \"2\"\n");
    std::fs::write(agreeing.path().join("greeting/service.toml"), manifest).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .arg("test")
        .arg(agreeing.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(!stdout.contains("CANDIDATE DIFFERS"), "{stdout}");
}

#[test]
fn a_candidate_without_a_version_or_a_rule_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    write_greeting(dir.path(), "v1");
    let candidates = dir.path().join("greeting/candidates");
    std::fs::create_dir_all(&candidates).unwrap();
    std::fs::write(candidates.join("hello.rhai"), "1;\n").unwrap();
    std::fs::write(candidates.join("no-such-rule.rhai"), "1;\n").unwrap();
    let config = Config {
        rules_dir: dir.path().to_path_buf(),
        ..Config::default()
    };
    let errors = cardinal::evaluator::Cardinal::load(config)
        .err()
        .expect("load error")
        .to_string();
    assert!(
        errors.contains("candidate `hello` needs a version of its own"),
        "{errors}"
    );
    assert!(
        errors.contains("candidate `no-such-rule` has no active rule `no-such-rule`"),
        "{errors}"
    );
}
