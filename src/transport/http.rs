//! The CDS Hooks HTTP/JSON API: discovery, service calls, feedback, health, and (when configured)
//! the explain report for rule authors.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::admission::Ticket;
use crate::cds_hooks::{FeedbackRequest, HookRequest, IssueType};
use crate::evaluator::{CallOptions, Cardinal, Evaluation, parse_evaluation_time};
use crate::explain::ExplainReport;

use crate::reload;
use crate::rule_set::{ReloadResult, Trigger};

use super::http_error::HttpError;
use super::observe::TraceId;
use super::{EVALUATION_TIME_HEADER, RULE_SET_HEADER};

/// The HTTP routes (no fallback: the server adds one after merging gRPC).
pub fn routes(cardinal: Cardinal) -> Router {
    Router::new()
        .route("/cds-services", get(discover).fallback(method_not_allowed))
        .route(
            "/cds-services/{id}",
            post(call).fallback(method_not_allowed),
        )
        .route(
            "/cds-services/{id}/explain",
            post(explain).fallback(method_not_allowed),
        )
        .route(
            "/cds-services/{id}/feedback",
            post(feedback).fallback(method_not_allowed),
        )
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .route(
            "/admin/reload",
            post(admin_reload).fallback(method_not_allowed),
        )
        .route(
            "/admin/rule-set",
            get(admin_rule_set).fallback(method_not_allowed),
        )
        .with_state(cardinal)
}

async fn discover(State(cardinal): State<Cardinal>) -> Response {
    Json(cardinal.discovery()).into_response()
}

/// The answer to a request whose handler panicked: fixed words, because a panic message can quote
/// the request (patient data). The panic hook logs where it happened.
pub(super) fn panic_response() -> Response {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        IssueType::Exception,
        "internal error: the request could not be processed",
    )
    .into_response()
}

/// CDS Hooks bodies are JSON; anything else is refused before it is read.
fn require_json(headers: &HeaderMap) -> Result<(), HttpError> {
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json" | "application/fhir+json") => Ok(()),
        _ => Err(HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IssueType::NotSupported,
            "the request body must be JSON (`Content-Type: application/json`)",
        )),
    }
}

/// Reads a body of at most `limit` bytes that must arrive within `within`.
async fn read_body(
    cardinal: &Cardinal,
    headers: &HeaderMap,
    body: Body,
) -> Result<Bytes, HttpError> {
    let config = cardinal.config();
    let limit = config.max_body_bytes;
    let too_large = || {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            IssueType::TooLong,
            format!("request body exceeds the size limit ({limit} bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let within = Duration::from_millis(config.server.body_read_timeout_ms);
    match tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) if is_length_limit(&e) => Err(too_large()),
        Ok(Err(_)) => Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            "request body could not be read",
        )),
        Err(_) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            IssueType::Timeout,
            format!(
                "request body did not arrive within {} ms",
                config.server.body_read_timeout_ms
            ),
        )),
    }
}

fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

fn evaluation_time(
    headers: &HeaderMap,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, HttpError> {
    let Some(value) = headers.get(EVALUATION_TIME_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(parse_evaluation_time)
        .map(Some)
        .ok_or_else(|| {
            HttpError::new(
                StatusCode::BAD_REQUEST,
                IssueType::Invalid,
                format!(
                    "header `{EVALUATION_TIME_HEADER}` must be an RFC 3339 date-time or a date"
                ),
            )
        })
}

/// What a hook call handler receives besides the body.
struct CallParts {
    trace: Option<Extension<TraceId>>,
    admission: Option<Extension<Arc<Ticket>>>,
    headers: HeaderMap,
}

async fn call(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    trace: Option<Extension<TraceId>>,
    admission: Option<Extension<Arc<Ticket>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    #[cfg(feature = "fault-injection")]
    inject_fault(&headers);
    let parts = CallParts {
        trace,
        admission,
        headers,
    };
    let evaluation = evaluate(&cardinal, &id, parts, body).await?;
    let version = rule_set_header(&evaluation);
    Ok(([version], Json(evaluation.response)).into_response())
}

/// `X-Cardinal-Rule-Set`: the version of the rule set that produced the answer.
fn rule_set_header(evaluation: &Evaluation) -> (header::HeaderName, header::HeaderValue) {
    (
        header::HeaderName::from_static(RULE_SET_HEADER),
        // Versions are hex digits; an unrepresentable one would be a defect, answered empty.
        header::HeaderValue::from_str(evaluation.rule_set.version())
            .unwrap_or_else(|_| header::HeaderValue::from_static("")),
    )
}

/// Same body, validation and refusals as a hook call; answers with every rule's verdict, facts and
/// conditions. Off unless `explain_endpoint = true`: the report can quote patient data.
async fn explain(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    trace: Option<Extension<TraceId>>,
    admission: Option<Extension<Arc<Ticket>>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    if !cardinal.config().explain_endpoint {
        return Err(HttpError::not_found(
            "the explain endpoint is disabled on this server (configuration `explain_endpoint`)",
        ));
    }
    let parts = CallParts {
        trace,
        admission,
        headers,
    };
    let evaluation = evaluate(&cardinal, &id, parts, body).await?;
    let version = rule_set_header(&evaluation);
    Ok(([version], Json(ExplainReport::new(&evaluation))).into_response())
}

/// Test builds only: a header that makes the handler panic with patient-like words, to show that a
/// panic answers a fixed 500 and its message reaches neither the caller nor the log.
#[cfg(feature = "fault-injection")]
fn inject_fault(headers: &HeaderMap) {
    if headers.contains_key("x-cardinal-inject-panic") {
        #[allow(clippy::panic)]
        {
            panic!("injected fault while reading patient Jane Roe, MRN 4711-0815");
        }
    }
}

async fn evaluate(
    cardinal: &Cardinal,
    id: &str,
    parts: CallParts,
    body: Body,
) -> Result<Evaluation, HttpError> {
    // Unknown service first: 404 wins over a body problem. The rule set is taken here, on arrival.
    let rule_set = cardinal.call_target(id)?;
    require_json(&parts.headers)?;
    let body = read_body(cardinal, &parts.headers, body).await?;
    let request = parse_request(body).await?;
    let options = CallOptions {
        evaluation_time: evaluation_time(&parts.headers)?,
        trace_id: parts.trace.map(|Extension(TraceId(id))| id),
        admission: parts.admission.map(|Extension(ticket)| ticket),
        rule_set: Some(rule_set),
    };
    Ok(cardinal.call(id, request, options).await?)
}

/// Bodies above this size are parsed on the blocking pool, so a large patient does not stall the
/// async workers that serve every other connection.
const INLINE_PARSE_LIMIT: usize = 32 * 1024;

async fn parse_request(body: Bytes) -> Result<HookRequest, HttpError> {
    if body.len() <= INLINE_PARSE_LIMIT {
        return Ok(HookRequest::from_json_bytes(&body)?);
    }
    tokio::task::spawn_blocking(move || HookRequest::from_json_bytes(&body))
        .await
        .map_err(|_| {
            HttpError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueType::Exception,
                "request parsing failed",
            )
        })?
        .map_err(HttpError::from)
}

async fn feedback(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    cardinal.service(&id)?;
    require_json(&headers)?;
    let body = read_body(&cardinal, &headers, body).await?;
    let feedback = FeedbackRequest::from_json_bytes(&body)?;
    cardinal.feedback(&id, &feedback)?;
    Ok(StatusCode::OK.into_response())
}

/// Prometheus text exposition of Cardinal's metrics.
async fn metrics(State(cardinal): State<Cardinal>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        cardinal.metrics().prometheus_text(),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready unless shutting down or overloaded (full, or refused a call in the last second): a load
/// balancer then sends calls to other replicas.
async fn readyz(State(cardinal): State<Cardinal>) -> Response {
    let rule_set = cardinal.rule_set();
    let registry = rule_set.registry();
    let admission = cardinal.admission();
    let status = if admission.draining() {
        "draining"
    } else if admission.overloaded() {
        "overloaded"
    } else {
        "ready"
    };
    let code = if status == "ready" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = Json(json!({
        "status": status,
        "services": registry.len(),
        "rules": registry.rule_count(),
        "calls_admitted": admission.admitted(),
        "rule_set": rule_set_status(&cardinal),
    }));
    (code, body).into_response()
}

/// The serving rule set and the last reload (a rejected one with every error): the replica stays
/// ready on its previous set, and this is where an operator sees why the new one was refused.
fn rule_set_status(cardinal: &Cardinal) -> serde_json::Value {
    let rule_set = cardinal.rule_set();
    json!({
        "version": rule_set.version(),
        "loaded_at": rule_set.loaded_at().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "services": rule_set.registry().len(),
        "rules": rule_set.registry().rule_count(),
        "last_reload": cardinal.rule_sets().last_reload(),
    })
}

/// `GET /admin/rule-set`: the serving version and the last reload.
async fn admin_rule_set(State(cardinal): State<Cardinal>) -> Response {
    Json(rule_set_status(&cardinal)).into_response()
}

/// `POST /admin/reload`: reloads now and answers with the report; 422 when the new set was
/// rejected (the previous one keeps serving).
async fn admin_reload(State(cardinal): State<Cardinal>) -> Response {
    let report = reload::reload_async(&cardinal, Trigger::Admin).await;
    let code = match report.result {
        ReloadResult::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (code, Json(report)).into_response()
}

async fn method_not_allowed(method: Method) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueType::NotSupported,
        // Extension methods are the caller's text: quote a bounded prefix only.
        format!(
            "method {} is not allowed on this path",
            crate::cds_hooks::excerpt(method.as_str())
        ),
    )
}

/// Any path that is neither a CDS Hooks route nor a gRPC method.
pub(super) async fn not_found() -> HttpError {
    HttpError::not_found("no such endpoint; CDS services are listed at /cds-services")
}
