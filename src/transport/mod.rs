//! Where hook calls enter: HTTP/JSON (the CDS Hooks spec, for EHRs) and gRPC (for internal callers),
//! on one port. Both turn their input into a [`HookRequest`](crate::cds_hooks::HookRequest) and call
//! [`Cardinal`](crate::evaluator::Cardinal); neither knows about rules.

pub mod admin;
mod admin_guard;
mod admit;
mod authn;
mod edge;
pub mod grpc;
mod grpc_convert;
pub mod http;
mod http_error;
mod observe;
mod playground;
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

/// Queues the store's record of a hook call both transports answered (with the store on): its
/// cards, its silent and candidate outcomes, and the keyed hash of its patient.
fn record_cards(
    edge: &Edge,
    evaluation: &crate::evaluator::Evaluation,
    record: &crate::audit::AuditRecord,
) {
    if let Some(store) = edge.store() {
        store.record_call(
            evaluation,
            record.hook_instance.as_deref().unwrap_or_default(),
            record.patient_id.as_deref(),
        );
    }
}
