//! Every test case under `rules/` (the `tests/` folders next to the rules), sent to a real Cardinal
//! server over HTTP on 127.0.0.1 with the case's evaluation time in `x-cardinal-evaluation-time`,
//! and compared with the same comparator `cardinal test` uses: status, cards (through each folder's
//! `aliases.toml`), facts and rule errors. (`why_not` needs every rule's outcome, which only the
//! in-process runner sees.) All failures are reported at once.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use cardinal::rule_tests::{self, Actual, compare};
use common::{TestServer, project_path};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_pack_test_case_passes_over_http() {
    let rules = project_path("rules");
    let suites = rule_tests::discover(&rules).unwrap_or_else(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("test cases could not be read:\n{}", lines.join("\n"))
    });
    let server = TestServer::start_with_rules(&rules).await;
    let client = reqwest::Client::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for suite in &suites {
        for case in &suite.cases {
            total += 1;
            // A compact case is sent as its service's prefetch templates expand it.
            let service = server
                .cardinal
                .service(&case.service)
                .expect("the case's service");
            let body = case
                .request_for(&service)
                .unwrap_or_else(|e| panic!("{}: {e}", case.path.display()));
            let mut request = client
                .post(server.url(&format!("/cds-services/{}", case.service)))
                .json(&body);
            if let Some(time) = &case.evaluation_time {
                request = request.header("x-cardinal-evaluation-time", time);
            }
            let response = request.send().await.expect("POST");
            let status = response.status().as_u16();
            let text = response.text().await.expect("body");
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let actual = Actual::from_http(status, &body);
            let mismatches = compare(&case.expect, &actual, &suite.aliases);
            if !mismatches.is_empty() {
                let details: Vec<String> = mismatches
                    .iter()
                    .map(|m| format!("  - {}", m.to_string().replace('\n', "\n    ")))
                    .collect();
                failures.push(format!(
                    "FAIL {} (service {})\n{}",
                    case.path
                        .strip_prefix(project_path(""))
                        .unwrap_or(&case.path)
                        .display(),
                    case.service,
                    details.join("\n")
                ));
            }
        }
    }
    server.stop().await;
    assert!(total > 0, "no test cases under {}", rules.display());
    assert!(
        failures.is_empty(),
        "{} of {total} rule test cases failed over HTTP:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
