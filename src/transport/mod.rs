//! Where hook calls enter: HTTP/JSON (the CDS Hooks spec, for EHRs) and gRPC (for internal callers),
//! on one port. Both turn their input into a [`HookRequest`](crate::cds_hooks::HookRequest) and call
//! [`Cardinal`](crate::evaluator::Cardinal); neither knows about rules.

pub mod admin;
mod admit;
mod authn;
mod edge;
pub mod grpc;
mod grpc_convert;
pub mod http;
mod http_error;
mod observe;
mod server;
mod tls;

pub use authn::Authenticated;
pub use edge::{Edge, ServeError};
pub use observe::{TRACE_ID_HEADER, TraceId};
pub use server::{AdminServer, Server, router};
pub use tls::{TlsConfig, TlsError, TlsReloader};

/// Header that pins the evaluation time of one call (RFC 3339 or `YYYY-MM-DD`).
pub const EVALUATION_TIME_HEADER: &str = "x-cardinal-evaluation-time";

/// Response header (and gRPC response metadata) naming the content version of the rule set that
/// produced the answer.
pub const RULE_SET_HEADER: &str = "x-cardinal-rule-set";
