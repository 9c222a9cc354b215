#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]
//! The store of cards, outcomes and feedback, on SQLite and on a real PostgreSQL server: feedback
//! round trips over HTTP and gRPC, 404 for a card never returned or returned by another service,
//! duplicate delivery stored once, crash safety of acknowledged feedback (the real binary killed with
//! SIGKILL), analytics equal to figures computed by hand on a seeded dataset, a drift scenario, the
//! retention purge, and the analytics page in headless Chromium.
//!
//! PostgreSQL: the tests named `*_postgres` need `POSTGRES_TEST_URL`, a role that may create
//! databases (each test makes its own). Not `CARDINAL_*`: Cardinal reads those as its configuration.
//! `bash .ci/postgres-setup.sh` installs Debian's PostgreSQL, starts it on 127.0.0.1:5432 and prints
//! the URL. Without it those tests fail, saying so.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use cardinal::cds_hooks::FeedbackRequest;
use cardinal::config::Config;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use cardinal::store::{CallRecord, CardRow, FeedbackError, Store, StoreConfig, Window};
use chrono::Utc;
use common::process::CardinalProcess;
use common::{TestServer, project_path, request_fixture};
use serde_json::{Value, json};
use sqlx::{Connection, Executor};

const EVALUATION_TIME: &str = "2026-11-20T12:00:00Z";
const DAY_MS: i64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// Databases
// ---------------------------------------------------------------------------------------------

/// A fresh, empty PostgreSQL database for one test, dropped by [`PgDatabase::drop_now`].
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create() -> Self {
        let admin_url = std::env::var("POSTGRES_TEST_URL").unwrap_or_else(|_| {
            panic!(
                "this test needs a PostgreSQL server: run `bash .ci/postgres-setup.sh` (installs \
                 Debian's postgresql and starts it on 127.0.0.1:5432), then \
                 `export POSTGRES_TEST_URL=postgres://cardinal:cardinal@127.0.0.1:5432/postgres`"
            )
        });
        let name = format!("cardinal_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to POSTGRES_TEST_URL: {e}"));
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("CREATE DATABASE");
        let (base, _) = admin_url
            .rsplit_once('/')
            .expect("POSTGRES_TEST_URL ends in /DATABASE");
        let url = format!("{base}/{name}");
        Self {
            admin_url,
            name,
            url,
        }
    }

    async fn drop_now(self) {
        if let Ok(mut conn) = sqlx::PgConnection::connect(&self.admin_url).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

/// Which database a test runs on.
enum Backend {
    Sqlite,
    Postgres(PgDatabase),
}

impl Backend {
    fn kind(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }

    async fn postgres() -> Self {
        Self::Postgres(PgDatabase::create().await)
    }

    fn config(&self) -> StoreConfig {
        StoreConfig {
            url: match self {
                Self::Sqlite => None,
                Self::Postgres(db) => Some(db.url.clone()),
            },
            ..StoreConfig::default()
        }
    }

    async fn finish(self) {
        if let Self::Postgres(db) = self {
            db.drop_now().await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Feedback over HTTP and gRPC against a real server
// ---------------------------------------------------------------------------------------------

async fn server_on(backend: &Backend) -> TestServer {
    let mut config = Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    };
    config.store = backend.config();
    TestServer::start_with(config).await
}

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// Calls metformin-renal over HTTP with the low-eGFR patient; returns its one card.
async fn http_card(server: &TestServer) -> Value {
    let response = http()
        .post(server.url("/cds-services/metformin-renal"))
        .header("x-cardinal-evaluation-time", EVALUATION_TIME)
        .json(&request_fixture("metformin-egfr-low"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["cards"].as_array().unwrap().len(), 1, "{body}");
    body["cards"][0].clone()
}

/// The same call over gRPC; returns the card's uuid and its first suggestion's.
async fn grpc_card(server: &TestServer) -> (String, String) {
    let fixture = request_fixture("metformin-egfr-low");
    let prefetch_json = fixture["prefetch"]
        .as_object()
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
        .unwrap_or_default();
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let response = client
        .call_hook(proto::CallHookRequest {
            service_id: "metformin-renal".into(),
            hook: fixture["hook"].as_str().unwrap().into(),
            hook_instance: fixture["hookInstance"].as_str().unwrap().into(),
            context_json: fixture["context"].to_string(),
            prefetch_json,
            evaluation_time: EVALUATION_TIME.into(),
            ..Default::default()
        })
        .await
        .expect("CallHook")
        .into_inner();
    let card = &response.cards[0];
    (card.uuid.clone(), card.suggestions[0].uuid.clone())
}

async fn post_feedback(server: &TestServer, service: &str, body: &Value) -> (u16, Value) {
    let response = http()
        .post(server.url(&format!("/cds-services/{service}/feedback")))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn analytics_json(server: &TestServer) -> Value {
    let response = http()
        .get(server.admin_url("/analytics/rules?since=1d"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

fn rule<'a>(analytics: &'a Value, service: &str, rule: &str, mode: &str) -> &'a Value {
    analytics["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service_id"] == service && r["rule_id"] == rule && r["mode"] == mode)
        .unwrap_or_else(|| panic!("no {service}/{rule} ({mode}) in {analytics:#}"))
}

fn accepted(card: &str, suggestion: &str, at: &str) -> Value {
    json!({"feedback": [{
        "card": card, "outcome": "accepted",
        "acceptedSuggestions": [{"id": suggestion}], "outcomeTimestamp": at
    }]})
}

async fn feedback_round_trip(backend: Backend) {
    let server = server_on(&backend).await;
    // HTTP: a card, accepted; the same delivery again (a retry) is acknowledged and stored once.
    let card = http_card(&server).await;
    let uuid = card["uuid"].as_str().unwrap();
    let suggestion = card["suggestions"][0]["uuid"].as_str().unwrap();
    let rule_id = card["extension"]["org.cardinalcds.explanation"]["ruleId"]
        .as_str()
        .unwrap();
    let body = accepted(uuid, suggestion, "2026-11-20T12:01:00Z");
    assert_eq!(
        post_feedback(&server, "metformin-renal", &body).await.0,
        200
    );
    assert_eq!(
        post_feedback(&server, "metformin-renal", &body).await.0,
        200
    );

    // gRPC: a second card, overridden with a coded reason.
    let (grpc_uuid, _) = grpc_card(&server).await;
    let mut client = CdsHooksClient::new(server.grpc_channel().await);
    let overridden = proto::Feedback {
        card: grpc_uuid.clone(),
        outcome: "overridden".into(),
        accepted_suggestions: Vec::new(),
        override_reason: Some(proto::OverrideReason {
            reason: Some(proto::Coding {
                system: "http://terminology.hl7.org/CodeSystem/v3-ActReason".into(),
                code: "MEDPREC".into(),
                display: "medical precaution".into(),
            }),
            user_comment: String::new(),
        }),
        outcome_timestamp: "2026-11-20T12:02:00Z".into(),
    };
    let reply = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "metformin-renal".into(),
            feedback: vec![overridden.clone()],
        })
        .await
        .expect("SubmitFeedback")
        .into_inner();
    assert_eq!(reply.accepted, 1);

    // Unknown uuid and wrong service: 404 naming the entry, on both transports; nothing stored.
    let unknown = accepted(
        "00000000-0000-0000-0000-000000000000",
        suggestion,
        "2026-11-20T12:03:00Z",
    );
    let (status, outcome) = post_feedback(&server, "metformin-renal", &unknown).await;
    assert_eq!(status, 404, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "not-found");
    let diagnostics = outcome["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("feedback[0].card"), "{diagnostics}");
    let other_service = accepted(uuid, suggestion, "2026-11-20T12:04:00Z");
    let (status, outcome) = post_feedback(&server, "warfarin-nsaid", &other_service).await;
    assert_eq!(status, 404, "{outcome}");
    let refused = client
        .submit_feedback(proto::SubmitFeedbackRequest {
            service_id: "warfarin-nsaid".into(),
            feedback: vec![overridden],
        })
        .await
        .expect_err("a card of another service");
    assert_eq!(refused.code(), tonic::Code::NotFound);
    assert!(refused.message().contains("feedback[0].card"));

    // The figures: two cards of the rule, one accepted (with one suggestion: the duplicate was not
    // stored twice), one overridden for MEDPREC.
    let analytics = analytics_json(&server).await;
    let figures = rule(&analytics, "metformin-renal", rule_id, "active");
    assert_eq!(figures["shown"], 2, "{figures:#}");
    assert_eq!(figures["accepted"], 1);
    assert_eq!(figures["overridden"], 1);
    assert_eq!(figures["no_feedback"], 0);
    assert_eq!(figures["suggestions_accepted"], 1);
    assert_eq!(figures["override_rate"], 0.5);
    assert_eq!(figures["patients"], 1);
    assert_eq!(figures["repeats"], 1);
    assert_eq!(figures["calls"], 2);
    assert_eq!(figures["firings_per_1000_calls"], 1000.0);
    assert_eq!(figures["override_reasons"][0]["code"], "MEDPREC");
    assert_eq!(figures["override_reasons"][0]["count"], 1);

    // The same figures over gRPC, on the admin listener only.
    let mut analytics_client =
        proto::analytics_client::AnalyticsClient::new(server.admin_grpc_channel().await);
    let by_grpc = analytics_client
        .rule_analytics(proto::RuleAnalyticsRequest { since: "1d".into() })
        .await
        .unwrap()
        .into_inner();
    let grpc_figures = by_grpc
        .rules
        .iter()
        .find(|r| r.service_id == "metformin-renal" && r.rule_id == rule_id && r.mode == "active")
        .unwrap_or_else(|| panic!("no {rule_id} in {by_grpc:#?}"));
    assert_eq!(
        (
            grpc_figures.shown,
            grpc_figures.accepted,
            grpc_figures.overridden
        ),
        (2, 1, 1)
    );
    assert_eq!(grpc_figures.override_rate, Some(0.5));
    assert_eq!(grpc_figures.suggestions_accepted, 1);
    assert_eq!((grpc_figures.patients, grpc_figures.repeats), (1, 1));
    assert_eq!(
        grpc_figures.override_reasons[0].code.as_deref(),
        Some("MEDPREC")
    );
    assert_eq!(by_grpc.calls.get("metformin-renal"), Some(&2));
    assert_eq!(by_grpc.database, backend.kind());
    let bad_since = analytics_client
        .rule_analytics(proto::RuleAnalyticsRequest {
            since: "last tuesday".into(),
        })
        .await
        .expect_err("an unreadable since");
    assert_eq!(bad_since.code(), tonic::Code::InvalidArgument);
    let on_ehr_port = proto::analytics_client::AnalyticsClient::new(server.grpc_channel().await)
        .rule_analytics(proto::RuleAnalyticsRequest::default())
        .await
        .expect_err("analytics are not served to EHRs");
    assert_ne!(on_ehr_port.code(), tonic::Code::Ok);

    // /readyz reports the store.
    let ready: Value = http()
        .get(server.admin_url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["store"]["status"], "writing", "{ready}");
    let metrics = http()
        .get(server.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cardinal_store_records_total"),
        "{metrics}"
    );
    assert!(metrics.contains("cardinal_store_failing"));
    server.stop().await;
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_round_trip_sqlite() {
    feedback_round_trip(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_round_trip_postgres() {
    feedback_round_trip(Backend::postgres().await).await;
}

// ---------------------------------------------------------------------------------------------
// A seeded dataset, figures computed by hand
// ---------------------------------------------------------------------------------------------

fn card(uuid: &str, rule: &str, version: &str, mode: &'static str) -> CardRow {
    CardRow {
        uuid: uuid.into(),
        rule_id: rule.into(),
        rule_version: version.into(),
        mode,
        indicator: "warning".into(),
        summary: format!("{rule} {version}"),
    }
}

fn call(service: &str, at: i64, patient: Option<&str>, cards: Vec<CardRow>) -> CallRecord {
    CallRecord {
        id: uuid::Uuid::new_v4().to_string(),
        service_id: service.into(),
        rule_set: "rs1".into(),
        called_at: at,
        hook_instance: uuid::Uuid::new_v4().to_string(),
        patient_key: patient.map(str::to_owned),
        cards,
    }
}

fn feedback(entries: Value) -> FeedbackRequest {
    FeedbackRequest::from_value(&json!({ "feedback": entries })).unwrap()
}

fn overridden(card: &str, code: Option<&str>, at: &str) -> Value {
    let mut entry = json!({"card": card, "outcome": "overridden", "outcomeTimestamp": at});
    if let Some(code) = code {
        entry["overrideReason"] = json!({"reason": {
            "system": "http://snomed.info/sct", "code": code, "display": format!("reason {code}")
        }});
    }
    entry
}

/// Eight calls to `svc-a` two days ago (and one eleven days ago, outside the window):
/// - r1 v1 (active): 5 cards to p1, p1, p2, p3, p1 → 3 patients, 2 repeats; feedback: c1 accepted
///   with 2 suggestions, c2 and c3 overridden for 'A', c4 overridden without a reason, c5 none; c2's
///   feedback delivered twice.
/// - r1 v2 (active): 1 card (p4), no feedback.
/// - r2 v1 (silent): 2 would-be cards (p1, p2). r3 v1 (candidate): 1 (p5).
///
/// Per 1,000 calls: r1 v1 5/8 → 625; r1 v2, r3 → 125; r2 → 250. Override rate r1 v1: 3 / 4.
async fn seeded_analytics(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &backend.config(),
        dir.path(),
        std::sync::Arc::new(cardinal::telemetry::Metrics::new(false)),
    )
    .await
    .unwrap();
    let t = Utc::now().timestamp_millis() - 2 * DAY_MS;
    let calls = vec![
        call(
            "svc-a",
            t,
            Some("p1"),
            vec![
                card("c1", "r1", "1", "active"),
                card("s1", "r2", "1", "silent"),
            ],
        ),
        call(
            "svc-a",
            t + 1,
            Some("p1"),
            vec![card("c2", "r1", "1", "active")],
        ),
        call(
            "svc-a",
            t + 2,
            Some("p2"),
            vec![
                card("c3", "r1", "1", "active"),
                card("s2", "r2", "1", "silent"),
            ],
        ),
        call(
            "svc-a",
            t + 3,
            Some("p3"),
            vec![card("c4", "r1", "1", "active")],
        ),
        call(
            "svc-a",
            t + 4,
            Some("p1"),
            vec![card("c5", "r1", "1", "active")],
        ),
        call(
            "svc-a",
            t + 5,
            Some("p4"),
            vec![card("c6", "r1", "2", "active")],
        ),
        call(
            "svc-a",
            t + 6,
            Some("p5"),
            vec![card("k1", "r3", "1", "candidate")],
        ),
        call("svc-a", t + 7, None, vec![]),
        call(
            "svc-a",
            t - 9 * DAY_MS,
            Some("p1"),
            vec![card("old", "r1", "1", "active")],
        ),
    ];
    for c in calls {
        store.queue_record(c);
    }
    store.flush().await;

    let first = feedback(json!([
        {"card": "c1", "outcome": "accepted", "acceptedSuggestions": [{"id": "a"}, {"id": "b"}],
         "outcomeTimestamp": "2026-11-20T10:00:00Z"},
        overridden("c2", Some("A"), "2026-11-20T10:01:00Z"),
        overridden("c3", Some("A"), "2026-11-20T10:02:00Z"),
        overridden("c4", None, "2026-11-20T10:03:00Z"),
    ]));
    assert_eq!(store.feedback("svc-a", &first).await.unwrap(), 4);
    // The same delivery again: nothing new.
    let again = feedback(json!([overridden("c2", Some("A"), "2026-11-20T10:01:00Z")]));
    assert_eq!(store.feedback("svc-a", &again).await.unwrap(), 0);
    // A silent card was never returned; another service never returned c1; nothing is stored.
    let silent = feedback(json!([overridden("s1", Some("A"), "2026-11-20T10:05:00Z")]));
    assert!(matches!(
        store.feedback("svc-a", &silent).await,
        Err(FeedbackError::UnknownCard { index: 0 })
    ));
    let mixed = feedback(json!([
        overridden("c5", Some("B"), "2026-11-20T10:06:00Z"),
        overridden("nope", Some("B"), "2026-11-20T10:06:00Z"),
    ]));
    assert!(matches!(
        store.feedback("svc-a", &mixed).await,
        Err(FeedbackError::UnknownCard { index: 1 })
    ));
    assert!(matches!(
        store.feedback("svc-b", &again).await,
        Err(FeedbackError::UnknownCard { index: 0 })
    ));

    let analytics = store.analytics(Window::last_days(7)).await.unwrap();
    assert_eq!(analytics.calls, BTreeMap::from([("svc-a".to_owned(), 8)]));
    let find = |rule: &str, version: &str, mode: &str| {
        analytics
            .rules
            .iter()
            .find(|r| r.rule_id == rule && r.rule_version == version && r.mode == mode)
            .unwrap_or_else(|| panic!("{rule} {version} {mode}: {analytics:#?}"))
            .clone()
    };
    let r1 = find("r1", "1", "active");
    assert_eq!(
        (r1.shown, r1.accepted, r1.overridden, r1.no_feedback),
        (5, 1, 3, 1)
    );
    assert_eq!(r1.override_rate, Some(0.75));
    assert_eq!(r1.suggestions_accepted, 2);
    assert_eq!((r1.patients, r1.repeats), (3, 2));
    assert_eq!(r1.cards_per_patient, Some(5.0 / 3.0));
    assert_eq!(r1.calls, 8);
    assert_eq!(r1.firings_per_1000_calls, Some(625.0));
    assert_eq!(r1.indicators, BTreeMap::from([("warning".to_owned(), 5)]));
    let reasons: Vec<(Option<&str>, i64)> = r1
        .override_reasons
        .iter()
        .map(|r| (r.code.as_deref(), r.count))
        .collect();
    assert_eq!(reasons, vec![(Some("A"), 2), (None, 1)]);
    let r1v2 = find("r1", "2", "active");
    assert_eq!((r1v2.shown, r1v2.no_feedback, r1v2.repeats), (1, 1, 0));
    assert_eq!(r1v2.override_rate, None);
    assert_eq!(r1v2.firings_per_1000_calls, Some(125.0));
    let r2 = find("r2", "1", "silent");
    assert_eq!((r2.shown, r2.patients, r2.repeats), (2, 2, 0));
    assert_eq!(r2.firings_per_1000_calls, Some(250.0));
    let r3 = find("r3", "1", "candidate");
    assert_eq!((r3.shown, r3.patients), (1, 1));
    assert_eq!(analytics.rules.len(), 4);

    // Retention: purging before yesterday removes everything seeded.
    let purged = store
        .purge(Utc::now() - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(purged, 10);
    let after = store.analytics(Window::last_days(30)).await.unwrap();
    assert!(
        after.rules.is_empty() && after.calls.is_empty(),
        "{after:#?}"
    );
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_analytics_sqlite() {
    seeded_analytics(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_analytics_postgres() {
    seeded_analytics(Backend::postgres().await).await;
}

// ---------------------------------------------------------------------------------------------
// Drift
// ---------------------------------------------------------------------------------------------

/// Fourteen days of 10 calls a day to `svc-d`: `rising` fires once a day, `stopping` twice,
/// `steady` three times. Today, 10 calls: `rising` 6 (0.6 per call against 0.1: ×6, beyond the
/// factor 3), `stopping` none, `steady` 3 (×1).
async fn drift_scenario(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = std::sync::Arc::new(cardinal::telemetry::Metrics::new(false));
    let store = Store::open(&backend.config(), dir.path(), metrics.clone())
        .await
        .unwrap();
    let now = Utc::now().timestamp_millis();
    let today_start = now - now.rem_euclid(DAY_MS);
    let today = (today_start).max(now - 1000);
    let mut n = 0;
    let mut uuid = || {
        n += 1;
        format!("d{n}")
    };
    for day in 1..=14 {
        let at = today_start - day * DAY_MS + DAY_MS / 2;
        for i in 0..10 {
            let mut cards = Vec::new();
            if i < 1 {
                cards.push(card(&uuid(), "rising", "1", "active"));
            }
            if i < 2 {
                cards.push(card(&uuid(), "stopping", "1", "active"));
            }
            if i < 3 {
                cards.push(card(&uuid(), "steady", "1", "active"));
            }
            store.queue_record(call("svc-d", at + i, Some("p"), cards));
        }
    }
    for i in 0..10 {
        let mut cards = Vec::new();
        if i < 6 {
            cards.push(card(&uuid(), "rising", "1", "active"));
        }
        if i < 3 {
            cards.push(card(&uuid(), "steady", "1", "active"));
        }
        store.queue_record(call("svc-d", today - i, Some("p"), cards));
    }
    store.flush().await;
    let drift = store.assess_drift().await.unwrap();
    let by_rule: BTreeMap<&str, _> = drift.iter().map(|d| (d.rule_id.as_str(), d)).collect();
    let rising = by_rule["rising"];
    assert_eq!((rising.direction, rising.flagged), ("up", true));
    assert!((rising.ratio.unwrap() - 6.0).abs() < 1e-9, "{rising:?}");
    assert!((rising.baseline_rate - 0.1).abs() < 1e-9);
    assert_eq!((rising.today_calls, rising.baseline_calls), (10, 140));
    let stopping = by_rule["stopping"];
    assert_eq!((stopping.direction, stopping.flagged), ("stopped", true));
    let steady = by_rule["steady"];
    assert_eq!((steady.direction, steady.flagged), ("steady", false));

    // The alarm as a metric.
    let text = metrics.prometheus_text();
    let drifting = text
        .lines()
        .find(|l| l.starts_with("cardinal_rule_drifting") && l.contains("rule=\"rising\""))
        .unwrap_or_else(|| panic!("no drift metric for `rising`:\n{text}"));
    assert!(drifting.ends_with(" 1"), "{drifting}");
    assert!(text.lines().any(|l| l.starts_with("cardinal_rule_drifting")
        && l.contains("rule=\"steady\"")
        && l.ends_with(" 0")));
    // And in the page.
    let analytics = store.analytics(Window::last_days(20)).await.unwrap();
    let html = cardinal::store::page::render(&analytics);
    assert!(
        html.contains("<span class=\"flag\">up</span> svc-d / rising"),
        "{html}"
    );
    assert!(html.contains("<span class=\"flag\">stopped</span> svc-d / stopping"));
    assert!(!html.contains("svc-d / steady:"));
    backend.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_scenario_sqlite() {
    drift_scenario(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_scenario_postgres() {
    drift_scenario(Backend::postgres().await).await;
}

// ---------------------------------------------------------------------------------------------
// Crash safety: the real binary, SIGKILL right after a 200 to feedback
// ---------------------------------------------------------------------------------------------

fn blocking_call(process: &CardinalProcess) -> Value {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let response = http()
            .post(process.url("/cds-services/metformin-renal"))
            .header("x-cardinal-evaluation-time", EVALUATION_TIME)
            .json(&request_fixture("metformin-egfr-low"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        body["cards"][0].clone()
    })
}

#[test]
fn acknowledged_feedback_survives_sigkill() {
    let rules = project_path("rules");
    let process = CardinalProcess::spawn(&rules, &[]);
    let card = blocking_call(&process);
    let uuid = card["uuid"].as_str().unwrap().to_owned();
    let suggestion = card["suggestions"][0]["uuid"].as_str().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime.block_on(async {
        http()
            .post(process.url("/cds-services/metformin-renal/feedback"))
            .json(&accepted(&uuid, suggestion, "2026-11-20T12:01:00Z"))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    // No graceful shutdown, no flush: only what was committed survives.
    let data_dir = process.kill();

    let restarted = CardinalProcess::spawn_in(&rules, &[], &["--dev"], data_dir);
    let analytics: Value = runtime.block_on(async {
        http()
            .get(restarted.admin_url("/analytics/rules?since=1d"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let rule_id = card["extension"]["org.cardinalcds.explanation"]["ruleId"]
        .as_str()
        .unwrap();
    let figures = rule(&analytics, "metformin-renal", rule_id, "active");
    assert_eq!(figures["accepted"], 1, "{analytics:#}");
    assert_eq!(figures["suggestions_accepted"], 1);
    // The same store read by `cardinal report`.
    let data_dir = restarted.data_dir.path().to_owned();
    let mut report = Command::new(env!("CARGO_BIN_EXE_cardinal"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CARDINAL_") {
            report.env_remove(&key);
        }
    }
    let report = report
        .args(["report", "--since", "1d", "--json"])
        .env("CARDINAL_DATA_DIR", &data_dir)
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(
        rule(&report, "metformin-renal", rule_id, "active")["accepted"],
        1
    );
    let _ = restarted.stop(Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------------
// The analytics page in headless Chromium
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_analytics_page_renders_in_headless_chromium() {
    let server = server_on(&Backend::Sqlite).await;
    let card = http_card(&server).await;
    let uuid = card["uuid"].as_str().unwrap();
    let body = json!({"feedback": [overridden(uuid, Some("428119001"), "2026-11-20T12:05:00Z")]});
    assert_eq!(
        post_feedback(&server, "metformin-renal", &body).await.0,
        200
    );
    let rule_id = card["extension"]["org.cardinalcds.explanation"]["ruleId"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = server.admin_url("/analytics?since=7d");
    let page = tokio::task::spawn_blocking(move || common::browser::render(&url, 1200, 1400))
        .await
        .unwrap();
    let text = &page.dom;
    for expected in [
        "Cardinal: cards, feedback and drift",
        "metformin-renal",
        rule_id.as_str(),
        "100%",
        "reason 428119001",
        "id=\"override-chart\"",
        "id=\"firing-chart\"",
        "id=\"reasons-chart\"",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` not in the rendered page:\n{text}"
        );
    }
    let png = page.png;
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    if let Ok(keep) = std::env::var("ANALYTICS_SCREENSHOT") {
        std::fs::write(keep, &png).unwrap();
    }
    server.stop().await;
}
