//! Observability end to end. The real `cardinal serve` binary exports its spans and metrics over
//! OTLP/gRPC to a real receiver (`support/otlp_receiver.rs`, a tonic `TraceService` and
//! `MetricsService` on 127.0.0.1:0); the tests check:
//!
//! - the caller's W3C trace is continued over HTTP (`traceparent` header) and gRPC (`traceparent`
//!   metadata): server span → `cds_hooks.call` → one `rule` span per rule, with their attributes,
//!   the `service.name` resource, and the trace id returned in `x-cardinal-trace-id`, the response
//!   extension and every card's explanation; a prefetch key Cardinal fetches is a `prefetch.fetch`
//!   span under the call;
//! - no patient data (names, identifiers, birth date, address, phone, patient id, bearer token) in
//!   the logs at debug level, the exported spans and events, the exported metrics or `/metrics`,
//!   whether the call succeeded, was refused (400) or lacked data (412);
//! - the Prometheus series move as hook calls, rule runs, cards, rule timeouts and unknown services
//!   are counted (`GET /metrics`, and the same registry read in-process);
//! - a collector that is down never stops Cardinal from starting or serving.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;
#[path = "support/otlp_receiver.rs"]
mod otlp_receiver;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cardinal::config::Config;
use cardinal::engine::SandboxLimits;
use cardinal::evaluator::Cardinal;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::process::CardinalProcess;
use common::{TestServer, project_path, request_fixture};
use otlp_receiver::{ExportedSpan, OtlpReceiver};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SERVICE_NAME: &str = "cardinal-test";
const TRACE_ID_HEADER: &str = "x-cardinal-trace-id";
const EVALUATION_TIME_HEADER: &str = "x-cardinal-evaluation-time";
const EXPLANATION: &str = "org.cardinalcds.explanation";
const TRACE_ID_EXTENSION: &str = "org.cardinalcds.traceId";
const OPIOID_CASE: &str = "rules/opioid-cds/tests/rec-04-05-mme-greater-than-fifty.json";
/// How long exported telemetry may take to arrive (the batch delay is 100 ms); only a failing
/// test waits this long.
const EXPORT_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The environment of a `cardinal serve` exporting to `endpoint`, with fast exports and JSON logs
/// at debug level.
fn otel_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_SERVICE_NAME", SERVICE_NAME.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500".to_owned()),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".to_owned()),
        ("CARDINAL_LOG_FORMAT", "json".to_owned()),
        ("CARDINAL_LOG_FILTER", "debug".to_owned()),
    ]
}

fn spawn(rules: &str, env: &[(&'static str, String)]) -> CardinalProcess {
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The calls below name a FHIR server where nothing listens, to see a fetch fail.
    env.push((
        "CARDINAL_PREFETCH__ALLOWED_FHIR_SERVERS",
        r#"["http://127.0.0.1:9/fhir"]"#,
    ));
    CardinalProcess::spawn(&project_path(rules), &env)
}

/// The calling EHR's span: a fresh trace id and span id.
struct Caller {
    trace_id: String,
    span_id: String,
}

impl Caller {
    fn new() -> Self {
        let span = uuid::Uuid::new_v4().simple().to_string();
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            span_id: span[..16].to_owned(),
        }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", self.trace_id, self.span_id)
    }
}

fn fresh_hook_instance() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A rule-test case file's request, its service and evaluation time.
fn case(path: &str) -> (Value, String, String) {
    let path = project_path(path);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let case: Value = serde_json::from_str(&text).expect("case JSON");
    let text = |key: &str| case[key].as_str().expect(key).to_owned();
    (
        case["request"].clone(),
        text("service"),
        text("evaluation_time"),
    )
}

/// `(id, version)` of every rule of `service` in the project's `rules/`.
fn rules_of(service: &str) -> Vec<(String, String)> {
    static SHIPPED: OnceLock<Cardinal> = OnceLock::new();
    let cardinal = SHIPPED.get_or_init(|| {
        Cardinal::load(Config {
            rules_dir: project_path("rules"),
            ..Config::default().development()
        })
        .unwrap_or_else(|e| panic!("{e}"))
    });
    let service = cardinal.service(service).expect("service");
    service
        .rules
        .iter()
        .map(|r| (r.id.clone(), r.version.clone()))
        .collect()
}

/// A CDS Hooks JSON request as a gRPC `CallHookRequest`.
fn grpc_request(service_id: &str, body: &Value, evaluation_time: &str) -> proto::CallHookRequest {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let fhir_authorization = body
        .get("fhirAuthorization")
        .filter(|a| a.is_object())
        .map(|a| proto::FhirAuthorization {
            access_token: text(&a["access_token"]),
            token_type: text(&a["token_type"]),
            expires_in: a["expires_in"].as_i64().unwrap_or_default(),
            scope: text(&a["scope"]),
            subject: text(&a["subject"]),
            patient: text(&a["patient"]),
        });
    proto::CallHookRequest {
        service_id: service_id.to_owned(),
        hook: text(&body["hook"]),
        hook_instance: text(&body["hookInstance"]),
        fhir_server: text(&body["fhirServer"]),
        fhir_authorization,
        context_json: body["context"].to_string(),
        prefetch_json: body["prefetch"]
            .as_object()
            .map(|p| p.iter().map(|(k, v)| (k.clone(), v.to_string())).collect())
            .unwrap_or_default(),
        extension_json: String::new(),
        evaluation_time: evaluation_time.to_owned(),
        ..proto::CallHookRequest::default()
    }
}

fn describe(spans: &[ExportedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} trace={} span={} parent={} kind={} status={} attrs={:?}",
                s.name, s.trace_id, s.span_id, s.parent_span_id, s.kind, s.status, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `cds_hooks.call` span of the call with this `hookInstance`, once it has ended.
fn call_span<'a>(spans: &'a [ExportedSpan], hook_instance: &str) -> Option<&'a ExportedSpan> {
    spans.iter().find(|s| {
        s.attr("cds.hook_instance") == Some(hook_instance)
            && s.attr("cds.service.id").is_some()
            && s.attr("http.response.status_code").is_some()
    })
}

/// The spans whose parent is `parent` (in its trace).
fn children<'a>(spans: &'a [ExportedSpan], parent: &ExportedSpan) -> Vec<&'a ExportedSpan> {
    spans
        .iter()
        .filter(|s| s.trace_id == parent.trace_id && s.parent_span_id == parent.span_id)
        .collect()
}

fn rule_spans<'a>(spans: &'a [ExportedSpan], call: &ExportedSpan) -> Vec<&'a ExportedSpan> {
    children(spans, call)
        .into_iter()
        .filter(|s| s.attr("cds.rule.id").is_some())
        .collect()
}

/// `span`'s ancestors among the exported spans, nearest first.
fn ancestors<'a>(spans: &'a [ExportedSpan], span: &ExportedSpan) -> Vec<&'a ExportedSpan> {
    let mut chain = Vec::new();
    let mut parent = span.parent_span_id.clone();
    while !parent.is_empty() {
        let Some(p) = spans
            .iter()
            .find(|s| s.trace_id == span.trace_id && s.span_id == parent)
        else {
            break;
        };
        chain.push(p);
        parent = p.parent_span_id.clone();
        if chain.len() > 32 {
            break;
        }
    }
    chain
}

/// What one traced hook call is expected to have produced.
struct Traced<'a> {
    what: &'a str,
    caller: &'a Caller,
    service: &'a str,
    hook: &'a str,
    hook_instance: &'a str,
    rules: Vec<(String, String)>,
    cards: usize,
}

/// The call's `cds_hooks.call` span and its rule spans: present, linked, with their attributes and
/// the `service.name` resource. Returns the call span.
async fn assert_call_and_rule_spans(receiver: &OtlpReceiver, t: &Traced<'_>) -> ExportedSpan {
    let expected_rules = t.rules.len();
    let spans = receiver
        .wait_for_spans(
            |spans| {
                call_span(spans, t.hook_instance)
                    .is_some_and(|call| rule_spans(spans, call).len() >= expected_rules)
            },
            EXPORT_WAIT,
        )
        .await
        .unwrap_or_else(|got| {
            panic!(
                "{}: no `cds_hooks.call` span with cds.hook_instance={} and {expected_rules} rule \
                 span(s) was exported; received:\n{}",
                t.what,
                t.hook_instance,
                describe(&got)
            )
        });
    let call = call_span(&spans, t.hook_instance)
        .expect("call span")
        .clone();
    let context = format!("{}: call span {call:#?}", t.what);
    assert!(
        call.name == "cds_hooks.call" || call.name == format!("call {}", t.service),
        "{context}"
    );
    assert_eq!(call.attr("cds.service.id"), Some(t.service), "{context}");
    assert_eq!(call.attr("cds.hook"), Some(t.hook), "{context}");
    assert_eq!(
        call.attr("cds.hook_instance"),
        Some(t.hook_instance),
        "{context}"
    );
    let cards = t.cards.to_string();
    assert_eq!(call.attr("cds.cards"), Some(cards.as_str()), "{context}");
    assert_eq!(
        call.attr("http.response.status_code"),
        Some("200"),
        "{context}"
    );
    assert_ne!(call.status, "error", "{context}");
    assert_eq!(
        call.resource.get("service.name").map(String::as_str),
        Some(SERVICE_NAME),
        "{context}"
    );

    let rules = rule_spans(&spans, &call);
    assert_eq!(
        rules.len(),
        expected_rules,
        "{}: one rule span per rule of {}:\n{}",
        t.what,
        t.service,
        describe(&spans)
    );
    for (id, version) in &t.rules {
        let matching: Vec<_> = rules
            .iter()
            .filter(|s| s.attr("cds.rule.id") == Some(id.as_str()))
            .collect();
        assert_eq!(
            matching.len(),
            1,
            "{}: rule {id}:\n{}",
            t.what,
            describe(&spans)
        );
        let rule = matching[0];
        let context = format!("{}: rule span {rule:#?}", t.what);
        assert!(
            rule.name == "rule" || rule.name == format!("rule {id}"),
            "{context}"
        );
        assert_eq!(rule.trace_id, call.trace_id, "{context}");
        assert_eq!(rule.parent_span_id, call.span_id, "{context}");
        assert_eq!(
            rule.attr("cds.rule.version"),
            Some(version.as_str()),
            "{context}"
        );
        assert_eq!(rule.attr("cds.rule.outcome"), Some("fired"), "{context}");
        assert!(
            rule.attr("cds.rule.operations")
                .is_some_and(|o| o.parse::<u64>().is_ok()),
            "{context}"
        );
        assert!(
            rule.attr("cds.rule.duration_us")
                .is_some_and(|d| d.parse::<u64>().is_ok()),
            "{context}"
        );
        assert_eq!(
            rule.resource.get("service.name").map(String::as_str),
            Some(SERVICE_NAME),
            "{context}"
        );
    }
    call
}

/// The call continues the caller's trace: the call span has the caller's trace id, and its ancestors
/// reach Cardinal's server span, whose parent is the caller's span.
async fn assert_continues_callers_trace(
    receiver: &OtlpReceiver,
    t: &Traced<'_>,
    call: &ExportedSpan,
) {
    assert_eq!(
        call.trace_id,
        t.caller.trace_id,
        "{}: the call span is not in the caller's trace ({}): {call:#?}",
        t.what,
        t.caller.traceparent()
    );
    // The server span ends after the response is written: it may come in a later batch.
    let caller = t.caller;
    let spans = receiver
        .wait_for_spans(
            |spans| {
                spans
                    .iter()
                    .any(|s| s.trace_id == caller.trace_id && s.parent_span_id == caller.span_id)
            },
            EXPORT_WAIT,
        )
        .await
        .unwrap_or_else(|got| {
            panic!(
                "{}: no server span whose parent is the caller's span {}; received:\n{}",
                t.what,
                caller.span_id,
                describe(&got)
            )
        });
    let in_trace: Vec<ExportedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == caller.trace_id)
        .cloned()
        .collect();
    let servers: Vec<&ExportedSpan> = in_trace
        .iter()
        .filter(|s| s.parent_span_id == caller.span_id)
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "{}: one server span per call:\n{}",
        t.what,
        describe(&in_trace)
    );
    let server = servers[0];
    assert_eq!(server.kind, "server", "{}: {server:#?}", t.what);
    assert_eq!(
        server.resource.get("service.name").map(String::as_str),
        Some(SERVICE_NAME),
        "{}: {server:#?}",
        t.what
    );
    let chain = ancestors(&in_trace, call);
    assert!(
        chain
            .last()
            .is_some_and(|top| top.span_id == server.span_id),
        "{}: the call span's ancestors do not end at the server span:\n{}",
        t.what,
        describe(&in_trace)
    );
    // The trace as an operator sees it (`cargo test --test telemetry -- --nocapture`).
    eprintln!("{}:\n{}", t.what, tree(&in_trace, &server.span_id, 1));
}

/// `spans` below `parent`, indented, with their attributes.
fn tree(spans: &[ExportedSpan], parent: &str, depth: usize) -> String {
    let mut out = String::new();
    for span in spans.iter().filter(|s| s.span_id == parent && depth == 1) {
        out.push_str(&format!("{} {:?}\n", span.name, span.attributes));
    }
    for span in spans.iter().filter(|s| s.parent_span_id == parent) {
        let attributes: Vec<String> = span
            .attributes
            .iter()
            .filter(|(k, _)| !k.ends_with("_ns") && !k.starts_with("code.") && *k != "target")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        out.push_str(&format!(
            "{}└ {} [{}]\n",
            "  ".repeat(depth),
            span.name,
            attributes.join(" ")
        ));
        out.push_str(&tree(spans, &span.span_id, depth + 1));
    }
    out
}

/// The trace id in the response header, the response extension and every card's explanation.
fn assert_trace_id_in_http_response(
    what: &str,
    caller: &Caller,
    header: Option<&str>,
    body: &Value,
) {
    assert_eq!(
        header,
        Some(caller.trace_id.as_str()),
        "{what}: response header {TRACE_ID_HEADER}"
    );
    assert_eq!(
        body["extension"][TRACE_ID_EXTENSION].as_str(),
        Some(caller.trace_id.as_str()),
        "{what}: response extension {TRACE_ID_EXTENSION}: {body:#}"
    );
    let cards = body["cards"].as_array().expect("cards");
    assert!(!cards.is_empty(), "{what}: {body:#}");
    for card in cards {
        assert_eq!(
            card["extension"][EXPLANATION]["traceId"].as_str(),
            Some(caller.trace_id.as_str()),
            "{what}: card explanation traceId: {card:#}"
        );
    }
}

/// POSTs a hook call; returns the status, the `x-cardinal-trace-id` header and the body (JSON, or
/// the text as a JSON string when it is not JSON).
async fn post(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Option<String>, Value) {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("HTTP call");
    let status = response.status();
    let trace_id = response
        .headers()
        .get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, trace_id, body)
}

// ---------------------------------------------------------------------------------------------
// a. The caller's trace is continued and exported
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_continue_the_callers_trace_over_http_and_grpc() {
    let receiver = OtlpReceiver::start();
    let cardinal = spawn("rules", &otel_env(&receiver.endpoint));
    let client = reqwest::Client::new();

    // patient-view over HTTP.
    let greeting_caller = Caller::new();
    let greeting_instance = fresh_hook_instance();
    let mut greeting = request_fixture("patient-view-greeting");
    greeting["hookInstance"] = json!(greeting_instance);
    let (status, greeting_header, greeting_body) = post(
        &client,
        &cardinal.url("/cds-services/patient-greeting"),
        &[("traceparent", &greeting_caller.traceparent())],
        greeting.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{greeting_body:#}");
    assert_eq!(greeting_body["cards"].as_array().map(Vec::len), Some(1));

    // order-sign over HTTP, pinned to the case's date: one card.
    let opioid_caller = Caller::new();
    let opioid_instance = fresh_hook_instance();
    let (mut opioid, opioid_service, at) = case(OPIOID_CASE);
    assert_eq!(opioid_service, "opioidcds-04-05");
    assert_eq!(at, "2023-05-01");
    opioid["hookInstance"] = json!(opioid_instance);
    let (status, opioid_header, opioid_body) = post(
        &client,
        &cardinal.url("/cds-services/opioidcds-04-05"),
        &[
            ("traceparent", &opioid_caller.traceparent()),
            (EVALUATION_TIME_HEADER, "2023-05-01"),
        ],
        opioid.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{opioid_body:#}");
    assert_eq!(
        opioid_body["cards"].as_array().map(Vec::len),
        Some(1),
        "{opioid_body:#}"
    );

    // order-sign over gRPC, `traceparent` in the metadata.
    let grpc_caller = Caller::new();
    let grpc_instance = fresh_hook_instance();
    let (mut metformin, metformin_service, metformin_at) =
        case("rules/metformin-renal/tests/egfr-24-contraindicated.json");
    metformin["hookInstance"] = json!(grpc_instance);
    let mut request =
        tonic::Request::new(grpc_request(&metformin_service, &metformin, &metformin_at));
    request.metadata_mut().insert(
        "traceparent",
        grpc_caller.traceparent().parse().expect("metadata value"),
    );
    let response = CdsHooksClient::new(cardinal.grpc_channel().await)
        .call_hook(request)
        .await
        .expect("gRPC CallHook");
    let grpc_header = response
        .metadata()
        .get(TRACE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let grpc_response = response.into_inner();
    assert_eq!(grpc_response.cards.len(), 1, "{grpc_response:#?}");

    let calls = [
        Traced {
            what: "HTTP patient-greeting",
            caller: &greeting_caller,
            service: "patient-greeting",
            hook: "patient-view",
            hook_instance: &greeting_instance,
            rules: rules_of("patient-greeting"),
            cards: 1,
        },
        Traced {
            what: "HTTP opioidcds-04-05",
            caller: &opioid_caller,
            service: "opioidcds-04-05",
            hook: "order-sign",
            hook_instance: &opioid_instance,
            rules: rules_of("opioidcds-04-05"),
            cards: 1,
        },
        Traced {
            what: "gRPC metformin-renal",
            caller: &grpc_caller,
            service: "metformin-renal",
            hook: "order-sign",
            hook_instance: &grpc_instance,
            rules: rules_of("metformin-renal"),
            cards: 1,
        },
    ];
    // Exported, linked and attributed (the evaluator's spans).
    let mut call_spans = Vec::new();
    for t in &calls {
        call_spans.push(assert_call_and_rule_spans(&receiver, t).await);
    }
    // Continuing the caller's trace, and returning its id (the server middleware).
    for (t, call) in calls.iter().zip(&call_spans) {
        assert_continues_callers_trace(&receiver, t, call).await;
    }
    assert_trace_id_in_http_response(
        "HTTP patient-greeting",
        &greeting_caller,
        greeting_header.as_deref(),
        &greeting_body,
    );
    assert_trace_id_in_http_response(
        "HTTP opioidcds-04-05",
        &opioid_caller,
        opioid_header.as_deref(),
        &opioid_body,
    );
    assert_eq!(
        grpc_response.trace_id, grpc_caller.trace_id,
        "gRPC CallHookResponse.trace_id"
    );
    for card in &grpc_response.cards {
        assert_eq!(
            card.explanation.as_ref().map(|e| e.trace_id.as_str()),
            Some(grpc_caller.trace_id.as_str()),
            "gRPC card explanation trace_id: {card:#?}"
        );
    }
    assert_eq!(
        grpc_header.as_deref(),
        Some(grpc_caller.trace_id.as_str()),
        "gRPC response metadata {TRACE_ID_HEADER}"
    );
}

/// A prefetch key Cardinal has to fetch is traced as a `prefetch.fetch` span under the call, naming
/// the key (and nothing of the URL); the call's span records the 412.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_prefetch_is_traced_under_the_call() {
    let receiver = OtlpReceiver::start();
    let cardinal = spawn("rules", &otel_env(&receiver.endpoint));
    let caller = Caller::new();
    let instance = fresh_hook_instance();
    let (mut request, service, at) = case(OPIOID_CASE);
    request["hookInstance"] = json!(instance);
    // Nothing listens on port 9: the fetch fails, and the key is required.
    request["fhirServer"] = json!("http://127.0.0.1:9/fhir");
    request["prefetch"]
        .as_object_mut()
        .expect("prefetch")
        .remove("medicationRequests");
    let (status, _, body) = post(
        &reqwest::Client::new(),
        &cardinal.url(&format!("/cds-services/{service}")),
        &[
            ("traceparent", &caller.traceparent()),
            (EVALUATION_TIME_HEADER, &at),
        ],
        request.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body:#}");

    let spans = receiver
        .wait_for_spans(|spans| call_span(spans, &instance).is_some(), EXPORT_WAIT)
        .await
        .unwrap_or_else(|got| panic!("no call span:\n{}", describe(&got)));
    let call = call_span(&spans, &instance).expect("call span").clone();
    assert_eq!(
        call.attr("http.response.status_code"),
        Some("412"),
        "{call:#?}"
    );
    assert_eq!(call.status, "error", "{call:#?}");
    assert!(
        rule_spans(&spans, &call).is_empty(),
        "no rule runs on a 412"
    );

    // The fetch span ends before the call span, so it is exported with it or earlier.
    let fetches: Vec<&ExportedSpan> = spans
        .iter()
        .filter(|s| s.attr("cds.prefetch.key").is_some())
        .filter(|s| {
            ancestors(&spans, s)
                .iter()
                .any(|a| a.span_id == call.span_id)
        })
        .collect();
    assert_eq!(
        fetches.len(),
        1,
        "one `prefetch.fetch` span under the call:\n{}",
        describe(&spans)
    );
    let fetch = fetches[0];
    assert_eq!(fetch.name, "prefetch.fetch", "{fetch:#?}");
    assert_eq!(
        fetch.attr("cds.prefetch.key"),
        Some("medicationRequests"),
        "{fetch:#?}"
    );
    assert_eq!(fetch.trace_id, caller.trace_id, "{fetch:#?}");
    let patient = request["context"]["patientId"].as_str().expect("patientId");
    for (key, value) in &fetch.attributes {
        assert!(
            !value.contains(patient) && !value.contains("MedicationRequest?"),
            "the fetch span names the URL or the patient: {key}={value}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// b. No patient data leaves in logs, spans or metrics
// ---------------------------------------------------------------------------------------------

const PATIENT_ID: &str = "pat-SECRET-4242";
const GIVEN: &str = "Zebulon";
const FAMILY: &str = "Quixote-Farnsworth";
const MRN: &str = "MRN-99887766";
const BIRTH_DATE: &str = "1931-03-17";
const STREET: &str = "1428 Larkspur Hollow Lane";
const CITY: &str = "Quillbury-on-Tweed";
const PHONE: &str = "+1-555-0199-7731";
const EMAIL: &str = "zebulon.qf@example.org";
const TOKEN: &str = "tok-SECRET-5151";
const ENCOUNTER_ID: &str = "enc-SECRET-6262";

/// Everything that identifies the patient (or would let someone act as the EHR).
const SECRETS: [&str; 11] = [
    PATIENT_ID,
    GIVEN,
    FAMILY,
    MRN,
    BIRTH_DATE,
    STREET,
    CITY,
    PHONE,
    EMAIL,
    TOKEN,
    ENCOUNTER_ID,
];

fn identified_patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": MRN,
        }],
        "name": [{"use": "official", "family": FAMILY, "given": [GIVEN]}],
        "telecom": [
            {"system": "phone", "value": PHONE, "use": "home"},
            {"system": "email", "value": EMAIL},
        ],
        "gender": "male",
        "birthDate": BIRTH_DATE,
        "address": [{"line": [STREET], "city": CITY, "postalCode": "QB7 9ZZ", "country": "GB"}],
    })
}

fn authorization() -> Value {
    json!({
        "access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
        "scope": "patient/*.read", "subject": "cardinal", "patient": PATIENT_ID,
    })
}

/// The identified patient's patient-view call to patient-greeting.
fn identified_greeting(hook_instance: &str) -> Value {
    json!({
        "hook": "patient-view",
        "hookInstance": hook_instance,
        "fhirServer": "http://127.0.0.1:9/fhir",
        "fhirAuthorization": authorization(),
        "context": {
            "userId": "Practitioner/pract-1",
            "patientId": PATIENT_ID,
            "encounterId": ENCOUNTER_ID,
        },
        "prefetch": {"patient": identified_patient()},
    })
}

/// The opioid case's order-sign call, for the identified patient.
fn identified_opioid_call(hook_instance: &str) -> Value {
    let (request, _, _) = case(OPIOID_CASE);
    let original = request["context"]["patientId"]
        .as_str()
        .expect("patientId")
        .to_owned();
    let text = request.to_string().replace(&original, PATIENT_ID);
    let mut request: Value = serde_json::from_str(&text).expect("JSON");
    request["hookInstance"] = json!(hook_instance);
    request["context"]["encounterId"] = json!(ENCOUNTER_ID);
    request["fhirAuthorization"] = authorization();
    request["fhirServer"] = json!("http://127.0.0.1:9/fhir");
    let mut patient = identified_patient();
    if let Some(extension) = request["prefetch"]["patient"].get("extension") {
        patient["extension"] = extension.clone();
    }
    request["prefetch"]["patient"] = patient;
    request
}

fn assert_no_secrets(what: &str, text: &str) {
    for secret in SECRETS {
        if let Some(at) = text.find(secret) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("{what} contains {secret:?}:\n{}", &text[start..end]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_patient_data_in_logs_spans_or_metrics() {
    let receiver = OtlpReceiver::start();
    let cardinal = spawn("rules", &otel_env(&receiver.endpoint));
    let client = reqwest::Client::new();
    let bearer = format!("Bearer {TOKEN}");
    let caller = Caller::new();
    let traceparent = caller.traceparent();
    let headers = [
        ("traceparent", traceparent.as_str()),
        ("authorization", bearer.as_str()),
        (EVALUATION_TIME_HEADER, "2023-05-01"),
    ];
    let url = |service: &str| cardinal.url(&format!("/cds-services/{service}"));
    // (hook instance, expected status) of every call that reaches the evaluator.
    let mut evaluated: Vec<(String, u16)> = Vec::new();

    // 200s: the patient is greeted by name (in the response to the EHR, and nowhere else).
    let instance = fresh_hook_instance();
    let (status, _, body) = post(
        &client,
        &url("patient-greeting"),
        &headers,
        identified_greeting(&instance).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert!(body.to_string().contains(GIVEN), "{body:#}");
    evaluated.push((instance, 200));
    let instance = fresh_hook_instance();
    let (status, _, body) = post(
        &client,
        &url("opioidcds-04-05"),
        &headers,
        identified_opioid_call(&instance).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["cards"].as_array().map(Vec::len), Some(1), "{body:#}");
    evaluated.push((instance, 200));

    // 400s: the wrong hook; a context missing a required field; an unparseable evaluation time;
    // a body that is not JSON at all.
    let instance = fresh_hook_instance();
    let (status, _, body) = post(
        &client,
        &url("opioidcds-04-05"),
        &headers,
        identified_greeting(&instance).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    evaluated.push((instance, 400));
    let instance = fresh_hook_instance();
    let mut no_orders = identified_opioid_call(&instance);
    no_orders["context"]
        .as_object_mut()
        .expect("context")
        .remove("draftOrders");
    let (status, _, body) = post(
        &client,
        &url("opioidcds-04-05"),
        &headers,
        no_orders.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    evaluated.push((instance, 400));
    let instance = fresh_hook_instance();
    let mut bad_time = identified_greeting(&instance);
    bad_time["extension"] = json!({"org.cardinalcds.evaluationTime": MRN});
    let (status, _, body) = post(
        &client,
        &url("patient-greeting"),
        &[("traceparent", traceparent.as_str())],
        bad_time.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");
    evaluated.push((instance, 400));
    let broken = identified_greeting(&fresh_hook_instance()).to_string();
    let (status, _, body) = post(
        &client,
        &url("patient-greeting"),
        &headers,
        broken[..broken.len() - 3].to_owned(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body:#}");

    // 412s: required prefetch missing, and the FHIR server unreachable, or not named at all.
    let instance = fresh_hook_instance();
    let mut missing = identified_opioid_call(&instance);
    missing["prefetch"]
        .as_object_mut()
        .expect("prefetch")
        .remove("medicationRequests");
    let (status, _, body) = post(
        &client,
        &url("opioidcds-04-05"),
        &headers,
        missing.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body:#}");
    evaluated.push((instance, 412));
    let instance = fresh_hook_instance();
    let mut unnamed = identified_greeting(&instance);
    for key in ["fhirServer", "fhirAuthorization"] {
        unnamed.as_object_mut().expect("body").remove(key);
    }
    unnamed["prefetch"] = json!({});
    let (status, _, body) = post(
        &client,
        &url("patient-greeting"),
        &headers,
        unnamed.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{body:#}");
    evaluated.push((instance, 412));

    // gRPC, with the token in the metadata too.
    let instance = fresh_hook_instance();
    let mut request = tonic::Request::new(grpc_request(
        "patient-greeting",
        &identified_greeting(&instance),
        "",
    ));
    request
        .metadata_mut()
        .insert("authorization", bearer.parse().expect("metadata"));
    request
        .metadata_mut()
        .insert("traceparent", traceparent.parse().expect("metadata"));
    let response = CdsHooksClient::new(cardinal.grpc_channel().await)
        .call_hook(request)
        .await
        .expect("gRPC CallHook");
    assert_eq!(response.get_ref().cards.len(), 1);
    evaluated.push((instance, 200));

    // Every evaluated call's span has been exported, with its status.
    let spans = receiver
        .wait_for_spans(
            |spans| {
                evaluated
                    .iter()
                    .all(|(instance, _)| call_span(spans, instance).is_some())
            },
            EXPORT_WAIT,
        )
        .await
        .unwrap_or_else(|got| {
            panic!(
                "not every call span was exported ({evaluated:?}):\n{}",
                describe(&got)
            )
        });
    for (instance, status) in &evaluated {
        let call = call_span(&spans, instance).expect("call span");
        let expected = status.to_string();
        assert_eq!(
            call.attr("http.response.status_code"),
            Some(expected.as_str()),
            "{call:#?}"
        );
        assert_eq!(call.status == "error", *status != 200, "{call:#?}");
    }
    // And the metrics with the refusals have been exported.
    let points = receiver
        .wait_for_points(
            |points| {
                ["200", "400", "412"].iter().all(|status| {
                    points.iter().any(|p| {
                        p.metric == "cardinal.hook.duration"
                            && p.attributes.get("status").map(String::as_str) == Some(status)
                    })
                })
            },
            EXPORT_WAIT,
        )
        .await
        .unwrap_or_else(|got| panic!("hook metrics were not exported: {got:#?}"));
    assert!(
        points
            .iter()
            .all(|p| p.resource.get("service.name").map(String::as_str) == Some(SERVICE_NAME)),
        "{points:#?}"
    );

    let metrics = client
        .get(cardinal.admin_url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    let metrics_status = metrics.status();
    let metrics_text = metrics.text().await.expect("metrics body");

    // Stopped gracefully, so the exporters flush whatever is left.
    let logs = cardinal.stop(Duration::from_secs(10));
    assert!(
        logs.stderr.contains("hook call evaluated") && logs.stderr.contains("\"DEBUG\""),
        "debug logging was not on:\n{}",
        logs.stderr
    );
    assert_no_secrets("cardinal's stderr", &logs.stderr);
    assert_no_secrets("cardinal's stdout", &logs.stdout);
    for secret in SECRETS {
        let found = receiver.find(secret);
        assert!(
            found.is_empty(),
            "{secret:?} was exported over OTLP: {found:#?}"
        );
    }
    assert!(
        receiver.spans().iter().any(|s| !s.events.is_empty()),
        "no span events were exported: the log events should reach the spans"
    );

    // `/metrics` (the server's Prometheus endpoint).
    assert_eq!(
        metrics_status,
        StatusCode::OK,
        "GET /metrics: {metrics_text}"
    );
    assert!(
        metrics_text.contains("cardinal_hook_duration_seconds_count"),
        "{metrics_text}"
    );
    assert_no_secrets("/metrics", &metrics_text);
}

// ---------------------------------------------------------------------------------------------
// c. The Prometheus series
// ---------------------------------------------------------------------------------------------

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text exposition format (comments skipped).
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind(' ') {
            Some(i) => (&line[..i], line[i + 1..].trim()),
            None => panic!("not a sample line: {line}"),
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in: {line}")),
        };
        let (name, labels) = match series.find('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some(i) => (series[..i].to_owned(), parse_labels(&series[i + 1..])),
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    samples
}

/// `a="1",b="x \"y\""}` → {a: 1, b: x "y"}.
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none_or(|c| *c == '}') {
            break;
        }
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} in {text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim().to_owned(), value);
    }
    labels
}

/// The sum of the samples named `name` whose labels include `labels` (0 when none).
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_prometheus(text)
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn has_series(text: &str, name: &str, labels: &[(&str, &str)]) -> bool {
    parse_prometheus(text).iter().any(|s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
    })
}

/// How a test reads the metrics.
#[derive(Clone, Copy, Debug)]
enum Scrape {
    /// `Metrics::prometheus_text`, in-process.
    InProcess,
    /// `GET /metrics` on the server's port.
    Http,
}

async fn scrape(server: &TestServer, how: Scrape) -> String {
    match how {
        Scrape::InProcess => server.cardinal.metrics().prometheus_text(),
        Scrape::Http => {
            let response = reqwest::get(server.admin_url("/metrics"))
                .await
                .expect("GET /metrics");
            let status = response.status();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let text = response.text().await.expect("metrics body");
            assert_eq!(status, StatusCode::OK, "GET /metrics: {text}");
            assert!(
                content_type.starts_with("text/plain"),
                "GET /metrics content-type {content_type:?}"
            );
            // Every sample line parses.
            parse_prometheus(&text);
            text
        }
    }
}

async fn call_case(server: &TestServer, path: &str) -> Value {
    let (request, service, at) = case(path);
    let (status, _, body) = post(
        &reqwest::Client::new(),
        &server.url(&format!("/cds-services/{service}")),
        &[(EVALUATION_TIME_HEADER, at.as_str())],
        request.to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{path}: {body:#}");
    body
}

const HOOK_COUNT: &str = "cardinal_hook_duration_seconds_count";
const RULE_DURATION_COUNT: &str = "cardinal_rule_duration_seconds_count";
const RULE_EVALUATIONS: &str = "cardinal_rule_evaluations_total";
const RULE_ERRORS: &str = "cardinal_rule_errors_total";
const CARDS: &str = "cardinal_cards_total";
const IN_FLIGHT: &str = "cardinal_hook_in_flight";

/// Three metformin calls (critical card, warning card, no card) move the hook, rule and card series.
async fn assert_hook_rule_and_card_series(how: Scrape) {
    let server = TestServer::start().await;
    let metformin = [("service", "metformin-renal")];
    let rule = [("service", "metformin-renal"), ("rule", "metformin-egfr")];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = rule.to_vec();
        labels.push(extra);
        labels
    };
    let before = scrape(&server, how).await;
    let ok = [metformin[0], ("status", "200")];
    let calls_before = value(&before, HOOK_COUNT, &ok);

    let critical = call_case(
        &server,
        "rules/metformin-renal/tests/egfr-24-contraindicated.json",
    )
    .await;
    assert_eq!(
        critical["cards"][0]["indicator"], "critical",
        "{critical:#}"
    );
    let warning = call_case(
        &server,
        "rules/metformin-renal/tests/egfr-38-do-not-start.json",
    )
    .await;
    assert_eq!(warning["cards"][0]["indicator"], "warning", "{warning:#}");
    let none = call_case(&server, "rules/metformin-renal/tests/egfr-62-no-card.json").await;
    assert_eq!(none["cards"].as_array().map(Vec::len), Some(0), "{none:#}");

    let after = scrape(&server, how).await;
    let context = format!("{how:?} scrape:\n{after}");
    assert_eq!(
        value(&after, HOOK_COUNT, &ok) - calls_before,
        3.0,
        "{context}"
    );
    assert!(
        value(&after, "cardinal_hook_duration_seconds_sum", &ok) > 0.0,
        "{context}"
    );
    assert!(
        has_series(
            &after,
            "cardinal_hook_duration_seconds_bucket",
            &[ok[0], ok[1], ("le", "+Inf")]
        ),
        "{context}"
    );
    assert_eq!(
        value(&after, RULE_EVALUATIONS, &with(("outcome", "fired"))),
        2.0,
        "{context}"
    );
    assert_eq!(
        value(&after, RULE_EVALUATIONS, &with(("outcome", "not-fired"))),
        1.0,
        "{context}"
    );
    assert_eq!(value(&after, RULE_DURATION_COUNT, &rule), 3.0, "{context}");
    assert_eq!(
        value(&after, CARDS, &with(("indicator", "critical"))),
        1.0,
        "{context}"
    );
    assert_eq!(
        value(&after, CARDS, &with(("indicator", "warning"))),
        1.0,
        "{context}"
    );
    assert_eq!(value(&after, RULE_ERRORS, &metformin), 0.0, "{context}");
    assert_eq!(value(&after, IN_FLIGHT, &[]), 0.0, "{context}");
    assert!(has_series(&after, IN_FLIGHT, &[]), "{context}");
}

/// A rule that loops forever, stopped by its operation limit, is counted as an error of kind
/// `operations`.
async fn assert_stopped_rule_series(how: Scrape) {
    let server = TestServer::start_with(Config {
        rules_dir: project_path("tests/fixtures/rules-sandbox"),
        sandbox: SandboxLimits {
            max_operations: 10_000,
            ..SandboxLimits::default()
        },
        ..Config::default().development()
    })
    .await;
    let (status, _, body) = post(
        &reqwest::Client::new(),
        &server.url("/cds-services/sandbox"),
        &[],
        request_fixture("sandbox-patient-view").to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    let looped = body["extension"]["org.cardinalcds.diagnostics"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["ruleId"] == "b-infinite-loop")
        .unwrap_or_else(|| panic!("no diagnostic for the loop: {body:#}"));
    assert_eq!(looped["kind"], "operations", "{looped:#}");

    let text = scrape(&server, how).await;
    let context = format!("{how:?} scrape:\n{text}");
    let looping = [("service", "sandbox"), ("rule", "b-infinite-loop")];
    assert_eq!(
        value(
            &text,
            RULE_ERRORS,
            &[looping[0], looping[1], ("kind", "operations")]
        ),
        1.0,
        "{context}"
    );
    assert_eq!(
        value(&text, RULE_ERRORS, &[("kind", "operations")]),
        1.0,
        "{context}"
    );
    assert_eq!(
        value(
            &text,
            RULE_EVALUATIONS,
            &[looping[0], looping[1], ("outcome", "error")]
        ),
        1.0,
        "{context}"
    );
    assert_eq!(
        value(
            &text,
            HOOK_COUNT,
            &[("service", "sandbox"), ("status", "200")]
        ),
        1.0,
        "{context}"
    );
}

/// Runs `f` and panics if it takes longer than `limit` (the series tests must stay fast).
async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("took longer than {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_registry_counts_hooks_rules_cards_and_stopped_rules() {
    within(Duration::from_secs(30), async {
        assert_hook_rule_and_card_series(Scrape::InProcess).await;
        assert_stopped_rule_series(Scrape::InProcess).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_the_prometheus_series() {
    within(Duration::from_secs(30), async {
        assert_hook_rule_and_card_series(Scrape::Http).await;
        assert_stopped_rule_series(Scrape::Http).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_counts_unknown_services_under_one_label() {
    let server = TestServer::start().await;
    let before = scrape(&server, Scrape::Http).await;
    let unknown = [("service", "unknown"), ("status", "404")];
    let count_before = value(&before, HOOK_COUNT, &unknown);
    for id in ["no-such-service", "pat-SECRET-4242"] {
        let (status, _, body) = post(
            &reqwest::Client::new(),
            &server.url(&format!("/cds-services/{id}")),
            &[],
            request_fixture("patient-view-greeting").to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body:#}");
    }
    let after = scrape(&server, Scrape::Http).await;
    assert_eq!(
        value(&after, HOOK_COUNT, &unknown) - count_before,
        2.0,
        "{after}"
    );
    // Caller-chosen ids never become label values.
    assert!(!after.contains("no-such-service"), "{after}");
    assert!(!after.contains("pat-SECRET-4242"), "{after}");
}

// ---------------------------------------------------------------------------------------------
// d. A collector that is down
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_does_not_stop_cardinal() {
    // Nothing listens on port 1.
    let mut env = otel_env("http://127.0.0.1:1");
    env.retain(|(key, _)| *key != "OTEL_EXPORTER_OTLP_TIMEOUT");
    env.push(("OTEL_EXPORTER_OTLP_TIMEOUT", "300".to_owned()));
    let cardinal = spawn("rules", &env);
    let client = reqwest::Client::new();
    let started = Instant::now();
    for _ in 0..3 {
        let caller = Caller::new();
        let mut greeting = request_fixture("patient-view-greeting");
        greeting["hookInstance"] = json!(fresh_hook_instance());
        let (status, _, body) = post(
            &client,
            &cardinal.url("/cds-services/patient-greeting"),
            &[("traceparent", &caller.traceparent())],
            greeting.to_string(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body:#}");
        assert_eq!(body["cards"].as_array().map(Vec::len), Some(1), "{body:#}");
    }
    let (metformin, service, at) = case("rules/metformin-renal/tests/egfr-24-contraindicated.json");
    let response = CdsHooksClient::new(cardinal.grpc_channel().await)
        .call_hook(grpc_request(&service, &metformin, &at))
        .await
        .expect("gRPC CallHook");
    assert_eq!(response.get_ref().cards.len(), 1);
    // Past a few export attempts (batch delay 100 ms, metric interval 500 ms), still serving.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let health = client
        .get(cardinal.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "hook calls were slowed by the unreachable collector: {:?}",
        started.elapsed()
    );
    // And it still shuts down promptly on SIGTERM, giving up on the pending exports.
    let logs = cardinal.stop(Duration::from_secs(10));
    assert!(
        logs.exited_cleanly,
        "cardinal did not exit cleanly within 10 s of SIGTERM:\n{}",
        logs.stderr
    );
}
