//! A real OTLP/gRPC receiver for tests: a tonic server on 127.0.0.1:0, with its own runtime and
//! thread, implementing the collector's `TraceService` and `MetricsService`. It keeps every span it
//! is sent (flattened: ids in hex, attributes as strings, status, events, resource), every metric
//! data point, and the raw requests (protobuf bytes and debug text) so tests can scan everything that
//! left the process for patient data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::{span, status};
use prost::Message as _;
use tokio::sync::{Notify, oneshot};

/// A span as exported, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    /// 16 lowercase hex digits.
    pub span_id: String,
    /// 16 lowercase hex digits; empty for a root span.
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
    /// The resource's attributes (`service.name`, ...).
    pub resource: BTreeMap<String, String>,
    /// The instrumentation scope's name.
    pub scope: String,
    /// `unset`, `ok` or `error`.
    pub status: String,
    pub status_message: String,
    pub events: Vec<ExportedEvent>,
}

impl ExportedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExportedEvent {
    pub name: String,
    pub attributes: BTreeMap<String, String>,
}

/// One metric data point as exported. For histograms `value` is the count and `sum` the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedPoint {
    pub metric: String,
    pub unit: String,
    /// `sum`, `gauge`, `histogram`, `exponential-histogram` or `summary`.
    pub kind: String,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
    pub value: f64,
    pub sum: Option<f64>,
    /// When the point was received, in receive order.
    pub batch: usize,
}

#[derive(Default)]
struct Collected {
    spans: Vec<ExportedSpan>,
    points: Vec<ExportedPoint>,
    /// For scanning: each request's debug text and its protobuf bytes (lossy UTF-8).
    raw: Vec<(String, String)>,
    trace_requests: usize,
    metric_requests: usize,
}

#[derive(Default)]
struct Shared {
    collected: Mutex<Collected>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Collected> {
        self.collected.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone)]
struct Collector(Arc<Shared>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        let spans = flatten_spans(&request);
        {
            let mut collected = self.0.lock();
            collected.trace_requests += 1;
            collected.raw.push((
                format!("{request:?}"),
                String::from_utf8_lossy(&request.encode_to_vec()).into_owned(),
            ));
            collected.spans.extend(spans);
        }
        self.0.notify.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        {
            let mut collected = self.0.lock();
            collected.metric_requests += 1;
            let batch = collected.metric_requests;
            let points = flatten_points(&request, batch);
            collected.raw.push((
                format!("{request:?}"),
                String::from_utf8_lossy(&request.encode_to_vec()).into_owned(),
            ));
            collected.points.extend(points);
        }
        self.0.notify.notify_waiters();
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The receiver. Stops serving when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub endpoint: String,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// Starts serving on 127.0.0.1:0 on a thread of its own.
    pub fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let collector = Collector(Arc::clone(&shared));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown, stop) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind the OTLP receiver");
                    let _ = addr_tx.send(listener.local_addr().expect("receiver address"));
                    let incoming = tonic::transport::server::TcpIncoming::from(listener);
                    let _ = tonic::transport::Server::builder()
                        .add_service(TraceServiceServer::new(collector.clone()))
                        .add_service(MetricsServiceServer::new(collector))
                        .serve_with_incoming_shutdown(incoming, async {
                            let _ = stop.await;
                        })
                        .await;
                });
            })
            .expect("spawn the OTLP receiver thread");
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the OTLP receiver did not start");
        Self {
            addr,
            endpoint: format!("http://{addr}"),
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        self.shared.lock().spans.clone()
    }

    /// Every metric data point received so far, in arrival order.
    pub fn points(&self) -> Vec<ExportedPoint> {
        self.shared.lock().points.clone()
    }

    /// How many trace and metric export requests arrived.
    pub fn request_counts(&self) -> (usize, usize) {
        let collected = self.shared.lock();
        (collected.trace_requests, collected.metric_requests)
    }

    /// The names of the metrics received so far, sorted and deduplicated.
    pub fn metric_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.points().into_iter().map(|p| p.metric).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Where `needle` occurs in anything received: the raw requests (debug text and protobuf bytes),
    /// span names, attributes, events and resources, and metric names and attributes. Empty when
    /// nowhere.
    pub fn find(&self, needle: &str) -> Vec<String> {
        let collected = self.shared.lock();
        let mut found = Vec::new();
        for (i, (debug, bytes)) in collected.raw.iter().enumerate() {
            if debug.contains(needle) {
                found.push(format!("export request #{i} (debug text)"));
            }
            if bytes.contains(needle) {
                found.push(format!("export request #{i} (protobuf bytes)"));
            }
        }
        for s in &collected.spans {
            let where_ = format!("span {:?} {}", s.name, s.span_id);
            if s.name.contains(needle) || s.status_message.contains(needle) {
                found.push(format!("{where_}: name or status message"));
            }
            for (k, v) in s.attributes.iter().chain(s.resource.iter()) {
                if k.contains(needle) || v.contains(needle) {
                    found.push(format!("{where_}: attribute {k}={v}"));
                }
            }
            for e in &s.events {
                if e.name.contains(needle) {
                    found.push(format!("{where_}: event {:?}", e.name));
                }
                for (k, v) in &e.attributes {
                    if k.contains(needle) || v.contains(needle) {
                        found.push(format!("{where_}: event {:?} attribute {k}={v}", e.name));
                    }
                }
            }
        }
        for p in &collected.points {
            for (k, v) in p.attributes.iter().chain(p.resource.iter()) {
                if p.metric.contains(needle) || k.contains(needle) || v.contains(needle) {
                    found.push(format!("metric {} attribute {k}={v}", p.metric));
                }
            }
        }
        found
    }

    /// Waits until `done` holds for the spans received so far; returns them. On timeout returns
    /// `Err` with what did arrive.
    pub async fn wait_for_spans(
        &self,
        done: impl Fn(&[ExportedSpan]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<ExportedSpan>, Vec<ExportedSpan>> {
        self.wait(|c| done(&c.spans).then(|| c.spans.clone()), timeout)
            .await
            .map_err(|()| self.spans())
    }

    /// Waits until `done` holds for the metric data points received so far; returns them. On timeout
    /// returns `Err` with what did arrive.
    pub async fn wait_for_points(
        &self,
        done: impl Fn(&[ExportedPoint]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<ExportedPoint>, Vec<ExportedPoint>> {
        self.wait(|c| done(&c.points).then(|| c.points.clone()), timeout)
            .await
            .map_err(|()| self.points())
    }

    async fn wait<T>(
        &self,
        check: impl Fn(&Collected) -> Option<T>,
        timeout: Duration,
    ) -> Result<T, ()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Registered before checking, so an export between the check and the wait is not missed.
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(found) = check(&self.shared.lock()) {
                return Ok(found);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(());
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Lowercase hex of an id (empty for an empty id).
pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(text, "{b:02x}");
    }
    text
}

/// An attribute value as text: strings as they are, numbers and booleans printed, arrays and maps
/// in brackets.
pub fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BytesValue(b)) => hex(b),
        Some(any_value::Value::ArrayValue(a)) => format!(
            "[{}]",
            a.values
                .iter()
                .map(|v| value_text(Some(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(any_value::Value::KvlistValue(kv)) => format!(
            "{{{}}}",
            kv.values
                .iter()
                .map(|kv| format!("{}={}", kv.key, value_text(kv.value.as_ref())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        #[allow(unreachable_patterns)]
        Some(other) => format!("{other:?}"),
    }
}

pub fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_text(kv.value.as_ref())))
        .collect()
}

fn kind_name(kind: i32) -> String {
    match span::SpanKind::try_from(kind) {
        Ok(span::SpanKind::Server) => "server",
        Ok(span::SpanKind::Client) => "client",
        Ok(span::SpanKind::Internal) => "internal",
        Ok(span::SpanKind::Producer) => "producer",
        Ok(span::SpanKind::Consumer) => "consumer",
        _ => "unspecified",
    }
    .into()
}

fn status_name(code: i32) -> String {
    match status::StatusCode::try_from(code) {
        Ok(status::StatusCode::Ok) => "ok",
        Ok(status::StatusCode::Error) => "error",
        _ => "unset",
    }
    .into()
}

fn flatten_spans(request: &ExportTraceServiceRequest) -> Vec<ExportedSpan> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = resource_spans
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_spans in &resource_spans.scope_spans {
            let scope = scope_spans
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for s in &scope_spans.spans {
                let (status, status_message) = s
                    .status
                    .as_ref()
                    .map(|st| (status_name(st.code), st.message.clone()))
                    .unwrap_or_else(|| ("unset".into(), String::new()));
                out.push(ExportedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: kind_name(s.kind),
                    attributes: attributes(&s.attributes),
                    resource: resource.clone(),
                    scope: scope.clone(),
                    status,
                    status_message,
                    events: s
                        .events
                        .iter()
                        .map(|e| ExportedEvent {
                            name: e.name.clone(),
                            attributes: attributes(&e.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    out
}

fn number(value: Option<&number_data_point::Value>) -> f64 {
    match value {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => f64::NAN,
    }
}

fn flatten_points(request: &ExportMetricsServiceRequest, batch: usize) -> Vec<ExportedPoint> {
    let mut out = Vec::new();
    for resource_metrics in &request.resource_metrics {
        let resource = resource_metrics
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        for scope_metrics in &resource_metrics.scope_metrics {
            for m in &scope_metrics.metrics {
                let point =
                    |kind: &str, attrs: &[KeyValue], value: f64, sum: Option<f64>| ExportedPoint {
                        metric: m.name.clone(),
                        unit: m.unit.clone(),
                        kind: kind.into(),
                        attributes: attributes(attrs),
                        resource: resource.clone(),
                        value,
                        sum,
                        batch,
                    };
                match &m.data {
                    Some(metric::Data::Sum(s)) => out.extend(
                        s.data_points
                            .iter()
                            .map(|p| point("sum", &p.attributes, number(p.value.as_ref()), None)),
                    ),
                    Some(metric::Data::Gauge(g)) => out.extend(
                        g.data_points
                            .iter()
                            .map(|p| point("gauge", &p.attributes, number(p.value.as_ref()), None)),
                    ),
                    Some(metric::Data::Histogram(h)) => out.extend(
                        h.data_points
                            .iter()
                            .map(|p| point("histogram", &p.attributes, p.count as f64, p.sum)),
                    ),
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        out.extend(h.data_points.iter().map(|p| {
                            point(
                                "exponential-histogram",
                                &p.attributes,
                                p.count as f64,
                                p.sum,
                            )
                        }))
                    }
                    Some(metric::Data::Summary(s)) => out.extend(
                        s.data_points
                            .iter()
                            .map(|p| point("summary", &p.attributes, p.count as f64, Some(p.sum))),
                    ),
                    None => {}
                }
            }
        }
    }
    out
}
