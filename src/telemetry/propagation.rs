//! W3C trace context: continuing the caller's trace (`traceparent` on HTTP, gRPC metadata is the same
//! header map), and the trace id Cardinal puts in responses and card explanations.

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The caller's trace context from `traceparent`/`tracestate` (empty when absent or malformed).
pub fn parent_context(headers: &HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)))
}

/// The trace id of a span: its OpenTelemetry trace id when tracing is on, else the caller's
/// `traceparent` trace id, else a fresh random one, so every response can be correlated.
pub fn trace_id_of(span: &tracing::Span, parent: &Context) -> String {
    let own = span.context().span().span_context().trace_id();
    if own != opentelemetry::trace::TraceId::INVALID {
        return own.to_string();
    }
    let theirs = parent.span().span_context().trace_id();
    if theirs != opentelemetry::trace::TraceId::INVALID {
        return theirs.to_string();
    }
    uuid::Uuid::new_v4().simple().to_string()
}
