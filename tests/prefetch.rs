//! Prefetch over real HTTP: Cardinal on 127.0.0.1:0 calls a real FHIR server (Medplum's FHIR router
//! over its in-memory repository, `tests/fhir-server`, holding the Synthea patients of
//! `tests/fixtures/synthea`) for the keys the EHR did not send. Requests are counted on the server
//! side. Covers: full, partial and no prefetch; `null` and OperationOutcome keys; paging and the page
//! cap; optional keys; the deadline; 401/500; POST `_search` for long URLs; no `fhirServer`; templates
//! refused at load time; the bearer token and patient ids kept out of logs and errors.
//!
//! Needs `bash .ci/fhir-server-setup.sh` (npm ci) once; the tests say so when it has not been run.
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
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::prefetch::PrefetchConfig;
use common::fhir_server::{FhirServer, FhirServerOptions, SeenRequest, synthea_fixtures};
use common::{TestServer, project_path};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

const RULES: &str = "tests/fixtures/rules-prefetch";
/// The bearer token the FHIR server requires; it must never appear in Cardinal's logs or errors.
const TOKEN: &str = "tok-3f9b1c7e-cardinal-test-secret";
/// Edward Gulgowski: 32 Observations (3 eGFR), 4 Conditions, 3 MedicationRequests.
const EDWARD: &str = "4ef9f896-10bc-4479-acd6-1153e7318f14";
/// Zachary Kutch: 70 Observations, 7 pages of 10.
const ZACHARY: &str = "4f830f8a-7051-4bf4-9882-40f5c60e4159";
/// A Practitioner in the Synthea fixtures: the user of every call.
const PRACTITIONER: &str = "79a13b7d-a382-4b6a-a31a-57e763818a56";
const EXPLANATION: &str = "org.cardinalcds.explanation";
const EGFR_SEARCH: &str = "code=http://loinc.org|33914-3,http://loinc.org|62238-1&_sort=-date";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn fhir_server() -> FhirServer {
    FhirServer::start(
        &synthea_fixtures(),
        FhirServerOptions {
            token: Some(TOKEN.into()),
            ..FhirServerOptions::default()
        },
    )
}

/// Cardinal allowed to fetch from `fhir` (and from nothing else).
async fn cardinal(fhir: &FhirServer) -> TestServer {
    cardinal_with(fhir, PrefetchConfig::default()).await
}

async fn cardinal_with(fhir: &FhirServer, mut prefetch: PrefetchConfig) -> TestServer {
    prefetch.allowed_fhir_servers.push(fhir.base.clone());
    cardinal_allowing(prefetch).await
}

/// Cardinal with exactly `prefetch` (its `allowed_fhir_servers` included).
async fn cardinal_allowing(prefetch: PrefetchConfig) -> TestServer {
    TestServer::start_with(Config {
        rules_dir: project_path(RULES),
        prefetch,
        ..Config::default().development()
    })
    .await
}

/// A patient-view call for `patient`, by the Synthea practitioner, with `fhirServer` and the token.
fn hook_request(fhir: &FhirServer, patient: &str, prefetch: Value) -> Value {
    hook_request_with(Some(&fhir.base), Some(TOKEN), patient, prefetch)
}

fn hook_request_with(
    fhir_server: Option<&str>,
    token: Option<&str>,
    patient: &str,
    prefetch: Value,
) -> Value {
    let mut body = json!({
        "hook": "patient-view",
        "hookInstance": "6f0cbd6e-1b0e-4f8e-9a39-3b0e1f5bb2c1",
        "context": {"userId": format!("Practitioner/{PRACTITIONER}"), "patientId": patient},
        "prefetch": prefetch,
    });
    if let Some(server) = fhir_server {
        body["fhirServer"] = json!(server);
    }
    if let Some(token) = token {
        body["fhirAuthorization"] = json!({
            "access_token": token, "token_type": "Bearer", "expires_in": 300,
            "scope": "patient/*.read user/Practitioner.read", "subject": "cardinal",
        });
    }
    body
}

async fn call(server: &TestServer, service: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(server.url(&format!("/cds-services/{service}")))
        .json(body)
        .send()
        .await
        .expect("POST to Cardinal");
    let status = response.status();
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status}: {e}: {text}"));
    (status, body)
}

async fn call_ok(server: &TestServer, service: &str, body: &Value) -> Value {
    let (status, response) = call(server, service, body).await;
    assert_eq!(status, StatusCode::OK, "{response:#}");
    response
}

/// A 412's diagnostics, checked to be a one-issue OperationOutcome.
async fn call_412(server: &TestServer, service: &str, body: &Value) -> String {
    let (status, response) = call(server, service, body).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{response:#}");
    assert_eq!(response["resourceType"], "OperationOutcome", "{response:#}");
    assert_eq!(response["issue"][0]["code"], "incomplete", "{response:#}");
    let diagnostics = response["issue"][0]["diagnostics"]
        .as_str()
        .expect("diagnostics")
        .to_owned();
    assert_no_secrets("412 body", &response.to_string());
    diagnostics
}

fn assert_no_secrets(what: &str, text: &str) {
    for secret in [TOKEN, EDWARD, ZACHARY, PRACTITIONER] {
        assert!(!text.contains(secret), "{what} contains {secret}:\n{text}");
    }
}

fn summary(response: &Value) -> String {
    response["cards"][0]["summary"]
        .as_str()
        .unwrap_or_else(|| panic!("no card: {response:#}"))
        .to_owned()
}

/// Fact name → origin (`prefetch` or `fetched`) of the first card.
fn origins(response: &Value) -> BTreeMap<String, String> {
    response["cards"][0]["extension"][EXPLANATION]["facts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| {
            (
                f["name"].as_str().unwrap_or_default().to_owned(),
                f["origin"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// `METHOD path` of each request the FHIR server saw, sorted (concurrent fetches arrive in any order).
fn lines(requests: &[SeenRequest]) -> Vec<String> {
    let mut lines: Vec<String> = requests
        .iter()
        .map(|r| format!("{} {}", r.method, r.url))
        .collect();
    lines.sort();
    lines
}

/// The `chart` service's five templates, rendered for `patient`, relative to the FHIR base.
fn chart_urls(patient: &str) -> Vec<(&'static str, String)> {
    vec![
        ("patient", format!("Patient/{patient}")),
        (
            "egfr",
            format!("Observation?patient={patient}&{EGFR_SEARCH}"),
        ),
        ("conditions", format!("Condition?patient={patient}")),
        (
            "medications",
            format!("MedicationRequest?patient={patient}"),
        ),
        ("practitioner", format!("Practitioner/{PRACTITIONER}")),
    ]
}

/// What an EHR would prefetch for `chart`, fetched by the test itself.
async fn chart_prefetch(fhir: &FhirServer, patient: &str) -> Map<String, Value> {
    let mut prefetch = Map::new();
    for (key, url) in chart_urls(patient) {
        prefetch.insert(key.to_owned(), fhir.get(&url, Some(TOKEN)).await);
    }
    prefetch
}

/// How the FHIR server sees the GET of a relative URL (its query as the client sent it).
fn seen(relative: &str) -> String {
    format!("GET /fhir/{relative}")
}

// ---------------------------------------------------------------------------------------------
// Reconciliation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_prefetch_makes_no_fetch() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let prefetch = chart_prefetch(&fhir, EDWARD).await;
    fhir.reset().await;
    let response = call_ok(
        &cardinal,
        "chart",
        &hook_request(&fhir, EDWARD, prefetch.into()),
    )
    .await;
    assert_eq!(lines(&fhir.requests().await), Vec::<String>::new());
    assert!(
        summary(&response).starts_with("patient yes; eGFR 94.9"),
        "{response:#}"
    );
    assert!(
        summary(&response).ends_with("conditions 4; medications 3; practitioners 1"),
        "{response:#}"
    );
    let origins = origins(&response);
    assert_eq!(origins.len(), 3, "{origins:?}");
    assert!(origins.values().all(|o| o == "prefetch"), "{origins:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_prefetch_fetches_every_key_and_rules_see_the_same_data() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let sent = chart_prefetch(&fhir, EDWARD).await;
    let with_prefetch = call_ok(
        &cardinal,
        "chart",
        &hook_request(&fhir, EDWARD, sent.into()),
    )
    .await;
    fhir.reset().await;

    let fetched = call_ok(&cardinal, "chart", &hook_request(&fhir, EDWARD, json!({}))).await;
    let requests = fhir.requests().await;
    let mut expected: Vec<String> = chart_urls(EDWARD).iter().map(|(_, u)| seen(u)).collect();
    expected.sort();
    assert_eq!(lines(&requests), expected);
    assert!(
        requests.iter().all(|r| r.authorized),
        "the bearer token was not sent: {requests:?}"
    );
    // The same patient context, whichever way the data came; only the origin differs.
    assert_eq!(summary(&fetched), summary(&with_prefetch));
    let origins = origins(&fetched);
    assert_eq!(
        origins.keys().collect::<Vec<_>>(),
        ["Latest eGFR", "Patient", "User"]
    );
    assert!(origins.values().all(|o| o == "fetched"), "{origins:?}");

    // Without any `prefetch` member at all, the same.
    fhir.reset().await;
    let mut body = hook_request(&fhir, EDWARD, json!({}));
    body.as_object_mut().expect("object").remove("prefetch");
    let response = call_ok(&cardinal, "chart", &body).await;
    assert_eq!(summary(&response), summary(&with_prefetch));
    assert_eq!(fhir.requests().await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_prefetch_fetches_only_the_missing_keys() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let mut prefetch = chart_prefetch(&fhir, EDWARD).await;
    prefetch.remove("egfr");
    prefetch.remove("medications");
    fhir.reset().await;
    let response = call_ok(
        &cardinal,
        "chart",
        &hook_request(&fhir, EDWARD, prefetch.into()),
    )
    .await;
    assert_eq!(
        lines(&fhir.requests().await),
        [
            seen(&format!("MedicationRequest?patient={EDWARD}")),
            seen(&format!("Observation?patient={EDWARD}&{EGFR_SEARCH}")),
        ]
    );
    assert!(summary(&response).ends_with("conditions 4; medications 3; practitioners 1"));
    let origins = origins(&response);
    assert_eq!(origins["Patient"], "prefetch");
    assert_eq!(origins["User"], "prefetch");
    assert_eq!(origins["Latest eGFR"], "fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn null_keys_mean_no_resource_and_are_not_fetched() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let prefetch = json!({"patient": null, "practitioner": null});
    let response = call_ok(&cardinal, "chart", &hook_request(&fhir, EDWARD, prefetch)).await;
    let requests = lines(&fhir.requests().await);
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| !r.contains("/Patient/") && !r.contains("/Practitioner/")),
        "{requests:?}"
    );
    assert!(
        summary(&response).starts_with("patient no; eGFR 94.9"),
        "{response:#}"
    );
    assert!(
        summary(&response).ends_with("practitioners 0"),
        "{response:#}"
    );

    // A fetched read that finds nothing (404) is the same "no such resource".
    let mut prefetch = chart_prefetch(&fhir, EDWARD).await;
    prefetch.remove("practitioner");
    let mut body = hook_request(&fhir, EDWARD, prefetch.into());
    body["context"]["userId"] = json!("Practitioner/no-such-practitioner");
    fhir.reset().await;
    let response = call_ok(&cardinal, "chart", &body).await;
    assert_eq!(
        lines(&fhir.requests().await),
        [seen("Practitioner/no-such-practitioner")]
    );
    assert!(
        summary(&response).ends_with("practitioners 0"),
        "{response:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_outcome_keys_are_fetched_and_never_seen_by_rules() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let mut prefetch = chart_prefetch(&fhir, EDWARD).await;
    let full = call_ok(
        &cardinal,
        "chart",
        &hook_request(&fhir, EDWARD, prefetch.clone().into()),
    )
    .await;
    prefetch.insert(
        "egfr".into(),
        json!({"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "timeout", "diagnostics": "EHR search timed out"}]}),
    );
    fhir.reset().await;
    let response = call_ok(
        &cardinal,
        "chart",
        &hook_request(&fhir, EDWARD, prefetch.into()),
    )
    .await;
    assert_eq!(
        lines(&fhir.requests().await),
        [seen(&format!("Observation?patient={EDWARD}&{EGFR_SEARCH}"))]
    );
    assert_eq!(summary(&response), summary(&full));
    assert_eq!(origins(&response)["Latest eGFR"], "fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_fhir_server_missing_keys_are_412_and_nothing_is_fetched() {
    // No FHIR server runs here at all: nothing may be fetched.
    let cardinal = cardinal_allowing(PrefetchConfig::default()).await;
    let body = hook_request_with(None, None, EDWARD, json!({"patient": null, "egfr": null}));
    let diagnostics = call_412(&cardinal, "chart", &body).await;
    assert_eq!(
        diagnostics,
        "required FHIR data could not be obtained: prefetch conditions, medications, practitioner \
         not provided by the EHR, and the request has no `fhirServer` to fetch from"
    );
    // An optional key alone missing: the rules run without it.
    let body = hook_request_with(None, None, EDWARD, json!({"patient": null}));
    let response = call_ok(&cardinal, "paged-optional", &body).await;
    assert_eq!(
        response["cards"],
        json!([]),
        "no Patient: the rule did not fire"
    );
    // Only http and https servers.
    for server in ["ftp://127.0.0.1/fhir", "fhir/R4", "file:///etc/passwd"] {
        let body = hook_request_with(Some(server), Some(TOKEN), EDWARD, json!({}));
        let diagnostics = call_412(&cardinal, "paged", &body).await;
        assert!(
            diagnostics.contains("prefetch observations")
                && diagnostics.contains("`fhirServer` is not an absolute http or https URL"),
            "{server}: {diagnostics}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Paging
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_follow_next_links_up_to_the_page_cap() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    // 32 Observations, 10 a page: 4 pages.
    let response = call_ok(&cardinal, "paged", &hook_request(&fhir, EDWARD, json!({}))).await;
    assert_eq!(summary(&response), "observations 32");
    let first = format!("Observation?patient={EDWARD}&_count=10");
    assert_eq!(
        lines(&fhir.requests().await),
        [
            seen(&first),
            seen(&format!("{first}&_offset=10")),
            seen(&format!("{first}&_offset=20")),
            seen(&format!("{first}&_offset=30")),
        ]
    );

    // 70 Observations: 7 pages, over the cap of 5. Five are read, then the key is not obtained.
    fhir.reset().await;
    let diagnostics = call_412(&cardinal, "paged", &hook_request(&fhir, ZACHARY, json!({}))).await;
    assert!(
        diagnostics.contains("prefetch observations")
            && diagnostics.contains("it could not be obtained from the FHIR server"),
        "{diagnostics}"
    );
    assert_eq!(fhir.requests().await.len(), 5);

    // Listed in `optional_prefetch`: the rules run without it.
    fhir.reset().await;
    let response = call_ok(
        &cardinal,
        "paged-optional",
        &hook_request(&fhir, ZACHARY, json!({})),
    )
    .await;
    assert_eq!(summary(&response), "observations 0");
    assert_eq!(origins(&response)["Patient"], "fetched");
    assert_eq!(fhir.requests().await.len(), 1 + 5);

    // The cap is configurable.
    let roomy = cardinal_with(
        &fhir,
        PrefetchConfig {
            max_pages: 7,
            ..PrefetchConfig::default()
        },
    )
    .await;
    let response = call_ok(&roomy, "paged", &hook_request(&fhir, ZACHARY, json!({}))).await;
    assert_eq!(summary(&response), "observations 70");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_search_urls_are_sent_as_post_search() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    let latest = fhir
        .get(
            &format!("Observation?patient={EDWARD}&code=http://loinc.org|33914-3&_sort=-date"),
            Some(TOKEN),
        )
        .await;
    let value = &latest["entry"][0]["resource"]["valueQuantity"]["value"];
    fhir.reset().await;
    let response = call_ok(
        &cardinal,
        "long-url",
        &hook_request(&fhir, EDWARD, json!({})),
    )
    .await;
    assert_eq!(summary(&response), format!("eGFR {value}"));
    let requests = fhir.requests().await;
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!(
        (request.method.as_str(), request.url.as_str()),
        ("POST", "/fhir/Observation/_search")
    );
    assert_eq!(
        request.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(request.authorized);
    let body = request.body.as_deref().unwrap_or_default();
    assert!(
        body.starts_with(&format!("patient={EDWARD}&code=http://loinc.org|90000-0,"))
            && body.contains(",http://loinc.org|33914-3&_sort=-date")
            && body.len() > 3000,
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Failures: 412 naming the key, in bounded time
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_is_412_within_the_deadline() {
    let fhir = fhir_server();
    let cardinal = cardinal(&fhir).await;
    fhir.behave(3_000, None).await;
    let started = Instant::now();
    let diagnostics = call_412(&cardinal, "chart", &hook_request(&fhir, EDWARD, json!({}))).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(1_500),
        "answered after {elapsed:?}"
    );
    for key in [
        "conditions",
        "egfr",
        "medications",
        "patient",
        "practitioner",
    ] {
        assert!(
            diagnostics.contains(&format!(
                "prefetch {key} not provided by the EHR and not fetched: it could not be obtained from the FHIR server"
            )),
            "{key}: {diagnostics}"
        );
    }
    // All five were asked at once, not one after another.
    assert_eq!(fhir.requests().await.len(), 5);

    // The deadline is configurable.
    let quick = cardinal_with(
        &fhir,
        PrefetchConfig {
            deadline_ms: 100,
            ..PrefetchConfig::default()
        },
    )
    .await;
    let started = Instant::now();
    let diagnostics = call_412(&quick, "paged", &hook_request(&fhir, EDWARD, json!({}))).await;
    assert!(started.elapsed() < Duration::from_millis(1_000));
    assert!(
        diagnostics.contains("it could not be obtained from the FHIR server"),
        "{diagnostics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_412_naming_the_key_with_one_fixed_reason() {
    let fhir = fhir_server();
    let cardinal = cardinal_allowing(PrefetchConfig {
        allowed_fhir_servers: vec![fhir.base.clone(), "http://127.0.0.1:9/fhir".into()],
        ..PrefetchConfig::default()
    })
    .await;
    let mut prefetch = chart_prefetch(&fhir, EDWARD).await;
    prefetch.remove("egfr");
    // Whatever the server answered: the caller learns nothing about what sits at the other end.
    let expect = |_status: u16| {
        "required FHIR data could not be obtained: prefetch egfr not provided by the EHR and not \
         fetched: it could not be obtained from the FHIR server"
            .to_owned()
    };

    // A wrong token, and none at all: the server answers 401.
    fhir.reset().await;
    let body = hook_request_with(
        Some(&fhir.base),
        Some("wrong-token"),
        EDWARD,
        prefetch.clone().into(),
    );
    assert_eq!(call_412(&cardinal, "chart", &body).await, expect(401));
    let body = hook_request_with(Some(&fhir.base), None, EDWARD, prefetch.clone().into());
    assert_eq!(call_412(&cardinal, "chart", &body).await, expect(401));
    let requests = fhir.requests().await;
    assert_eq!(requests.len(), 2);
    assert!(requests.iter().all(|r| !r.authorized));

    // A failing server.
    for status in [500, 503, 403] {
        fhir.behave(0, Some(status)).await;
        let body = hook_request(&fhir, EDWARD, prefetch.clone().into());
        assert_eq!(call_412(&cardinal, "chart", &body).await, expect(status));
    }

    // Nothing listening there.
    drop(fhir);
    let body = hook_request_with(
        Some("http://127.0.0.1:9/fhir"),
        Some(TOKEN),
        EDWARD,
        json!({}),
    );
    let diagnostics = call_412(&cardinal, "paged", &body).await;
    assert!(
        diagnostics.ends_with("prefetch observations not provided by the EHR and not fetched: it could not be obtained from the FHIR server"),
        "{diagnostics}"
    );
}

// ---------------------------------------------------------------------------------------------
// The token is a secret
// ---------------------------------------------------------------------------------------------

/// Output of a child process, read as it comes (so its pipes never fill up).
struct Output {
    text: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl Output {
    /// Everything the process wrote, once it has exited.
    fn finish(self) -> String {
        let _ = self.reader.join();
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }
}

fn capture(stream: impl Read + Send + 'static) -> Output {
    let text = Arc::new(Mutex::new(String::new()));
    let (tx, lines) = mpsc::channel();
    let sink = Arc::clone(&text);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut text) = sink.lock() {
                text.push_str(&line);
                text.push('\n');
            }
            let _ = tx.send(line);
        }
    });
    Output {
        text,
        lines,
        reader,
    }
}

/// The address from the JSON log line `cardinal listening ... "addr":"127.0.0.1:PORT"`.
fn listening_address(stderr: &Output) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let line = match stderr.lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let text = stderr.text.lock().map(|t| t.clone()).unwrap_or_default();
                panic!("cardinal exited before listening:\n{text}");
            }
        };
        if line.contains("cardinal listening") {
            let value: Value = serde_json::from_str(&line).expect("JSON log line");
            return value["addr"].as_str().expect("addr").to_owned();
        }
    }
    panic!("cardinal did not start listening")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_patient_ids_never_reach_logs_or_errors() {
    let fhir = fhir_server();
    let data_dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cardinal"))
        .args([
            "serve",
            "--dev",
            "--listen",
            "127.0.0.1:0",
            "--rules",
            RULES,
        ])
        .current_dir(project_path(""))
        .env_remove("CARDINAL_CONFIG")
        .env_remove("RUST_LOG")
        .env("CARDINAL_ADMIN_LISTEN", "127.0.0.1:0")
        .env("CARDINAL_DATA_DIR", data_dir.path())
        .env(
            "CARDINAL_PREFETCH__ALLOWED_FHIR_SERVERS",
            format!("[\"{}\", \"http://127.0.0.1:9/fhir\"]", fhir.base),
        )
        .env("CARDINAL_LOG_FILTER", "trace")
        .env("CARDINAL_LOG_FORMAT", "json")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cardinal");
    let stdout = capture(child.stdout.take().expect("stdout"));
    let stderr = capture(child.stderr.take().expect("stderr"));
    let base = format!("http://{}", listening_address(&stderr));
    let client = reqwest::Client::new();
    let post = |service: &str, body: Value| {
        client
            .post(format!("{base}/cds-services/{service}"))
            .json(&body)
            .send()
    };

    // Fetched with the token.
    let response = post("chart", hook_request(&fhir, EDWARD, json!({})))
        .await
        .expect("call");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(fhir.requests().await.iter().all(|r| r.authorized));
    // A wrong token (401), a failing server (500), a slow one (deadline), a server that is gone.
    let mut refusals = Vec::new();
    let wrong = hook_request_with(
        Some(&fhir.base),
        Some(&format!("{TOKEN}-old")),
        EDWARD,
        json!({}),
    );
    refusals.push(post("chart", wrong).await.expect("call"));
    fhir.behave(0, Some(500)).await;
    refusals.push(
        post("chart", hook_request(&fhir, EDWARD, json!({})))
            .await
            .expect("call"),
    );
    fhir.behave(2_000, None).await;
    refusals.push(
        post("paged", hook_request(&fhir, ZACHARY, json!({})))
            .await
            .expect("call"),
    );
    let gone = hook_request_with(
        Some("http://127.0.0.1:9/fhir"),
        Some(TOKEN),
        EDWARD,
        json!({}),
    );
    refusals.push(post("chart", gone).await.expect("call"));
    for response in refusals {
        assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
        assert_no_secrets("412 body", &response.text().await.expect("body"));
    }

    let _ = child.kill();
    let _ = child.wait();
    let stderr_text = stderr.finish();
    let stdout_text = stdout.finish();
    assert!(
        stderr_text.contains("prefetch key not obtained") && stderr_text.contains("TRACE"),
        "debug logging of the prefetch path was not on:\n{stderr_text}"
    );
    assert_no_secrets("cardinal's stderr", &stderr_text);
    assert_no_secrets("cardinal's stdout", &stdout_text);
}

// ---------------------------------------------------------------------------------------------
// Templates are checked at load time
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_templates_stop_loading_with_their_location() {
    let config = Config {
        rules_dir: project_path("tests/fixtures/rules-prefetch-broken"),
        ..Config::default().development()
    };
    let errors = match Cardinal::load(config) {
        Ok(_) => panic!("services with bad templates loaded"),
        Err(errors) => errors,
    };
    let text = errors.to_string();
    assert_eq!(errors.0.len(), 3, "{text}");
    for expected in [
        "non-primitive/service.toml:7:33: prefetch `orders`: token `{{context.draftOrders}}`: \
         `draftOrders` is not a primitive context field of hook `order-sign`",
        "undeclared-optional/service.toml:5:33: `optional_prefetch` names `observations`, which \
         `[prefetch]` does not declare",
        "unknown-token/service.toml:8:67: prefetch `encounter`: unknown token `{{userPractitioner}}`",
    ] {
        assert!(text.contains(expected), "{expected}\nnot in:\n{text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Optional: every Synthea patient of ../shared
// ---------------------------------------------------------------------------------------------

/// With the full Synthea set beside the project (`../shared/data/synthea`), every patient is seen
/// the same by the rules whether the EHR sent the data or Cardinal fetched it. Skipped, saying so,
/// when the data is absent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shared_synthea_patient_is_seen_the_same_sent_or_fetched() {
    let dir = project_path("../shared/data/synthea");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "SKIPPED every_shared_synthea_patient_is_seen_the_same_sent_or_fetched: {} is absent",
            dir.display()
        );
        return;
    };
    let mut bundles: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    bundles.sort();
    let fhir = FhirServer::start(
        &bundles,
        FhirServerOptions {
            token: Some(TOKEN.into()),
            ..FhirServerOptions::default()
        },
    );
    // A corpus check, not a latency one: the in-memory server scans every resource per search.
    let cardinal = cardinal_with(
        &fhir,
        PrefetchConfig {
            deadline_ms: 30_000,
            ..PrefetchConfig::default()
        },
    )
    .await;
    let patients = fhir.get("Patient?_count=1000", Some(TOKEN)).await;
    let ids: Vec<String> = patients["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), bundles.len(), "one Patient per bundle");
    for id in &ids {
        let sent = chart_prefetch(&fhir, id).await;
        let with_prefetch =
            call_ok(&cardinal, "chart", &hook_request(&fhir, id, sent.into())).await;
        let fetched = call_ok(&cardinal, "chart", &hook_request(&fhir, id, json!({}))).await;
        assert_eq!(summary(&fetched), summary(&with_prefetch), "Patient/{id}");
    }
    eprintln!("{} Synthea patients checked", ids.len());
}
