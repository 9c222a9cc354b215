//! One middleware for both protocols: continues the caller's W3C trace (`traceparent`, which gRPC
//! carries as metadata, i.e. the same header), opens the server span, and returns the trace id in
//! `x-cardinal-trace-id` so an EHR log line can be matched with Cardinal's trace.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry;

/// Response header carrying the trace id of the call.
pub const TRACE_ID_HEADER: &str = "x-cardinal-trace-id";

/// The trace id of the request being served, for handlers (request extension).
#[derive(Debug, Clone)]
pub struct TraceId(pub String);

pub async fn observe(mut request: Request, next: Next) -> Response {
    let parent = telemetry::parent_context(request.headers());
    let grpc = super::server::is_grpc(&request);
    let method = request.method().clone();
    // The route, not the path: a caller may put anything in a path, patient data included.
    let path = request.uri().path();
    let (name, route) = if grpc {
        let route = grpc_method_of(path);
        (route.to_owned(), route)
    } else {
        let route = route_of(path);
        (format!("{method} {route}"), route)
    };
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        http.request.method = %method,
        http.route = route,
        rpc.system = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    if grpc {
        span.record("rpc.system", "grpc");
    }
    let _ = span.set_parent(parent.clone());
    let trace_id = telemetry::trace_id_of(&span, &parent);
    span.record("trace_id", trace_id.as_str());
    request.extensions_mut().insert(TraceId(trace_id.clone()));
    let mut response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&trace_id) {
        response.headers_mut().insert(TRACE_ID_HEADER, value);
    }
    response
}

/// The route template of a path: `/cds-services/{id}` rather than the id, so span names stay few.
fn route_of(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("cds-services"), None, _, _) => "/cds-services",
        (Some("cds-services"), Some(_), None, _) => "/cds-services/{id}",
        (Some("cds-services"), Some(_), Some("feedback"), None) => "/cds-services/{id}/feedback",
        (Some("cds-services"), Some(_), Some("explain"), None) => "/cds-services/{id}/explain",
        (Some("healthz"), None, _, _) => "/healthz",
        (Some("readyz"), None, _, _) => "/readyz",
        (Some("metrics"), None, _, _) => "/metrics",
        _ => "other",
    }
}

/// A gRPC method Cardinal serves (`cardinal.v1.CdsHooks/CallHook`), else `other`.
fn grpc_method_of(path: &str) -> &'static str {
    const SERVED: [&str; 7] = [
        "cardinal.v1.CdsHooks/Discover",
        "cardinal.v1.CdsHooks/CallHook",
        "cardinal.v1.CdsHooks/SubmitFeedback",
        "cardinal.v1.CdsHooks/Explain",
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    ];
    let method = path.trim_start_matches('/');
    SERVED.into_iter().find(|m| *m == method).unwrap_or("other")
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_hide_ids() {
        assert_eq!(
            super::route_of("/cds-services/opioidcds-01"),
            "/cds-services/{id}"
        );
        assert_eq!(
            super::route_of("/cds-services/x/feedback"),
            "/cds-services/{id}/feedback"
        );
        assert_eq!(super::route_of("/cds-services"), "/cds-services");
        assert_eq!(super::route_of("/Patient/123"), "other");
        assert_eq!(
            super::grpc_method_of("/cardinal.v1.CdsHooks/CallHook"),
            "cardinal.v1.CdsHooks/CallHook"
        );
        assert_eq!(super::grpc_method_of("/Patient/123"), "other");
    }
}
