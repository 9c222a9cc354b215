//! The playground's routes on the admin listener (`serve --dev` only; see [`crate::playground`]).
//! The page is plain HTML with no data in it; the calls that read rules, evaluate and write files
//! are operators' calls, behind the admin guard: open on a loopback listener, and needing the admin
//! token (the page takes it from `#token=...` in its address) on any other.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::cds_hooks::IssueType;
use crate::evaluator::Cardinal;
use crate::playground::{self, EvaluateRequest, NewCaseRequest, PlaygroundError, SaveRequest};
use crate::reload;
use crate::rule_set::Trigger;

use super::http::method_not_allowed;
use super::http_error::HttpError;

/// Room for the largest patient record (or rule and case), JSON-escaped.
const MAX_BODY_BYTES: usize = 2 * playground::MAX_PATIENT_BYTES;

/// `GET /playground`: the page (open: it holds no data).
pub fn page<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/playground", get(page_html).fallback(method_not_allowed))
}

/// The calls the page makes (to be put behind the admin guard).
pub fn calls<S: Clone + Send + Sync + 'static>(cardinal: Cardinal) -> Router<S> {
    Router::new()
        .route(
            "/playground/services",
            get(services).fallback(method_not_allowed),
        )
        .route(
            "/playground/evaluate",
            post(evaluate).fallback(method_not_allowed),
        )
        .route("/playground/save", post(save).fallback(method_not_allowed))
        .route(
            "/playground/new-case",
            post(new_case).fallback(method_not_allowed),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(cardinal)
}

async fn page_html() -> Response {
    (
        // The page loads nothing from elsewhere, and card HTML (already sanitized) cannot run script.
        [(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'",
        )],
        Html(playground::PAGE),
    )
        .into_response()
}

async fn services(State(cardinal): State<Cardinal>) -> Result<Response, HttpError> {
    let listed = tokio::task::spawn_blocking(move || playground::services(&cardinal))
        .await
        .map_err(|_| internal())?;
    Ok(Json(json!({ "services": listed })).into_response())
}

fn body<T: DeserializeOwned>(body: Result<Json<T>, JsonRejection>) -> Result<T, HttpError> {
    body.map(|Json(value)| value).map_err(|rejection| {
        HttpError::new(
            rejection.status(),
            IssueType::Invalid,
            rejection.body_text(),
        )
    })
}

fn refused(error: PlaygroundError) -> HttpError {
    let status = if error.is_input() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    let issue = if error.is_input() {
        IssueType::Invalid
    } else {
        IssueType::Exception
    };
    HttpError::new(status, issue, error.to_string())
}

fn internal() -> HttpError {
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        IssueType::Exception,
        "the playground call failed unexpectedly",
    )
}

async fn evaluate(
    State(cardinal): State<Cardinal>,
    request: Result<Json<EvaluateRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let request = body(request)?;
    let result = tokio::task::spawn_blocking(move || playground::evaluate(&cardinal, &request))
        .await
        .map_err(|_| internal())?;
    Ok(Json(result.map_err(refused)?).into_response())
}

/// Writes the files, then reloads as any change to the rules directory would: the answer carries the
/// reload's report (swapped, or rejected with every failing case while the previous set serves).
async fn save(
    State(cardinal): State<Cardinal>,
    request: Result<Json<SaveRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let request = body(request)?;
    let writer = cardinal.clone();
    let saved = tokio::task::spawn_blocking(move || playground::save(&writer, &request))
        .await
        .map_err(|_| internal())?
        .map_err(refused)?;
    let report = reload::reload_async(&cardinal, Trigger::Playground).await;
    Ok(Json(json!({ "written": saved.written, "reload": report })).into_response())
}

/// A compact case from a sample patient, for the author to edit and save.
async fn new_case(
    State(cardinal): State<Cardinal>,
    request: Result<Json<NewCaseRequest>, JsonRejection>,
) -> Result<Response, HttpError> {
    let request = body(request)?;
    let result = tokio::task::spawn_blocking(move || playground::new_case(&cardinal, &request))
        .await
        .map_err(|_| internal())?;
    Ok(Json(result.map_err(refused)?).into_response())
}
