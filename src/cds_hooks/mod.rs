//! The CDS Hooks 2.0 wire model: what EHRs send and what Cardinal answers, as serde types.
//!
//! Serialisation follows the spec's JSON rules: optional fields are omitted (never `null`, `""`, `[]`
//! or `{}`), enums are lower-case, FHIR resources are JSON objects. Nothing here knows about rules or
//! transports.

pub mod card;
pub mod context;
pub mod discovery;
mod excerpt;
pub mod explanation;
pub mod feedback;
pub mod operation_outcome;
pub mod request;
pub mod response;

pub use crate::fhir::{Prefetch, PrefetchValue};
pub use card::{
    Action, ActionType, Card, Coding, Indicator, Link, LinkType, SelectionBehavior, Source,
    Suggestion,
};
pub use discovery::{Discovery, ServiceDescriptor};
pub use excerpt::{EXCERPT_CHARS, excerpt};
pub use explanation::{Explanation, Fact};
pub use feedback::{FeedbackEntry, FeedbackOutcome, FeedbackRequest};
pub use operation_outcome::{IssueType, OperationOutcome};
pub use request::{FhirAuthorization, HookRequest, RequestError};
pub use response::{Diagnostic, HookResponse, Undecided};

/// Reverse-domain key under which Cardinal puts its own data in `extension` objects.
pub const EXTENSION_EXPLANATION: &str = "org.cardinalcds.explanation";
/// Key of the per-rule diagnostics in a response's `extension`.
pub const EXTENSION_DIAGNOSTICS: &str = "org.cardinalcds.diagnostics";
/// Key of the trace id in a response's `extension`.
pub const EXTENSION_TRACE_ID: &str = "org.cardinalcds.traceId";
/// Key of the per-request evaluation-time override in a request's `extension`.
pub const EXTENSION_EVALUATION_TIME: &str = "org.cardinalcds.evaluationTime";
/// Key of service metadata (version, owner, evidence) in a discovery entry's `extension`.
pub const EXTENSION_SERVICE: &str = "org.cardinalcds.service";
