//! The CDS Hooks HTTP/JSON API: discovery, service calls, feedback, health, and (when configured)
//! the explain report for rule authors.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;

use crate::cds_hooks::{FeedbackRequest, HookRequest, IssueType};
use crate::evaluator::{CallOptions, Cardinal, Evaluation, parse_evaluation_time};
use crate::explain::ExplainReport;

use super::EVALUATION_TIME_HEADER;
use super::http_error::HttpError;
use super::observe::TraceId;

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
        .with_state(cardinal)
}

async fn discover(State(cardinal): State<Cardinal>) -> Response {
    Json(cardinal.discovery()).into_response()
}

fn body_or_error(body: Result<Bytes, BytesRejection>) -> Result<Bytes, HttpError> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            HttpError::new(
                status,
                IssueType::TooLong,
                "request body exceeds the configured size limit",
            )
        } else {
            HttpError::new(status, IssueType::Invalid, "request body could not be read")
        }
    })
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

async fn call(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    trace: Option<Extension<TraceId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    let evaluation = evaluate(&cardinal, &id, &headers, trace, body).await?;
    Ok(Json(evaluation.response).into_response())
}

/// Same body, validation and refusals as a hook call; answers with every rule's verdict, facts and
/// conditions. Off unless `explain_endpoint = true`: the report can quote patient data.
async fn explain(
    State(cardinal): State<Cardinal>,
    Path(id): Path<String>,
    trace: Option<Extension<TraceId>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    if !cardinal.config().explain_endpoint {
        return Err(HttpError::not_found(
            "the explain endpoint is disabled on this server (configuration `explain_endpoint`)",
        ));
    }
    let evaluation = evaluate(&cardinal, &id, &headers, trace, body).await?;
    Ok(Json(ExplainReport::new(&cardinal, &evaluation)).into_response())
}

async fn evaluate(
    cardinal: &Cardinal,
    id: &str,
    headers: &HeaderMap,
    trace: Option<Extension<TraceId>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Evaluation, HttpError> {
    // Unknown service first: 404 wins over a body problem.
    cardinal.call_target(id)?;
    let body = body_or_error(body)?;
    let request = parse_request(body).await?;
    let options = CallOptions {
        evaluation_time: evaluation_time(headers)?,
        trace_id: trace.map(|Extension(TraceId(id))| id),
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HttpError> {
    cardinal.service(&id)?;
    let body = body_or_error(body)?;
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

async fn readyz(State(cardinal): State<Cardinal>) -> Response {
    let registry = cardinal.registry();
    Json(json!({
        "status": "ready",
        "services": registry.len(),
        "rules": registry.rule_count(),
    }))
    .into_response()
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
