//! The operators' listener (`admin_listen`, default `127.0.0.1:9464`): metrics, liveness, readiness
//! and admin calls. Never on the EHR-facing port, and never exposed to EHRs (in Kubernetes a
//! NetworkPolicy limits it to the kubelet's probes and the metrics scraper). Plain HTTP, no
//! authentication: who can reach it is decided by where it listens.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::audit::OnFailure;
use crate::cds_hooks::IssueType;
use crate::evaluator::Cardinal;

use super::edge::Edge;
use super::http_error::HttpError;

#[derive(Clone)]
struct AdminState {
    cardinal: Cardinal,
    edge: Edge,
}

/// Every admin route, in one place.
pub fn router(cardinal: Cardinal, edge: Edge) -> Router {
    Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed))
        .fallback(not_found)
        .with_state(AdminState { cardinal, edge })
}

/// Prometheus text exposition of Cardinal's metrics.
async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.cardinal.metrics().prometheus_text(),
    )
        .into_response()
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready unless shutting down, overloaded (full, or refused a call in the last second), or unable to
/// write the audit trail while its policy is to refuse calls: a load balancer then sends calls to
/// other replicas. A failing audit trail under `on_failure = "continue"` is reported, still ready.
async fn readyz(State(state): State<AdminState>) -> Response {
    let registry = state.cardinal.registry();
    let admission = state.cardinal.admission();
    let audit = state.edge.audit();
    let audit_failing = audit.failing();
    let status = if admission.draining() {
        "draining"
    } else if admission.overloaded() {
        "overloaded"
    } else if audit_failing.is_some() && audit.policy() == OnFailure::Refuse {
        "audit-failing"
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
        "audit": match &audit_failing {
            None => json!({"status": "writing"}),
            Some(why) => json!({"status": "failing", "reason": why}),
        },
    }));
    (code, body).into_response()
}

async fn method_not_allowed(method: Method) -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        IssueType::NotSupported,
        format!(
            "method {} is not allowed on this path",
            crate::cds_hooks::excerpt(method.as_str())
        ),
    )
}

async fn not_found() -> HttpError {
    HttpError::not_found("no such admin endpoint (/metrics, /healthz, /readyz)")
}
