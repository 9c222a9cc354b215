//! `cardinal bench` as an operator runs it: the real binary against a real server on 127.0.0.1,
//! short bounded runs over HTTP (closed loop and open model) and gRPC, the metformin and opioid
//! workloads, idle connections, and the refusal of a target that is not on this machine.
//!
//! Numbers are reported, never asserted: the machine is shared and small. What is asserted is that
//! the report is complete and adds up, and that every answer was a 200 with the same cards.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::process::Command;

use cardinal::config::Config;
use cardinal::engine::SandboxLimits;
use serde_json::Value;

use common::{TestServer, project_path};

const METFORMIN: &str = "tests/fixtures/requests/metformin-egfr-low.json";
const OPIOID_CASE: &str = "rules/opioid-cds/tests/rec-04-05-mme-greater-than-fifty.json";

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "the report is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Runs `cardinal bench ARGS` off the async runtime (the server runs on it).
async fn bench(args: Vec<String>) -> Run {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_cardinal"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .arg("bench")
            .args(&args)
            .output()
            .expect("run cardinal bench");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    })
    .await
    .expect("bench thread")
}

/// The shipped rules, with rule time limits a debug build on a busy 2-core machine cannot hit: these
/// tests are about the generator, and a rule timing out would (rightly) show up as a diagnostic and
/// a card mismatch.
async fn server() -> TestServer {
    let config = Config {
        rules_dir: project_path("rules"),
        sandbox: SandboxLimits {
            backstop_ms: 60_000,
            ..SandboxLimits::default()
        },
        ..Config::default().development()
    };
    TestServer::start_with(config).await
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn count(report: &Value, key: &str) -> u64 {
    report[key]
        .as_u64()
        .unwrap_or_else(|| panic!("`{key}` missing: {report:#}"))
}

/// The report has every field, its counts add up, every answer was `ok_status` with the same cards
/// and no diagnostic.
fn assert_clean(run: &Run, requests: u64, ok_status: &str) -> Value {
    assert_eq!(
        run.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let report = run.json();
    for key in [
        "url",
        "service",
        "protocol",
        "model",
        "connections",
        "elapsed_s",
        "send_rate",
        "throughput",
        "goodput",
        "latency_ms",
        "statuses",
        "errors",
        "connections_opened",
        "reference_cards",
    ] {
        assert!(report.get(key).is_some(), "`{key}` missing: {report:#}");
    }
    for class in ["all", "accepted"] {
        for p in ["count", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(
                report["latency_ms"][class][p].is_number(),
                "latency_ms.{class}.{p} missing: {report:#}"
            );
        }
    }
    assert!(report["latency_ms"]["refused"].is_null(), "{report:#}");
    assert_eq!(count(&report, "sent"), requests, "{report:#}");
    assert_eq!(count(&report, "completed"), requests, "{report:#}");
    assert_eq!(count(&report, "transport_errors"), 0, "{report:#}");
    assert_eq!(count(&report, "accepted"), requests, "{report:#}");
    assert_eq!(count(&report, "refused"), 0, "{report:#}");
    let statuses = report["statuses"].as_object().expect("statuses");
    assert_eq!(statuses.len(), 1, "{report:#}");
    assert_eq!(statuses[ok_status].as_u64(), Some(requests), "{report:#}");
    let errors: u64 = report["errors"]
        .as_object()
        .expect("errors")
        .values()
        .filter_map(Value::as_u64)
        .sum();
    assert_eq!(errors, 0, "{report:#}");
    assert_eq!(
        report["latency_ms"]["all"]["count"].as_u64(),
        Some(requests)
    );
    assert_eq!(count(&report, "card_mismatches"), 0, "{report:#}");
    assert_eq!(count(&report, "unreadable_responses"), 0, "{report:#}");
    assert_eq!(count(&report, "diagnostics"), 0, "{report:#}");
    assert_eq!(
        report["reference_cards"].as_array().map(Vec::len),
        Some(1),
        "{report:#}"
    );
    println!(
        "{} {} {}: {} req/s, p50 {} ms, p99 {} ms",
        report["protocol"],
        report["model"],
        report["service"],
        report["throughput"],
        report["latency_ms"]["accepted"]["p50"],
        report["latency_ms"]["accepted"]["p99"]
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metformin_over_http_closed_loop_open_model_and_grpc() {
    let server = server().await;
    let common = [
        "--url",
        &server.base,
        "--request",
        METFORMIN,
        "--service",
        "metformin-renal",
        "--json",
    ];
    let closed = bench(args(
        &[&common[..], &["--requests", "200", "--connections", "4"]].concat(),
    ))
    .await;
    let report = assert_clean(&closed, 200, "200");
    assert_eq!(report["model"], "closed");
    assert_eq!(report["protocol"], "http");
    assert!(report["schedule_lag_ms"].is_null());
    assert_eq!(report["reference_cards"][0]["indicator"], "critical");

    let open = bench(args(
        &[
            &common[..],
            &["--rate", "400", "--requests", "200", "--connections", "8"],
        ]
        .concat(),
    ))
    .await;
    let report = assert_clean(&open, 200, "200");
    assert_eq!(report["model"], "open");
    assert_eq!(report["target_rate"].as_f64(), Some(400.0));
    assert_eq!(report["schedule_lag_ms"]["count"].as_u64(), Some(200));
    assert_eq!(report["due"].as_u64(), Some(200), "{report:#}");
    assert_eq!(report["backlog"].as_u64(), Some(0), "{report:#}");

    let grpc = bench(args(
        &[
            &common[..],
            &["--grpc", "--requests", "200", "--connections", "4"],
        ]
        .concat(),
    ))
    .await;
    let report = assert_clean(&grpc, 200, "OK");
    assert_eq!(report["protocol"], "grpc");
    assert_eq!(report["reference_cards"][0]["indicator"], "critical");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opioid_case_fires_at_its_evaluation_time_over_both_transports() {
    let server = server().await;
    // The test case names the service and the evaluation time; the bench takes both from it.
    let common = ["--url", &server.base, "--request", OPIOID_CASE, "--json"];
    let closed = bench(args(
        &[&common[..], &["--requests", "100", "--connections", "2"]].concat(),
    ))
    .await;
    let http = assert_clean(&closed, 100, "200");
    assert_eq!(http["service"], "opioidcds-04-05");
    assert_eq!(http["reference_cards"][0]["indicator"], "warning");

    let open = bench(args(
        &[
            &common[..],
            &["--rate", "100", "--requests", "100", "--connections", "4"],
        ]
        .concat(),
    ))
    .await;
    assert_clean(&open, 100, "200");

    let grpc = bench(args(
        &[
            &common[..],
            &["--grpc", "--requests", "100", "--connections", "2"],
        ]
        .concat(),
    ))
    .await;
    let grpc = assert_clean(&grpc, 100, "OK");
    // Both transports give the same advice.
    assert_eq!(grpc["reference_cards"], http["reference_cards"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_and_reported() {
    let server = server().await;
    let idle = bench(args(&[
        "--url",
        &server.base,
        "--idle-connections",
        "100",
        "--duration",
        "1s",
        "--json",
    ]))
    .await;
    assert_eq!(idle.code, Some(0), "{}\n{}", idle.stdout, idle.stderr);
    let report = idle.json();
    assert_eq!(count(&report, "requested"), 100, "{report:#}");
    assert_eq!(count(&report, "connected"), 100, "{report:#}");
    assert_eq!(count(&report, "open_at_end"), 100, "{report:#}");
    assert_eq!(count(&report, "closed_by_server"), 0, "{report:#}");
    assert!(count(&report, "nofile_limit") >= 164, "{report:#}");

    // One request on each, then idle: the server answered every one.
    let after = bench(args(&[
        "--url",
        &server.base,
        "--idle-connections",
        "20",
        "--idle-after-request",
        "--request",
        METFORMIN,
        "--service",
        "metformin-renal",
        "--duration",
        "500ms",
        "--json",
    ]))
    .await;
    assert_eq!(after.code, Some(0), "{}\n{}", after.stdout, after.stderr);
    let report = after.json();
    assert_eq!(count(&report, "connected"), 20, "{report:#}");
    assert_eq!(
        report["request_statuses"]["200"].as_u64(),
        Some(20),
        "{report:#}"
    );
    assert_eq!(count(&report, "request_errors"), 0, "{report:#}");
    server.stop().await;
}

#[tokio::test]
async fn a_target_off_this_machine_is_refused() {
    for url in ["http://10.1.2.3:8080", "http://[2001:db8::1]:8080"] {
        let run = bench(args(&[
            "--url",
            url,
            "--request",
            METFORMIN,
            "--service",
            "x",
        ]))
        .await;
        assert_eq!(run.code, Some(2), "{url}: {}\n{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("is not a loopback address")
                && run.stderr.contains("only targets a server on this machine"),
            "{url}: {}",
            run.stderr
        );
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[tokio::test]
async fn bounds_are_enforced() {
    let base = ["--request", METFORMIN, "--service", "metformin-renal"];
    for extra in [
        &["--duration", "301s"][..],
        &["--requests", "10000001"],
        &["--rate", "0"],
        &["--connections", "0"],
    ] {
        let run = bench(args(&[&base[..], extra].concat())).await;
        assert_eq!(run.code, Some(2), "{extra:?}: {}", run.stderr);
    }
}
