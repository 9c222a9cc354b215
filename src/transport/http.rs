//! The CDS Hooks HTTP/JSON API: discovery, service calls, feedback, and (when configured) the explain
//! report for rule authors. Health and metrics are on the admin listener ([`super::admin`]). Every
//! hook, explain and feedback call leaves one audit record.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};

use crate::admission::Ticket;
use crate::audit::{AuditRecord, AuditUnavailable, CallKind};
use crate::auth::Caller;
use crate::cds_hooks::{FeedbackRequest, HookRequest, IssueType};
use crate::evaluator::{CallOptions, Cardinal, Evaluation, parse_evaluation_time};
use crate::explain::ExplainReport;
use crate::fhir::PrefetchReads;

use super::authn::Authenticated;
use super::edge::Edge;
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
    authenticated: Option<Extension<Authenticated>>,
    headers: HeaderMap,
}

impl CallParts {
    fn trace_id(&self) -> Option<String> {
        self.trace.as_ref().map(|Extension(TraceId(id))| id.clone())
    }

    /// The verified caller (`aud` was checked against this path by the middleware).
    fn caller(&self) -> Option<Caller> {
        match &self.authenticated {
            Some(Extension(Authenticated::Caller(caller))) => Some(caller.clone()),
            _ => None,
        }
    }
}

/// The answer when the audit trail cannot take a record and the policy is to refuse.
fn audit_unavailable(_: AuditUnavailable) -> HttpError {
    HttpError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        IssueType::Transient,
        "the service cannot record this call in its audit trail; try again later",
    )
}

/// Evaluates a hook or explain call with its audit record: refused at once while the audit trail
/// cannot be written (refuse policy); the record is queued before the answer leaves.
async fn audited_call(
    cardinal: &Cardinal,
    edge: &Edge,
    kind: CallKind,
    id: &str,
    parts: CallParts,
    body: Body,
) -> Result<Evaluation, HttpError> {
    let mut record = AuditRecord::new(kind, "http", parts.caller().as_ref(), id, parts.trace_id());
    edge.audit().admit().map_err(audit_unavailable)?;
    let result = evaluate(cardinal, id, parts, body, &mut record).await;
    match &result {
        Ok(evaluation) => {
            record.answered(&evaluation.response);
            if kind == CallKind::Hook {
                super::record_cards(edge, evaluation, &record);
            }
        }
        Err(e) => record.refused(e.status.as_u16()),
    }
    edge.audit().record(record).map_err(audit_unavailable)?;
    result
}

#[allow(clippy::too_many_arguments)] // axum extractors
async fn call(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    Extension(edge): Extension<Edge>,
    trace: Option<Extension<TraceId>>,
    admission: Option<Extension<Arc<Ticket>>>,
    authenticated: Option<Extension<Authenticated>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    #[cfg(feature = "fault-injection")]
    inject_fault(&headers);
    let parts = CallParts {
        trace,
        admission,
        authenticated,
        headers,
    };
    let evaluation = audited_call(&cardinal, &edge, CallKind::Hook, &id, parts, body).await?;
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
/// conditions. Off unless `explain_endpoint = true`: the report can quote patient data. With
/// authentication on, only callers of an issuer in `auth.explain_issuers` may use it.
#[allow(clippy::too_many_arguments)] // axum extractors
async fn explain(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    Extension(edge): Extension<Edge>,
    trace: Option<Extension<TraceId>>,
    admission: Option<Extension<Arc<Ticket>>>,
    authenticated: Option<Extension<Authenticated>>,
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
        authenticated,
        headers,
    };
    if let Some(auth) = edge.authenticator()
        && !parts
            .caller()
            .is_some_and(|caller| auth.may_explain(&caller))
    {
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            IssueType::Forbidden,
            "this caller may not use the explain endpoint",
        ));
    }
    let evaluation = audited_call(&cardinal, &edge, CallKind::Explain, &id, parts, body).await?;
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
    record: &mut AuditRecord,
) -> Result<Evaluation, HttpError> {
    // Unknown service first: 404 wins over a body problem. The rule set is taken here, on arrival.
    let rule_set = cardinal.call_target(id)?;
    require_json(&parts.headers)?;
    let body = read_body(cardinal, &parts.headers, body).await?;
    // Only the prefetch keys the service declares are read into resources.
    let reads = rule_set
        .service(id)
        .map(|service| service.prefetch.reads())
        .unwrap_or_default();
    let request = parse_request(body, reads).await?;
    record.request(&request);
    let options = CallOptions {
        evaluation_time: evaluation_time(&parts.headers)?,
        trace_id: parts.trace_id(),
        caller: parts.caller(),
        admission: parts.admission.map(|Extension(ticket)| ticket),
        rule_set: Some(rule_set),
    };
    Ok(cardinal.call(id, request, options).await?)
}

/// Bodies above this size are parsed on the blocking pool, so a large patient does not stall the
/// async workers that serve every other connection.
const INLINE_PARSE_LIMIT: usize = 32 * 1024;

async fn parse_request(body: Bytes, reads: PrefetchReads) -> Result<HookRequest, HttpError> {
    if body.len() <= INLINE_PARSE_LIMIT {
        return Ok(HookRequest::from_json_bytes_for(&body, &reads)?);
    }
    tokio::task::spawn_blocking(move || HookRequest::from_json_bytes_for(&body, &reads))
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
    Extension(edge): Extension<Edge>,
    trace: Option<Extension<TraceId>>,
    authenticated: Option<Extension<Authenticated>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let parts = CallParts {
        trace,
        admission: None,
        authenticated,
        headers,
    };
    let mut record = AuditRecord::new(
        CallKind::Feedback,
        "http",
        parts.caller().as_ref(),
        &id,
        parts.trace_id(),
    );
    edge.audit().admit().map_err(audit_unavailable)?;
    let result = accept_feedback(&cardinal, &edge, &id, &parts.headers, body, &mut record).await;
    record.refused(match &result {
        Ok(()) => 200,
        Err(e) => e.status.as_u16(),
    });
    edge.audit().record(record).map_err(audit_unavailable)?;
    result?;
    Ok(StatusCode::OK.into_response())
}

/// Validates the feedback and, with the store on, stores it (404 for a card this service never
/// returned); answered once the store has committed it.
async fn accept_feedback(
    cardinal: &Cardinal,
    edge: &Edge,
    id: &str,
    headers: &HeaderMap,
    body: Body,
    record: &mut AuditRecord,
) -> Result<(), HttpError> {
    cardinal.service(id)?;
    require_json(headers)?;
    let body = read_body(cardinal, headers, body).await?;
    let feedback = FeedbackRequest::from_json_bytes(&body)?;
    record.feedback(&feedback);
    cardinal.feedback(id, &feedback)?;
    if let Some(store) = edge.store() {
        store.feedback(id, &feedback).await?;
    }
    Ok(())
}

pub(super) async fn method_not_allowed(method: Method) -> HttpError {
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
