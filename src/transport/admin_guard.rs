//! Who may use the operators' calls (rule-set reload, analytics) on the admin listener. Probes and
//! the metrics scraper (`/healthz`, `/readyz`, `/metrics`) are never guarded: the kubelet and
//! Prometheus carry no secret.
//!
//! - `admin_token_file` set: every guarded call carries `Authorization: Bearer <token>` (gRPC:
//!   `authorization` metadata); compared in constant time.
//! - unset, listener on a loopback address: open (only this host can reach it).
//! - unset, listener on any other address (a pod address, so the kubelet can probe it): the guarded
//!   calls are refused, so reachability alone never lets anyone reload rules or read analytics.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::cds_hooks::IssueType;

use super::http_error::HttpError;

/// Why the admin token cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("admin_token_file {path}: {reason}")]
pub struct AdminTokenError {
    path: String,
    reason: String,
}

#[derive(Clone)]
pub enum AdminGuard {
    Open,
    Token(Arc<[u8]>),
    Closed,
}

/// Tokens shorter than this are refused: the secret guards rule reloads.
const MIN_TOKEN_BYTES: usize = 16;

impl AdminGuard {
    /// The guard for a listener on `addr` with the token in `token_file` (surrounding whitespace
    /// ignored, as `kubectl create secret --from-file` may add a newline).
    pub fn new(addr: SocketAddr, token_file: Option<&Path>) -> Result<Self, AdminTokenError> {
        let Some(path) = token_file else {
            return Ok(if addr.ip().is_loopback() {
                Self::Open
            } else {
                Self::Closed
            });
        };
        let error = |reason: String| AdminTokenError {
            path: path.display().to_string(),
            reason,
        };
        let token = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let token = token.trim();
        if token.len() < MIN_TOKEN_BYTES {
            return Err(error(format!(
                "the token must be at least {MIN_TOKEN_BYTES} characters"
            )));
        }
        Ok(Self::Token(Arc::from(token.as_bytes())))
    }

    fn admits(&self, request: &Request) -> Result<(), Refusal> {
        match self {
            Self::Open => Ok(()),
            Self::Closed => Err(Refusal::Closed),
            Self::Token(expected) => {
                let presented = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::trim)
                    .ok_or(Refusal::Missing)?;
                aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), expected)
                    .map_err(|_| Refusal::Wrong)
            }
        }
    }
}

enum Refusal {
    Missing,
    Wrong,
    Closed,
}

impl Refusal {
    fn message(&self) -> &'static str {
        match self {
            Self::Missing => "this admin call needs `Authorization: Bearer <admin token>`",
            Self::Wrong => "the admin token is not the configured one",
            Self::Closed => {
                "admin calls are off on a non-loopback admin listener without `admin_token_file`"
            }
        }
    }
}

/// The middleware: a refused HTTP call gets 401 / 403 with an OperationOutcome, a refused gRPC
/// call `UNAUTHENTICATED` / `PERMISSION_DENIED`.
pub async fn require_admin(
    State(guard): State<AdminGuard>,
    request: Request,
    next: Next,
) -> Response {
    let refusal = match guard.admits(&request) {
        Ok(()) => return next.run(request).await,
        Err(refusal) => refusal,
    };
    let is_grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        let code = match refusal {
            Refusal::Missing | Refusal::Wrong => tonic::Code::Unauthenticated,
            Refusal::Closed => tonic::Code::PermissionDenied,
        };
        return tonic::Status::new(code, refusal.message())
            .into_http::<axum::body::Body>()
            .into_response();
    }
    let (status, issue) = match refusal {
        Refusal::Missing | Refusal::Wrong => (StatusCode::UNAUTHORIZED, IssueType::Login),
        Refusal::Closed => (StatusCode::FORBIDDEN, IssueType::Forbidden),
    };
    let mut response = HttpError::new(status, issue, refusal.message()).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
