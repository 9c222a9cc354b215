//! Admission on arrival, for both protocols: a hook call (HTTP `POST /cds-services/{id}` and its
//! explain route, gRPC `CallHook` and `Explain`) is admitted before its body is read, or refused at
//! once with HTTP 503 + `Retry-After` / gRPC `UNAVAILABLE`. Other routes (discovery, feedback,
//! health, metrics) are cheap and always answered.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::evaluator::Cardinal;

use super::grpc;
use super::http_error::HttpError;

/// gRPC methods that evaluate rules.
const GRPC_HOOK_CALLS: [&str; 2] = [
    "/cardinal.v1.CdsHooks/CallHook",
    "/cardinal.v1.CdsHooks/Explain",
];

fn is_hook_call(request: &Request) -> bool {
    let path = request.uri().path();
    if super::server::is_grpc(request) {
        return GRPC_HOOK_CALLS.contains(&path);
    }
    if request.method() != Method::POST {
        return false;
    }
    let Some(rest) = path.strip_prefix("/cds-services/") else {
        return false;
    };
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), None, None) | (Some(id), Some("explain"), None) => !id.is_empty(),
        _ => false,
    }
}

pub async fn admit(State(cardinal): State<Cardinal>, mut request: Request, next: Next) -> Response {
    if !is_hook_call(&request) {
        return next.run(request).await;
    }
    let grpc = super::server::is_grpc(&request);
    match cardinal.admit() {
        Ok(ticket) => {
            let ticket = Arc::new(ticket);
            request.extensions_mut().insert(Arc::clone(&ticket));
            let response = next.run(request).await;
            // The place is released only once the call has been answered.
            drop(ticket);
            response
        }
        Err(refusal) if grpc => grpc::status_of(refusal).into_http(),
        Err(refusal) => HttpError::from(refusal).into_response(),
    }
}
