#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]
//! The rule-authoring playground (`serve --dev`, admin listener): its calls over HTTP (evaluate an
//! edited rule on a test case, save with the path confined to the rules directory, bad input
//! refused with a clear error), where it is not served, and the page itself driven in headless
//! Chromium as an author would use it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cardinal::config::Config;
use common::TestServer;
use serde_json::{Value, json};

const SERVICE: &str = "metformin-renal";
const RULE: &str = "metformin-renal/metformin-egfr.rhai";
const CASE: &str = "metformin-renal/tests/egfr-62-no-card.json";
/// The line of `patient.latest_observation(EGFR)` in the rule.
const LATEST_LINE: usize = 16;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A temporary rules directory with the metformin service, its cases and the override-reason codes.
fn rules_copy() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rules");
    for name in [SERVICE, "codesystems"] {
        copy_dir(
            &common::project_path(&format!("rules/{name}")),
            &dir.join(name),
        );
    }
    (tmp, dir)
}

async fn dev_server(rules: &Path) -> TestServer {
    TestServer::start_with(Config {
        rules_dir: rules.to_path_buf(),
        ..Config::default().development()
    })
    .await
}

fn rule_text(rules: &Path) -> String {
    std::fs::read_to_string(rules.join(RULE)).unwrap()
}

fn case_text(rules: &Path) -> String {
    std::fs::read_to_string(rules.join(CASE)).unwrap()
}

async fn post(server: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(server.admin_url(path))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn diagnostics_at(result: &Value, line: usize) -> Vec<String> {
    result["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["file"] == RULE && d["line"] == json!(line))
        .map(|d| format!("{} {}", d["check"], d["message"]))
        .collect()
}

#[tokio::test]
async fn evaluate_shows_diagnostics_cards_and_why_not_without_touching_the_serving_set() {
    let (_tmp, rules) = rules_copy();
    let server = dev_server(&rules).await;
    let serving = server.cardinal.rule_set().version().to_owned();
    let source = rule_text(&rules);
    let case = case_text(&rules);

    // The rule as it is: the case passes, no card, and why not names the eGFR compared with 45.
    let (status, result) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": source, "case": case, "case_file": CASE}),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["loads"], json!(true), "{result}");
    assert_eq!(result["serving"], json!(serving));
    let run = &result["case"];
    assert_eq!(run["passed"], json!(true), "{run}");
    assert_eq!(run["cards"], json!([]));
    let verdict = run["verdicts"][0].as_str().unwrap();
    assert!(
        verdict.contains("\"eGFR below 45\" was false") && verdict.contains("62"),
        "{verdict}"
    );
    let condition = &run["explain"]["rules"][0]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "eGFR below 45")
        .unwrap()["compared"];
    assert_eq!(condition["op"], "<");
    assert_eq!(condition["right"], "45");

    // A higher threshold: the warning card appears, rendered, and the case now fails.
    let raised = source.replace(
        "const DO_NOT_START_BELOW = 45;",
        "const DO_NOT_START_BELOW = 70;",
    );
    assert_ne!(raised, source);
    let (_, result) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": raised, "case": case, "case_file": CASE}),
    )
    .await;
    let run = &result["case"];
    assert_eq!(run["passed"], json!(false), "{run}");
    let card = &run["cards"][0];
    assert_eq!(card["card"]["indicator"], "warning", "{run}");
    assert!(
        card["detail_html"]
            .as_str()
            .unwrap()
            .starts_with("<p>The latest eGFR is 62"),
        "{card}"
    );
    assert!(run["verdicts"][0].as_str().unwrap().starts_with("FIRED"));
    assert!(
        run["mismatches"][0]
            .as_str()
            .unwrap()
            .contains("Starting metformin is not recommended"),
        "{run}"
    );

    // A misspelt helper: cardinal check's finding at its line and column, with a hint.
    let typo = source.replace(
        "patient.latest_observation(EGFR)",
        "patient.latest_observaton(EGFR)",
    );
    let (_, result) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": typo}),
    )
    .await;
    let found = diagnostics_at(&result, LATEST_LINE);
    assert!(
        found.iter().any(|d| d.contains("unknown-function")),
        "{result}"
    );
    let first = &result["diagnostics"][0];
    assert_eq!(first["severity"], "error");
    assert_eq!(first["column"], json!(20), "{first}");
    assert!(
        first["hint"]
            .as_str()
            .unwrap()
            .contains("latest_observation")
    );

    // A syntax error: the rule does not load, at its line; no case is run.
    let broken = source.replace("let value = egfr.value;", "let value = egfr.value +;");
    let (_, result) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": broken, "case": case}),
    )
    .await;
    assert_eq!(result["loads"], json!(false), "{result}");
    assert!(!diagnostics_at(&result, 36).is_empty(), "{result}");
    assert!(result.get("case").is_none());

    // None of it touched the files or the serving set.
    assert_eq!(rule_text(&rules), source);
    assert_eq!(server.cardinal.rule_set().version(), serving);
    server.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_clear_error() {
    let (_tmp, rules) = rules_copy();
    let server = dev_server(&rules).await;
    let source = rule_text(&rules);
    let client = reqwest::Client::new();

    let response = client
        .post(server.admin_url("/playground/evaluate"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");

    let refusals = [
        (
            json!({"service": "no-such-service", "rule": RULE, "source": source}),
            "unknown CDS service `no-such-service`",
        ),
        (
            json!({"service": SERVICE, "rule": "../../etc/passwd", "source": source}),
            "is not a rule file of service `metformin-renal`",
        ),
        (
            json!({"service": SERVICE, "rule": RULE, "source": "x".repeat(300 * 1024)}),
            "at most 262144 are accepted",
        ),
        (
            json!({"service": SERVICE, "rule": RULE, "source": source, "unknown": 1}),
            "unknown field `unknown`",
        ),
        (
            json!({"service": SERVICE, "rule": RULE}),
            "missing field `source`",
        ),
    ];
    for (body, expected) in refusals {
        let (status, answer) = post(&server, "/playground/evaluate", &body).await;
        let message = answer["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default();
        assert!(
            (400..500).contains(&status) && message.contains(expected),
            "{status} {answer}"
        );
    }

    // A case that does not read is reported beside the diagnostics, with its place.
    let (status, answer) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": source, "case": "{\n  \"service\": }"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        answer["case_error"]
            .as_str()
            .unwrap()
            .contains("playground-case.json:2:"),
        "{answer}"
    );

    // Wrong methods get 405, not a panic.
    let response = client
        .get(server.admin_url("/playground/evaluate"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    server.stop().await;
}

#[tokio::test]
async fn save_writes_inside_the_rules_directory_only_and_reloads_through_the_tests() {
    let (tmp, rules) = rules_copy();
    let server = dev_server(&rules).await;
    let before = server.cardinal.rule_set().version().to_owned();
    let source = rule_text(&rules);
    let case = case_text(&rules);
    let outside = tmp.path().join("outside.json");

    let traversals = [
        "../outside.json",
        "metformin-renal/tests/../../../outside.json",
        outside.to_str().unwrap(),
        "metformin-renal/outside.json",
        "metformin-renal/tests/case.rhai",
        "metformin-renal/tests/.hidden.json",
        "no-such-service/tests/case.json",
    ];
    for file in traversals {
        let (status, answer) = post(
            &server,
            "/playground/save",
            &json!({"service": SERVICE, "rule": RULE, "source": source, "case": case, "case_file": file}),
        )
        .await;
        assert_eq!(status, 400, "{file}: {answer}");
        assert!(
            answer["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .starts_with("case file"),
            "{file}: {answer}"
        );
    }
    assert!(!outside.exists());
    // Only a file the service runs can be written.
    let (status, _) = post(
        &server,
        "/playground/save",
        &json!({"service": SERVICE, "rule": "metformin-renal/new.rhai", "source": source}),
    )
    .await;
    assert_eq!(status, 400);
    // A rule that does not load is not written.
    let (status, answer) = post(
        &server,
        "/playground/save",
        &json!({"service": SERVICE, "rule": RULE, "source": "let x = ;"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(rule_text(&rules), source);

    // A saved rule that breaks a test case is written, and the reload rejects it: the previous set
    // keeps serving.
    let raised = source.replace(
        "const DO_NOT_START_BELOW = 45;",
        "const DO_NOT_START_BELOW = 70;",
    );
    let (status, answer) = post(
        &server,
        "/playground/save",
        &json!({"service": SERVICE, "rule": RULE, "source": raised}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["written"], json!([RULE]));
    assert_eq!(answer["reload"]["result"], "rejected", "{answer}");
    assert!(
        answer["reload"]["errors"]
            .to_string()
            .contains("egfr-62-no-card.json: test case failed"),
        "{answer}"
    );
    assert_eq!(server.cardinal.rule_set().version(), before);

    // A change every case still agrees with, saved with a new case beside it: the reload runs every
    // case, the new one included, and swaps.
    let lowered = source.replace(
        "const DO_NOT_START_BELOW = 45;",
        "const DO_NOT_START_BELOW = 50;",
    );
    let mut new_case: Value = serde_json::from_str(
        &std::fs::read_to_string(rules.join("metformin-renal/tests/egfr-38-do-not-start.json"))
            .unwrap(),
    )
    .unwrap();
    new_case["description"] = json!("eGFR 38 still warns with the threshold at 50");
    let new_file = "metformin-renal/tests/egfr-38-threshold-50.json";
    let (status, answer) = post(
        &server,
        "/playground/save",
        &json!({"service": SERVICE, "rule": RULE, "source": lowered,
                "case": serde_json::to_string_pretty(&new_case).unwrap(), "case_file": new_file}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["written"], json!([RULE, new_file]));
    let reload = &answer["reload"];
    assert_eq!(reload["result"], "swapped", "{answer}");
    assert_eq!(reload["test_cases"], json!(10), "{answer}");
    assert_ne!(server.cardinal.rule_set().version(), before);
    assert_eq!(rule_text(&rules), lowered);
    assert!(
        std::fs::read_to_string(rules.join(new_file))
            .unwrap()
            .contains("threshold at 50")
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(rules.join(SERVICE))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    server.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn a_tests_folder_linked_out_of_the_rules_directory_is_refused() {
    let (tmp, rules) = rules_copy();
    let elsewhere = tmp.path().join("elsewhere").join("tests");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("elsewhere"), rules.join("linked")).unwrap();
    let server = dev_server(&rules).await;
    let (status, answer) = post(
        &server,
        "/playground/save",
        &json!({"service": SERVICE, "rule": RULE, "source": rule_text(&rules),
                "case": case_text(&rules), "case_file": "linked/tests/case.json"}),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .to_string()
            .contains("leads out of the rules directory")
    );
    assert!(!elsewhere.join("case.json").exists());
    server.stop().await;
}

#[tokio::test]
async fn not_served_without_dev_nor_on_the_ehr_port() {
    let (_tmp, rules) = rules_copy();
    // The EHR-facing port never serves it, even with --dev.
    let server = dev_server(&rules).await;
    let client = reqwest::Client::new();
    for path in ["/playground", "/playground/services"] {
        let response = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path} on the EHR port");
    }
    let response = client
        .post(server.url("/playground/evaluate"))
        .json(&json!({"service": SERVICE, "rule": RULE, "source": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    // With --dev, the admin listener serves the page with a policy that loads nothing from elsewhere.
    let page = client
        .get(server.admin_url("/playground"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("Cardinal rule playground")
    );
    server.stop().await;

    // Without --dev (a production configuration, served without authentication for the test), it
    // is not there at all, and the playground cannot be switched on by configuration.
    let mut config = Config {
        rules_dir: rules.clone(),
        ..Config::default()
    };
    config.allow_evaluation_time_override = true;
    let server = TestServer::start_with(config).await;
    assert!(!server.cardinal.config().playground);
    for path in ["/playground", "/playground/services"] {
        let response = client.get(server.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path} without --dev");
    }
    let response = client
        .post(server.admin_url("/playground/save"))
        .json(&json!({"service": SERVICE, "rule": RULE, "source": rule_text(&rules)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await;
    let toml = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(toml.path(), "playground = true\n").unwrap();
    let error = Config::load(Some(toml.path())).unwrap_err().to_string();
    assert!(error.contains("playground"), "{error}");
}

#[tokio::test]
async fn on_a_non_loopback_admin_listener_its_calls_need_the_admin_token() {
    let (_tmp, rules) = rules_copy();
    let server = TestServer::start_with(Config {
        rules_dir: rules.clone(),
        admin_listen: "0.0.0.0:0".parse().unwrap(),
        ..Config::default().development()
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!(
        "http://127.0.0.1:{}/playground/services",
        server.admin_addr.port()
    );
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 403);
    server.stop().await;
}

/// The page as an author uses it: pick the case, raise the threshold in the editor and see the card
/// and the explanation change, misspell a helper and see the diagnostic at its line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_in_a_browser_follows_each_edit() {
    let (_tmp, rules) = rules_copy();
    let server = dev_server(&rules).await;
    let url = server.admin_url(&format!(
        "/playground?service={SERVICE}&rule={RULE}&case={CASE}"
    ));
    let shot_dir = std::env::var_os("CARDINAL_SCREENSHOT_DIR").map(PathBuf::from);
    tokio::task::spawn_blocking(move || {
        let wait = Duration::from_secs(30);
        let mut page = common::cdp::Browser::start(1400, 1300);
        page.navigate(&url);
        // The case loads with the rule; it passes, no card, and why not quotes the eGFR it compared.
        page.wait_for("document.body.dataset.evaluations >= 1", wait);
        page.wait_for("document.getElementById('passed')", wait);
        assert_eq!(page.eval("document.getElementById('no-cards').textContent"), "no card");
        let why = page
            .eval("document.getElementById('explanation').textContent")
            .as_str()
            .unwrap()
            .to_owned();
        assert!(why.contains("\"eGFR below 45\" was false"), "{why}");
        assert!(why.contains("< 45"), "{why}");

        // Raise the threshold by typing over the 45 in the constant.
        let evaluations = page.eval("Number(document.body.dataset.evaluations)").as_u64().unwrap();
        page.eval(
            "(() => { const e = document.getElementById('editor'); e.focus(); \
             const at = e.value.indexOf('DO_NOT_START_BELOW = 45') + 'DO_NOT_START_BELOW = '.length; \
             e.setSelectionRange(at, at + 2); return at; })()",
        );
        page.insert_text("70");
        page.wait_for(
            &format!("Number(document.body.dataset.evaluations) > {evaluations} && document.querySelector('#cards .card')"),
            wait,
        );
        let card = page.eval("document.querySelector('#cards .card').textContent");
        assert!(
            card.as_str().unwrap().contains("Starting metformin is not recommended"),
            "{card}"
        );
        assert_eq!(page.eval("document.querySelector('#cards .card').classList.contains('warning')"), true);
        assert_eq!(
            page.eval("document.querySelector('#cards .card .detail p').textContent.startsWith('The latest eGFR is 62')"),
            true
        );
        let why = page.eval("document.getElementById('explanation').textContent");
        assert!(why.as_str().unwrap().contains("FIRED, 1 card"), "{why}");
        assert_eq!(page.eval("Boolean(document.getElementById('failed'))"), true);
        let trace = page.eval("document.getElementById('trace').textContent");
        assert!(trace.as_str().unwrap().contains("operations"), "{trace}");
        if let Some(dir) = &shot_dir {
            std::fs::write(dir.join("playground-card.png"), page.screenshot()).unwrap();
        }

        // Misspell the helper on line 16: the diagnostic names that line, and the gutter marks it.
        let evaluations = page.eval("Number(document.body.dataset.evaluations)").as_u64().unwrap();
        page.eval(
            "(() => { const e = document.getElementById('editor'); e.focus(); \
             const at = e.value.indexOf('latest_observation(EGFR)') + 'latest_observ'.length; \
             e.setSelectionRange(at, at + 5); })()",
        );
        page.insert_text("aton");
        page.wait_for(
            &format!("Number(document.body.dataset.evaluations) > {evaluations} && document.querySelector('#diagnostics .diagnostic.error')"),
            wait,
        );
        let diagnostic = page.eval(
            "(() => { const d = document.querySelector('#diagnostics .diagnostic.error'); \
             return [d.dataset.line, d.dataset.check, d.textContent]; })()",
        );
        assert_eq!(diagnostic[0], LATEST_LINE.to_string(), "{diagnostic}");
        assert_eq!(diagnostic[1], "unknown-function", "{diagnostic}");
        assert!(
            diagnostic[2].as_str().unwrap().contains(&format!("{RULE}:{LATEST_LINE}:")),
            "{diagnostic}"
        );
        assert_eq!(
            page.eval("document.querySelector('#gutter .bad').textContent"),
            LATEST_LINE.to_string()
        );
        if let Some(dir) = &shot_dir {
            std::fs::write(dir.join("playground-typo.png"), page.screenshot()).unwrap();
        }
    })
    .await
    .unwrap();
    // The page only evaluated: nothing was written.
    assert_eq!(
        rule_text(&rules),
        std::fs::read_to_string(common::project_path(&format!("rules/{RULE}"))).unwrap()
    );
    server.stop().await;
}

/// A sample patient (a Synthea record, as `cardinal test new --from` reads it) becomes a compact case
/// the page can edit and save; its expectations are what the rules answer now, so it passes.
#[tokio::test]
async fn a_sample_patient_becomes_a_case_to_edit() {
    use std::io::Read as _;
    let (_tmp, rules) = rules_copy();
    let server = dev_server(&rules).await;
    let mut patient = String::new();
    flate2::read::GzDecoder::new(
        std::fs::File::open(common::project_path(
            "tests/fixtures/synthea/Edward_Gulgowski_43481611-2459-44f5-ab20-4b142dac160f.json.gz",
        ))
        .unwrap(),
    )
    .read_to_string(&mut patient)
    .unwrap();
    let draft: Value = serde_json::from_str(
        &std::fs::read_to_string(common::project_path(
            "tests/fixtures/compact/metformin-draft.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let (status, made) = post(
        &server,
        "/playground/new-case",
        &json!({"service": SERVICE, "patient": patient, "draft": draft, "at": "2019-02-01"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    assert_eq!(
        made["suggested_file"],
        "metformin-renal/tests/new-case.json"
    );
    let case: Value = serde_json::from_str(made["case"].as_str().unwrap()).unwrap();
    assert_eq!(case["service"], SERVICE);
    assert_eq!(case["evaluation_time"], "2019-02-01");
    assert_eq!(
        case["context"]["patientId"],
        "4ef9f896-10bc-4479-acd6-1153e7318f14"
    );
    assert!(case.get("request").is_none(), "compact: {case}");

    // The case runs in the playground as it is, and passes.
    let (_, result) = post(
        &server,
        "/playground/evaluate",
        &json!({"service": SERVICE, "rule": RULE, "source": rule_text(&rules), "case": made["case"]}),
    )
    .await;
    assert_eq!(result["case"]["passed"], json!(true), "{result}");

    // Bad records are refused with the reason.
    for (patient, draft, expected) in [
        ("{not json", json!(draft), "not JSON"),
        (
            "{\"resourceType\": \"Observation\"}",
            json!(draft),
            "not a FHIR Bundle or Patient",
        ),
        (patient.as_str(), Value::Null, "draft"),
    ] {
        let (status, answer) = post(
            &server,
            "/playground/new-case",
            &json!({"service": SERVICE, "patient": patient, "draft": draft, "at": "2019-02-01"}),
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains(expected),
            "{expected}: {answer}"
        );
    }
    server.stop().await;
}
