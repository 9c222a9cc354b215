//! The operators' listener (`admin_listen`, default `127.0.0.1:9464`): metrics, liveness, readiness
//! admin calls (rule-set reload over HTTP and gRPC `cardinal.v1.RuleSetAdmin`) and the store's
//! analytics (`/analytics` page, `/analytics/rules` JSON, gRPC `cardinal.v1.Analytics`), and with
//! `serve --dev` the rule-authoring playground (`/playground`). Never on the EHR-facing port, and
//! never exposed to EHRs (in Kubernetes a
//! NetworkPolicy limits it to the kubelet's probes and the metrics scraper). Plain HTTP; the
//! operators' calls are guarded by [`super::admin_guard`], probes and metrics are not.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::audit::OnFailure;
use crate::cds_hooks::IssueType;
use crate::evaluator::Cardinal;
use crate::reload;
use crate::rule_set::{ReloadResult, Trigger};
use crate::store::{Analytics, Window, page};

use super::admin_guard::{AdminGuard, require_admin};
use super::edge::Edge;
use super::http::method_not_allowed;
use super::http_error::HttpError;

#[derive(Clone)]
struct AdminState {
    cardinal: Cardinal,
    edge: Edge,
}

/// Every admin route, in one place: probes and metrics open, operators' calls behind `guard`.
pub fn router(cardinal: Cardinal, edge: Edge, guard: AdminGuard) -> Router {
    // The playground writes rule files: only with `serve --dev`, and its calls are operators' calls.
    let playground = cardinal.config().playground;
    let mut operators = Router::new()
        .route(
            "/admin/reload",
            post(admin_reload).fallback(method_not_allowed),
        )
        .route(
            "/admin/rule-set",
            get(admin_rule_set).fallback(method_not_allowed),
        )
        .route(
            "/analytics/rules",
            get(analytics_rules).fallback(method_not_allowed),
        )
        .route(
            "/analytics",
            get(analytics_page).fallback(method_not_allowed),
        )
        .route_service(
            "/cardinal.v1.RuleSetAdmin/{*method}",
            super::grpc::admin_service(cardinal.clone()),
        )
        .route_service(
            "/cardinal.v1.Analytics/{*method}",
            super::grpc::analytics_service(edge.store().cloned()),
        );
    if playground {
        operators = operators.merge(super::playground::calls(cardinal.clone()));
    }
    let operators =
        operators.route_layer(axum::middleware::from_fn_with_state(guard, require_admin));
    let mut open = Router::new()
        .route("/healthz", get(healthz).fallback(method_not_allowed))
        .route("/metrics", get(metrics).fallback(method_not_allowed))
        .route("/readyz", get(readyz).fallback(method_not_allowed));
    if playground {
        open = open.merge(super::playground::page());
    }
    open.merge(operators)
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
    let rule_set = state.cardinal.rule_set();
    let registry = rule_set.registry();
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
        // Reported, never a reason to stop serving cards: a replica that cannot record them still
        // gives clinicians their decision support.
        "store": match state.edge.store() {
            None => json!({"status": "disabled"}),
            Some(store) => match store.failing() {
                None => json!({"status": "writing", "database": store.kind()}),
                Some(why) => json!({"status": "failing", "database": store.kind(), "reason": why}),
            },
        },
        "rule_set": rule_set_status(&state.cardinal),
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
async fn admin_rule_set(State(state): State<AdminState>) -> Response {
    Json(rule_set_status(&state.cardinal)).into_response()
}

/// `POST /admin/reload`: reloads now and answers with the report; 422 when the new set was
/// rejected (the previous one keeps serving).
async fn admin_reload(State(state): State<AdminState>) -> Response {
    let report = reload::reload_async(&state.cardinal, Trigger::Admin).await;
    let code = match report.result {
        ReloadResult::Rejected { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    (code, Json(report)).into_response()
}

/// `?since=` (RFC 3339, `YYYY-MM-DD` or `Nd`; default the last 30 days).
#[derive(Debug, serde::Deserialize)]
struct AnalyticsQuery {
    since: Option<String>,
}

async fn analytics(state: &AdminState, query: &AnalyticsQuery) -> Result<Analytics, HttpError> {
    let Some(store) = state.edge.store() else {
        return Err(HttpError::not_found(
            "the store is disabled on this server (configuration `store.enabled`)",
        ));
    };
    let window = Window::parse_since_or_default(query.since.as_deref()).ok_or_else(|| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            IssueType::Invalid,
            Window::SINCE_FORMS,
        )
    })?;
    store.analytics(window).await.map_err(|e| {
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            IssueType::Transient,
            e.to_string(),
        )
    })
}

/// `GET /analytics/rules?since=…`: the figures per rule and version, as JSON.
async fn analytics_rules(
    State(state): State<AdminState>,
    Query(query): Query<AnalyticsQuery>,
) -> Result<Response, HttpError> {
    Ok(Json(analytics(&state, &query).await?).into_response())
}

/// `GET /analytics?since=…`: the same as a page with inline SVG charts.
async fn analytics_page(
    State(state): State<AdminState>,
    Query(query): Query<AnalyticsQuery>,
) -> Result<Response, HttpError> {
    let analytics = analytics(&state, &query).await?;
    Ok(Html(page::render(&analytics)).into_response())
}

async fn not_found() -> HttpError {
    HttpError::not_found(
        "no such admin endpoint (/metrics, /healthz, /readyz, /admin/reload, /admin/rule-set, /analytics, /analytics/rules; /playground with `serve --dev`)",
    )
}
