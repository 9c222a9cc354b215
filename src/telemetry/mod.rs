//! What operators see: logs (JSON or pretty), OpenTelemetry traces exported over OTLP/gRPC when
//! configured, and metrics (Prometheus `/metrics`, and OTLP when configured).
//!
//! Nothing here records patient data: spans and logs carry service, rule and hook ids, kinds, counts,
//! statuses and durations only.

mod health;
mod metrics;
mod propagation;

pub use health::SinkHealth;
pub use metrics::Metrics;
pub use propagation::{parent_context, trace_id_of};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::config::LogFormat;

/// The OTLP endpoint from the standard variables, when traces are to be exported.
pub fn otlp_endpoint() -> Option<String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

/// `OTEL_SERVICE_NAME`, else `cardinal`.
pub fn service_name() -> String {
    std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "cardinal".into())
}

pub(crate) fn resource() -> Resource {
    Resource::builder()
        .with_service_name(service_name())
        .build()
}

/// Flushes exported telemetry when dropped (at shutdown).
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Events of the libraries that carry telemetry must not be traced themselves.
fn is_exporter_internal(target: &str) -> bool {
    ["h2", "hyper", "tonic", "tower", "opentelemetry", "reqwest"]
        .iter()
        .any(|p| target.starts_with(p))
}

/// Replaces the default panic output (which prints the panic message, and a message can quote the
/// request being served, i.e. patient data) with one log event naming only where it happened. The
/// request itself is answered with a fixed 500 / `INTERNAL` by the transport.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_else(|| "unknown".into());
        tracing::error!(
            %location,
            "panic while serving a request; its message is withheld because it may quote patient data"
        );
    }));
}

/// Installs the global subscriber: logs on stderr, and spans exported over OTLP/gRPC when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Must run inside a Tokio runtime when exporting (the exporter
/// connects lazily, so start-up never fails because a collector is down).
pub fn init(format: LogFormat, default_filter: &str) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt_layer = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Pretty => fmt::layer().with_writer(std::io::stderr).boxed(),
    };
    let mut exporter_error = None;
    let tracer_provider = otlp_endpoint().and_then(|_| {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource())
                    .build(),
            ),
            Err(e) => {
                exporter_error = Some(e.to_string());
                None
            }
        }
    });
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("cardinal"))
            .with_filter(FilterFn::new(|meta| !is_exporter_internal(meta.target())))
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(otel_layer)
        .try_init();
    if let Some(error) = exporter_error {
        tracing::warn!(%error, "trace export disabled: the OTLP exporter could not be built");
    }
    TelemetryGuard { tracer_provider }
}
