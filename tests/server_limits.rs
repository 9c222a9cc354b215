//! The request path under hostile or excessive use, against real servers on 127.0.0.1: admission
//! control (503 + `Retry-After` / `UNAVAILABLE`, readiness), caught panics, connection timeouts,
//! response caps, Content-Type, safe defaults and a shutdown with a deadline.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cardinal::config::Config;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::process::CardinalProcess;
use common::{TestServer, project_path, request_fixture};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn hardening_rules() -> std::path::PathBuf {
    project_path("tests/fixtures/rules-hardening")
}

fn greeting_request() -> Value {
    request_fixture("patient-view-greeting")
}

/// Sandbox limits under which the `slow` rule holds its evaluation slot for about a second, far
/// longer than the test needs to send its next calls.
fn slow_sandbox() -> cardinal::engine::SandboxLimits {
    cardinal::engine::SandboxLimits {
        max_operations: 10_000_000_000,
        call_max_operations: 10_000_000_000,
        backstop_ms: 1000,
        ..Default::default()
    }
}

async fn start(config: Config) -> TestServer {
    TestServer::start_with(Config {
        rules_dir: hardening_rules(),
        ..config
    })
    .await
}

async fn post(server: &TestServer, service: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url(&format!("/cds-services/{service}")))
        .json(body)
        .send()
        .await
        .expect("request")
}

/// Waits until `n` calls are admitted (they are then queued or evaluating).
async fn until_admitted(server: &TestServer, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.cardinal.admission().admitted() < n {
        assert!(
            Instant::now() < deadline,
            "calls were not admitted: {} of {n}",
            server.cardinal.admission().admitted()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_replica_refuses_at_once_with_503_and_retry_after_and_serves_again() {
    // One evaluation slot and one queue place; the `slow` rule holds its slot until the sandbox
    // stops it.
    let server = start(Config {
        max_concurrent_evaluations: 1,
        max_queued_calls: 1,
        queue_timeout_ms: 30_000,
        sandbox: slow_sandbox(),
        ..Config::default()
    })
    .await;
    let request = greeting_request();
    let first = tokio::spawn({
        let (url, body) = (server.url("/cds-services/slow"), request.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    let second = tokio::spawn({
        let (url, body) = (server.url("/cds-services/slow"), request.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    until_admitted(&server, 2).await;

    // Full: refused before the body is read, over both protocols, and readiness says so.
    let started = Instant::now();
    let refused = post(&server, "slow", &request).await;
    let refused_in = started.elapsed();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let outcome: Value = refused.json().await.expect("OperationOutcome");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "throttled", "{outcome:#}");
    println!("refused in {} µs", refused_in.as_micros());

    let ready = reqwest::get(server.admin_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "overloaded");

    let mut grpc = CdsHooksClient::new(server.grpc_channel().await);
    let status = grpc
        .call_hook(proto::CallHookRequest {
            service_id: "slow".into(),
            hook: "patient-view".into(),
            hook_instance: "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea".into(),
            context_json: json!({"userId": "Practitioner/1", "patientId": "p1"}).to_string(),
            ..Default::default()
        })
        .await
        .expect_err("a full replica refuses gRPC calls too");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");

    // Cheap routes are never refused.
    let discovery = reqwest::get(server.url("/cds-services"))
        .await
        .expect("discovery");
    assert_eq!(discovery.status(), StatusCode::OK);

    // Every admitted call is answered in full: the slow rule is reported, not dropped.
    for call in [first, second] {
        let response = call.await.expect("task").expect("admitted call");
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("json");
        let kind = &body["extension"]["org.cardinalcds.diagnostics"][0]["kind"];
        assert!(kind.is_string(), "{body:#}");
    }
    let metrics = reqwest::get(server.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cardinal_calls_refused_total") && l.contains("queue_full")),
        "{metrics}"
    );

    // Capacity is back once the calls are answered (readiness recovers a second after the last
    // refusal).
    let ok = post(&server, "flood", &request).await;
    assert_eq!(ok.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_queued_call_that_cannot_start_by_its_deadline_gets_503() {
    let server = start(Config {
        max_concurrent_evaluations: 1,
        max_queued_calls: 8,
        queue_timeout_ms: 20,
        sandbox: slow_sandbox(),
        ..Config::default()
    })
    .await;
    let request = greeting_request();
    let holder = tokio::spawn({
        let (url, body) = (server.url("/cds-services/slow"), request.clone());
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    });
    until_admitted(&server, 1).await;
    // Let the first call reach its evaluation slot before the second arrives.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let late = post(&server, "flood", &request).await;
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    let outcome: Value = late.json().await.expect("json");
    let message = outcome["issue"][0]["diagnostics"].as_str().unwrap_or("");
    assert!(message.contains("20 ms deadline"), "{message}");
    let held = holder.await.expect("task").expect("call");
    assert_eq!(held.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn a_rule_flooding_the_response_is_left_out_and_reported_the_rest_answered() {
    let server = start(Config::default()).await;
    let response = post(&server, "flood", &greeting_request()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("body");
    assert!(text.len() < 64 * 1024, "response of {} bytes", text.len());
    let body: Value = serde_json::from_str(&text).expect("json");
    let summaries: Vec<&str> = body["cards"]
        .as_array()
        .expect("cards")
        .iter()
        .filter_map(|c| c["summary"].as_str())
        .collect();
    assert_eq!(summaries, ["before the flood", "after the flood"]);
    let diagnostics = &body["extension"]["org.cardinalcds.diagnostics"];
    assert_eq!(diagnostics[0]["ruleId"], "b-flood", "{diagnostics:#}");
    assert_eq!(diagnostics[0]["kind"], "response-limit");
    server.stop().await;
}

#[tokio::test]
async fn the_byte_cap_applies_too() {
    let server = start(Config {
        max_cards_per_response: 1000,
        max_response_bytes: 100 * 1024,
        ..Config::default()
    })
    .await;
    let body: Value = post(&server, "flood", &greeting_request())
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["cards"].as_array().map(Vec::len), Some(2), "{body:#}");
    assert_eq!(
        body["extension"]["org.cardinalcds.diagnostics"][0]["kind"],
        "response-limit"
    );
    server.stop().await;
}

#[tokio::test]
async fn hook_calls_and_feedback_must_be_json() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    let body = greeting_request().to_string();
    for content_type in [Some("text/plain"), Some("application/xml"), None] {
        for path in [
            "/cds-services/patient-greeting",
            "/cds-services/patient-greeting/feedback",
        ] {
            let mut request = client.post(server.url(path)).body(body.clone());
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let response = request.send().await.expect("request");
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} {content_type:?}"
            );
        }
    }
    for content_type in ["application/json; charset=utf-8", "application/fhir+json"] {
        let response = client
            .post(server.url("/cds-services/patient-greeting"))
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), StatusCode::OK, "{content_type}");
    }
    server.stop().await;
}

#[test]
fn production_defaults_are_the_safe_ones() {
    let config = Config::default();
    assert!(!config.allow_evaluation_time_override);
    assert!(!config.explain_endpoint);
    assert!(
        config.server.shutdown_grace_ms < 30_000,
        "below Kubernetes' grace"
    );
    let dev = Config::default().development();
    assert!(dev.allow_evaluation_time_override && dev.explain_endpoint);
}

/// Reads until the server closes the connection; `None` if it is still open after `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return None,
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_connections_are_closed() {
    let server = TestServer::start_with(Config {
        rules_dir: project_path("rules"),
        server: cardinal::config::ServerConfig {
            header_read_timeout_ms: 300,
            ..Default::default()
        },
        ..Config::default()
    })
    .await;
    let addr = server.addr;
    let outcomes = tokio::task::spawn_blocking(move || {
        let connect = || TcpStream::connect(addr).expect("connect");
        // Connects and sends nothing.
        let mut silent = connect();
        // Sends half a header block and stops.
        let mut slow = connect();
        slow.write_all(b"POST /cds-services/patient-greeting HTTP/1.1\r\nHost: x\r\n")
            .expect("write");
        // Completes one request, then idles on the kept-alive connection.
        let mut idle = connect();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write");
        let limit = Duration::from_secs(5);
        [
            ("silent", closed_within(&mut silent, limit)),
            ("slow headers", closed_within(&mut slow, limit)),
            ("idle keep-alive", closed_within(&mut idle, limit)),
        ]
    })
    .await
    .expect("task");
    for (what, closed) in outcomes {
        let closed = closed.unwrap_or_else(|| panic!("{what} connection still open after 5 s"));
        println!("{what} connection closed after {} ms", closed.as_millis());
    }
    // The server itself is unaffected.
    let ok = reqwest::get(server.admin_url("/healthz"))
        .await
        .expect("healthz");
    assert_eq!(ok.status(), StatusCode::OK);
    server.stop().await;
}

const INJECTED_WORDS: [&str; 2] = ["Jane Roe", "4711-0815"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_answers_a_fixed_500_and_its_message_reaches_no_log() {
    let process =
        CardinalProcess::spawn(&project_path("rules"), &[("CARDINAL_LOG_FILTER", "debug")]);
    let client = reqwest::Client::new();
    let response = client
        .post(process.url("/cds-services/patient-greeting"))
        .header("x-cardinal-inject-panic", "1")
        .json(&greeting_request())
        .send()
        .await
        .expect("the server answers a panicking request");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let text = response.text().await.expect("body");
    let outcome: Value = serde_json::from_str(&text).expect("OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "exception");
    for words in INJECTED_WORDS {
        assert!(!text.contains(words), "{text}");
    }

    let mut grpc = CdsHooksClient::new(process.grpc_channel().await);
    let mut request = tonic::Request::new(proto::CallHookRequest {
        service_id: "patient-greeting".into(),
        hook: "patient-view".into(),
        hook_instance: "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea".into(),
        context_json: json!({"userId": "Practitioner/1", "patientId": "p1"}).to_string(),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-cardinal-inject-panic", "1".parse().expect("metadata"));
    let status = grpc
        .call_hook(request)
        .await
        .expect_err("a panicking gRPC call fails");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    for words in INJECTED_WORDS {
        assert!(!status.message().contains(words), "{status:?}");
    }

    // Still serving, and the panics are counted.
    let ok = client
        .post(process.url("/cds-services/patient-greeting"))
        .json(&greeting_request())
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);
    let metrics = reqwest::get(process.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let panics: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cardinal_panics_total"))
        .collect();
    assert!(
        panics
            .iter()
            .any(|l| l.contains("http") && l.ends_with(" 1")),
        "{panics:?}"
    );
    assert!(
        panics
            .iter()
            .any(|l| l.contains("grpc") && l.ends_with(" 1")),
        "{panics:?}"
    );
    let logs = process.stop(Duration::from_secs(10));
    let all = format!("{}{}", logs.stdout, logs.stderr);
    assert!(
        all.contains("panic while serving a request"),
        "the panic hook logs the event: {all}"
    );
    assert!(
        all.contains("src/transport/"),
        "the location is logged: {all}"
    );
    for words in INJECTED_WORDS {
        assert!(!all.contains(words), "panic message leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_stuck_request_exits_by_the_grace_deadline() {
    let process = CardinalProcess::spawn(
        &project_path("rules"),
        &[
            ("CARDINAL_SERVER__SHUTDOWN_GRACE_MS", "1500"),
            // Long enough that only the grace period can end the stuck call.
            ("CARDINAL_SERVER__BODY_READ_TIMEOUT_MS", "600000"),
        ],
    );
    let addr = process.addr;
    // A hook call that sends its headers and half its body, then nothing.
    let mut stuck = TcpStream::connect(addr).expect("connect");
    stuck
        .write_all(
            b"POST /cds-services/patient-greeting HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"hook\":",
        )
        .expect("write");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let logs = tokio::task::spawn_blocking(move || process.stop(Duration::from_secs(20)))
        .await
        .expect("task");
    let took = started.elapsed();
    println!("exited {} ms after SIGTERM", took.as_millis());
    assert!(
        logs.exited_cleanly,
        "the process exits by itself, not killed: {}",
        logs.stderr
    );
    assert!(
        logs.stderr.contains("shutdown grace period over"),
        "the cut is logged: {}",
        logs.stderr
    );
    drop(stuck);
}

/// A configuration file trusting the CDS Hooks sandbox's key (the production profile's only
/// difference from the defaults).
fn production_config(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("cardinal.toml");
    let jwks = project_path("tests/fixtures/jwt/sandbox-jwks.json");
    std::fs::write(
        &path,
        format!(
            "[[auth.issuers]]\niss = {:?}\njwks_file = {:?}\njku_allowed = [{:?}]\n",
            common::jwt::SANDBOX_ISS,
            jwks.display().to_string(),
            common::jwt::SANDBOX_JKU
        ),
    )
    .expect("write the configuration");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_binary_requires_tokens_refuses_a_pinned_evaluation_time_and_dev_allows_it()
{
    let dir = tempfile::tempdir().expect("tempdir");
    let config = production_config(dir.path());
    let config = config.to_str().expect("utf-8 path");
    let production = CardinalProcess::spawn_with_args(
        &project_path("rules"),
        &[
            ("CARDINAL_CONFIG", config),
            ("CARDINAL_ALLOW_EVALUATION_TIME_OVERRIDE", "false"),
        ],
        &[],
    );
    let client = reqwest::Client::new();
    let signer = common::jwt::Signer::sandbox();
    let call_url = production.url("/cds-services/patient-greeting");
    // Production: no token, no answer.
    let anonymous = client
        .post(&call_url)
        .json(&greeting_request())
        .send()
        .await
        .expect("request");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let pinned = |url: String, token: Option<String>| {
        let mut request = client
            .post(url)
            .header("x-cardinal-evaluation-time", "1990-01-01")
            .json(&greeting_request());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    let refused = pinned(call_url.clone(), Some(signer.token(&call_url)))
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let explain_url = production.url("/cds-services/patient-greeting/explain");
    let explain = client
        .post(&explain_url)
        .bearer_auth(signer.token(&explain_url))
        .json(&greeting_request())
        .send()
        .await
        .expect("request");
    assert_eq!(explain.status(), StatusCode::NOT_FOUND);
    drop(production);

    let dev = CardinalProcess::spawn_with_args(
        &project_path("rules"),
        &[("CARDINAL_ALLOW_EVALUATION_TIME_OVERRIDE", "false")],
        &["--dev"],
    );
    let allowed = pinned(dev.url("/cds-services/patient-greeting"), None)
        .await
        .expect("request");
    assert_eq!(allowed.status(), StatusCode::OK);
    let logs = dev.stop(Duration::from_secs(10));
    assert!(
        logs.stderr.contains("DEVELOPMENT PROFILE") && logs.stderr.contains("NO AUTHENTICATION"),
        "--dev says so loudly: {}",
        logs.stderr
    );
}

/// Runs `cardinal serve` expecting it to refuse to start; returns its stderr.
fn refused_start(env: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cardinal"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--rules"])
        .arg(project_path("rules"))
        .current_dir(project_path(""));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CARDINAL_") {
            command.env_remove(&key);
        }
    }
    command.env("CARDINAL_ADMIN_LISTEN", "127.0.0.1:0");
    let data = tempfile::tempdir().expect("tempdir");
    command.env("CARDINAL_DATA_DIR", data.path());
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run cardinal");
    assert!(!output.status.success(), "cardinal started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn the_production_binary_will_not_start_without_authentication() {
    // The defaults: authentication required, no issuer configured.
    let stderr = refused_start(&[]);
    assert!(stderr.contains("[[auth.issuers]]"), "{stderr}");
    // Authentication switched off without --dev.
    let stderr = refused_start(&[("CARDINAL_AUTH__MODE", "off")]);
    assert!(
        stderr.contains("only allowed with `serve --dev`"),
        "{stderr}"
    );
}
