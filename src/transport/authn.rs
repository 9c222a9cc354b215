//! Authentication of every call, for both protocols, after admission (a flood is refused before any
//! signature is checked) and before the body is read. Exempt: CORS preflight and the gRPC health
//! service. A failure is a bare 401 with `WWW-Authenticate: Bearer` (gRPC: `UNAUTHENTICATED`);
//! its reason goes to the log and the metric `cardinal_auth_rejected_total`, never the token.
//!
//! `aud` must be the URL called. HTTP knows it from the path. A gRPC hook or feedback call names its
//! service in the message, so its `aud` (the CDS Hooks URL of the same call) is checked by the
//! handler once the message is read: [`Authenticated::resolve`].

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::auth::{Caller, Rejection, Verified};
use crate::evaluator::Cardinal;

use super::edge::Edge;

/// gRPC methods whose `aud` depends on the service named in the message.
const GRPC_PER_SERVICE: [&str; 3] = [
    "/cardinal.v1.CdsHooks/CallHook",
    "/cardinal.v1.CdsHooks/Explain",
    "/cardinal.v1.CdsHooks/SubmitFeedback",
];

/// Who is calling, as the handlers see it (request extension).
#[derive(Debug, Clone)]
pub enum Authenticated {
    /// Authentication is off (`serve --dev`).
    Off,
    /// A verified caller, `aud` checked.
    Caller(Caller),
    /// gRPC: verified but for `aud`, which the handler checks against `base` + the call's path.
    Pending {
        verified: Arc<Verified>,
        base: Arc<str>,
    },
}

impl Authenticated {
    /// The caller of a call whose CDS Hooks path is `path` (`/cds-services/{id}`...).
    pub fn resolve(&self, path: &str) -> Result<Option<Caller>, Rejection> {
        match self {
            Self::Off => Ok(None),
            Self::Caller(caller) => Ok(Some(caller.clone())),
            Self::Pending { verified, base } => {
                verified.caller_for(&format!("{base}{path}")).map(Some)
            }
        }
    }

    /// Whether calls are authenticated at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, Self::Off)
    }
}

#[derive(Clone)]
pub struct AuthState {
    pub cardinal: Cardinal,
    pub edge: Edge,
}

fn exempt(request: &Request, grpc: bool) -> bool {
    if grpc {
        request.uri().path().starts_with("/grpc.health.v1.Health/")
    } else {
        request.method() == Method::OPTIONS
    }
}

/// The bearer token of `Authorization` (HTTP header or gRPC metadata, which is the same thing).
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// `public_base_url`, or the scheme and `Host` (`:authority` in HTTP/2) of the request.
fn base_url(state: &AuthState, request: &Request) -> Option<String> {
    if let Some(base) = state.edge.auth.as_ref()?.public_base_url() {
        return Some(base.to_owned());
    }
    let host = match request.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => request
            .headers()
            .get(header::HOST)?
            .to_str()
            .ok()?
            .to_owned(),
    };
    Some(format!("{}://{host}", state.edge.scheme()))
}

pub async fn authenticate(
    State(state): State<AuthState>,
    mut request: Request,
    next: Next,
) -> Response {
    let grpc = super::server::is_grpc(&request);
    let Some(auth) = state.edge.auth.clone() else {
        request.extensions_mut().insert(Authenticated::Off);
        return next.run(request).await;
    };
    if exempt(&request, grpc) {
        return next.run(request).await;
    }
    let Some(token) = bearer(&request) else {
        return reject(&state.cardinal, grpc, Rejection::Missing);
    };
    let verified = match auth.verify(token).await {
        Ok(verified) => verified,
        Err(why) => return reject(&state.cardinal, grpc, why),
    };
    let Some(base) = base_url(&state, &request) else {
        return reject(&state.cardinal, grpc, Rejection::Audience);
    };
    let path = request.uri().path();
    let authenticated = if grpc && GRPC_PER_SERVICE.contains(&path) {
        Authenticated::Pending {
            verified: Arc::new(verified),
            base: base.into(),
        }
    } else {
        // gRPC discovery and reflection: the token of a discovery call.
        let url = if grpc {
            format!("{base}/cds-services")
        } else {
            format!("{base}{path}")
        };
        match verified.caller_for(&url) {
            Ok(caller) => Authenticated::Caller(caller),
            Err(why) => return reject(&state.cardinal, grpc, why),
        }
    };
    request.extensions_mut().insert(authenticated);
    next.run(request).await
}

/// Logs and counts the reason; answers without it.
pub(super) fn reject(cardinal: &Cardinal, grpc: bool, why: Rejection) -> Response {
    cardinal.metrics().auth_rejected(why.as_str());
    tracing::warn!(
        reason = %why,
        transport = if grpc { "grpc" } else { "http" },
        "call refused: authentication failed"
    );
    if grpc {
        return unauthenticated_status().into_http();
    }
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The gRPC answer to a failed authentication: no detail.
pub(super) fn unauthenticated_status() -> tonic::Status {
    tonic::Status::unauthenticated("unauthenticated")
}
