//! One call on one connection, and what became of it: an answer (HTTP status or gRPC code, whether
//! its cards match the run's first accepted answer, whether it carries a rule diagnostic) or a
//! transport error by kind.
//!
//! HTTP uses hyper's connection-level client (`client::conn::http1`) over a `TcpStream` with
//! TCP_NODELAY, so a worker owns exactly one connection and every reconnect is seen and counted; a
//! pooling client would hide both. gRPC is the same for HTTP/2: one `h2` connection per worker,
//! under tonic's generated client (which encodes and decodes the messages). Not tonic's `Channel`:
//! its `tower::buffer` worker and hyper's per-request tasks put three extra task hand-offs in every
//! call, which the HTTP client does not pay, and would be measured as the server's latency.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{CONTENT_TYPE, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};

use super::target::Target;
use super::workload::Workload;
use super::{BenchError, Protocol};
use crate::proto;
use crate::proto::cds_hooks_client::CdsHooksClient;
use crate::transport::EVALUATION_TIME_HEADER;

/// A transport failure: no answer at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransportError {
    /// The connection was refused (nothing listening, or the backlog is full).
    ConnectRefused,
    /// The connection was reset or broken.
    Reset,
    /// The server closed the connection before answering.
    Closed,
    /// No answer within `--timeout`.
    Timeout,
    Other,
}

impl TransportError {
    pub const ALL: [Self; 5] = [
        Self::ConnectRefused,
        Self::Reset,
        Self::Closed,
        Self::Timeout,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConnectRefused => "connect_refused",
            Self::Reset => "reset",
            Self::Closed => "closed",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn from_io(error: &io::Error) -> Self {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectRefused,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => Self::Reset,
            io::ErrorKind::TimedOut => Self::Timeout,
            io::ErrorKind::UnexpectedEof => Self::Closed,
            _ => Self::Other,
        }
    }

    /// Classifies an error by the first I/O error in its source chain.
    fn from_chain(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return Some(Self::from_io(io));
            }
            current = e.source();
        }
        None
    }

    pub fn from_hyper(error: &hyper::Error) -> Self {
        if let Some(kind) = Self::from_chain(error) {
            return kind;
        }
        if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
            Self::Closed
        } else if error.is_timeout() {
            Self::Timeout
        } else {
            Self::Other
        }
    }
}

/// The answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Http(u16),
    Grpc(tonic::Code),
}

/// How an answer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// HTTP 200 / gRPC OK.
    Accepted,
    /// HTTP 503 / gRPC UNAVAILABLE: the server refused the call (load shedding).
    Refused,
    Other,
}

impl Status {
    pub fn class(self) -> Class {
        match self {
            Self::Http(200) | Self::Grpc(tonic::Code::Ok) => Class::Accepted,
            Self::Http(503) | Self::Grpc(tonic::Code::Unavailable) => Class::Refused,
            _ => Class::Other,
        }
    }

    /// The key in the report's status counts: `200`, `503`, `OK`, `UNAVAILABLE`, ...
    pub fn key(self) -> Cow<'static, str> {
        match self {
            Self::Http(200) => Cow::Borrowed("200"),
            Self::Http(code) => Cow::Owned(code.to_string()),
            Self::Grpc(code) => Cow::Borrowed(grpc_code_name(code)),
        }
    }
}

/// The canonical upper-case name of a gRPC status code.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// An accepted answer's cards compared with the run's first accepted answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cards {
    /// Not an accepted answer: not compared.
    NotChecked,
    Same,
    Different,
    /// A 200 whose body is not a CDS Hooks response.
    Unreadable,
}

/// What became of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Answered {
        status: Status,
        cards: Cards,
        /// The answer's first rule diagnostic, as `rule: kind` (a rule that could not be
        /// evaluated, e.g. `timeout`).
        diagnostic: Option<String>,
    },
    Failed(TransportError),
}

/// One card as compared: indicator and summary.
pub type CardKey = (String, String);

/// The first accepted answer's cards (sorted), shared by every worker of a run.
#[derive(Debug, Default)]
pub struct FirstCards(OnceLock<Vec<CardKey>>);

impl FirstCards {
    /// Compares `cards` (in any order) with the first set seen, which `cards` becomes if it is the
    /// first.
    fn compare(&self, mut cards: Vec<(&str, &str)>) -> Cards {
        cards.sort_unstable();
        let first = self.0.get_or_init(|| {
            cards
                .iter()
                .map(|(i, s)| ((*i).to_owned(), (*s).to_owned()))
                .collect()
        });
        let same = first.len() == cards.len()
            && first
                .iter()
                .zip(&cards)
                .all(|((i, s), (ci, cs))| i == ci && s == cs);
        if same { Cards::Same } else { Cards::Different }
    }

    /// The reference cards, once an accepted answer was seen.
    pub fn get(&self) -> Option<&Vec<CardKey>> {
        self.0.get()
    }
}

/// A worker's client: one connection of either protocol.
pub enum Client {
    Http(HttpClient),
    Grpc(Box<GrpcClient>),
}

impl Client {
    /// Opens the connection (so that a server that is not there is reported before the run).
    pub async fn connect(
        protocol: Protocol,
        target: &Target,
        plan: &Arc<CallPlan>,
        timeout: Duration,
    ) -> Result<Self, BenchError> {
        let failed = |reason: String| BenchError::Connect {
            addr: target.addr.to_string(),
            reason,
        };
        match protocol {
            Protocol::Http => {
                let sender = tokio::time::timeout(timeout, connect_http(target.addr))
                    .await
                    .map_err(|_| failed("timed out".into()))?
                    .map_err(|(kind, message)| failed(format!("{}: {message}", kind.as_str())))?;
                Ok(Self::Http(HttpClient {
                    addr: target.addr,
                    plan: Arc::clone(plan),
                    sender: Some(sender),
                    opened: 1,
                }))
            }
            Protocol::Grpc => {
                let origin: Uri = target
                    .origin()
                    .parse()
                    .map_err(|_| failed("not a usable origin".into()))?;
                let client = tokio::time::timeout(timeout, connect_grpc(target.addr, &origin))
                    .await
                    .map_err(|_| failed("timed out".into()))?
                    .map_err(|e| {
                        let kind = TransportError::from_io(&e);
                        failed(format!("{}: {e}", kind.as_str()))
                    })?;
                Ok(Self::Grpc(Box::new(GrpcClient {
                    addr: target.addr,
                    origin,
                    client: Some(client),
                    plan: Arc::clone(plan),
                    opened: 1,
                })))
            }
        }
    }

    /// Sends the run's request once and waits for the whole answer.
    pub async fn call(&mut self) -> Outcome {
        match self {
            Self::Http(c) => c.call().await,
            Self::Grpc(c) => c.call().await,
        }
    }

    /// Drops the HTTP connection after a call was abandoned (its answer may still arrive on it).
    /// An abandoned gRPC call only resets its own stream; the connection stays.
    pub fn reset(&mut self) {
        if let Self::Http(c) = self {
            c.sender = None;
        }
    }

    /// Connections this client opened.
    pub fn connections_opened(&self) -> u64 {
        match self {
            Self::Http(c) => c.opened,
            Self::Grpc(c) => c.opened,
        }
    }
}

/// Everything a call sends, built once per run and shared by the workers.
pub struct CallPlan {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    message: proto::CallHookRequest,
    metadata: MetadataMap,
    pub first_cards: FirstCards,
}

impl CallPlan {
    /// `extra_headers` are `--header` values (`Name: value`), sent over both transports.
    pub fn new(
        target: &Target,
        workload: &Workload,
        extra_headers: &[String],
    ) -> Result<Self, BenchError> {
        let usage = |m: String| BenchError::Usage(m);
        let path = target.service_path(&workload.service);
        let uri: Uri = path
            .parse()
            .map_err(|_| usage(format!("`{}` is not a usable service id", workload.service)))?;
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(&target.authority)
            .map_err(|_| usage(format!("`{}` is not a valid host", target.authority)))?;
        headers.insert(HOST, host);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut metadata = MetadataMap::new();
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(time) = &workload.evaluation_time {
            pairs.push((EVALUATION_TIME_HEADER.to_owned(), time.clone()));
        }
        for header in extra_headers {
            let Some((name, value)) = header.split_once(':') else {
                return Err(usage(format!("--header `{header}` must be `Name: value`")));
            };
            pairs.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        for (name, value) in pairs {
            let bad = || usage(format!("--header `{name}: {value}` is not a valid header"));
            let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let header_value = HeaderValue::from_str(&value).map_err(|_| bad())?;
            headers.append(header_name, header_value);
            let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|_| bad())?;
            let meta_value: MetadataValue<_> = value.parse().map_err(|_| bad())?;
            metadata.append(key, meta_value);
        }
        Ok(Self {
            uri,
            headers,
            body: workload.body.clone(),
            message: workload.grpc.clone(),
            metadata,
            first_cards: FirstCards::default(),
        })
    }

    pub(super) fn http_request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }

    fn grpc_request(&self) -> tonic::Request<proto::CallHookRequest> {
        let mut request = tonic::Request::new(self.message.clone());
        *request.metadata_mut() = self.metadata.clone();
        request
    }
}

/// Opens one HTTP/1.1 connection; its driver runs as a task until the connection closes.
pub async fn connect_http(
    addr: SocketAddr,
) -> Result<SendRequest<Full<Bytes>>, (TransportError, String)> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| (TransportError::from_io(&e), e.to_string()))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| (TransportError::from_hyper(&e), e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// An HTTP/1.1 worker connection, reopened when the server closes it.
pub struct HttpClient {
    addr: SocketAddr,
    plan: Arc<CallPlan>,
    sender: Option<SendRequest<Full<Bytes>>>,
    opened: u64,
}

impl HttpClient {
    async fn ready(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, TransportError> {
        let usable = match &mut self.sender {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.sender = None;
            let sender = connect_http(self.addr).await.map_err(|(kind, _)| kind)?;
            self.opened += 1;
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or(TransportError::Other)
    }

    async fn call(&mut self) -> Outcome {
        let request = self.plan.http_request();
        let sender = match self.ready().await {
            Ok(sender) => sender,
            Err(kind) => return Outcome::Failed(kind),
        };
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(e) => {
                self.sender = None;
                return Outcome::Failed(TransportError::from_hyper(&e));
            }
        };
        let status = response.status().as_u16();
        let body = match response.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(e) => {
                self.sender = None;
                return Outcome::Failed(TransportError::from_hyper(&e));
            }
        };
        let (cards, diagnostic) = if status == 200 {
            check_json(&body, &self.plan.first_cards)
        } else {
            (Cards::NotChecked, None)
        };
        Outcome::Answered {
            status: Status::Http(status),
            cards,
            diagnostic,
        }
    }
}

/// The parts of a CDS Hooks response the generator checks (everything else is skipped unread).
#[derive(Deserialize)]
struct WireResponse<'a> {
    #[serde(borrow)]
    cards: Vec<WireCard<'a>>,
    #[serde(default, borrow)]
    extension: Option<WireExtension<'a>>,
}

#[derive(Deserialize)]
struct WireCard<'a> {
    #[serde(borrow)]
    summary: Cow<'a, str>,
    #[serde(borrow)]
    indicator: Cow<'a, str>,
}

#[derive(Deserialize)]
struct WireExtension<'a> {
    #[serde(rename = "org.cardinalcds.diagnostics", default, borrow)]
    diagnostics: Vec<WireDiagnostic<'a>>,
}

#[derive(Deserialize)]
struct WireDiagnostic<'a> {
    #[serde(rename = "ruleId", default, borrow)]
    rule_id: Cow<'a, str>,
    #[serde(default, borrow)]
    kind: Cow<'a, str>,
}

/// The report's key for a diagnostic.
fn diagnostic_key(rule_id: &str, kind: &str) -> String {
    format!("{rule_id}: {kind}")
}

fn check_json(body: &[u8], first: &FirstCards) -> (Cards, Option<String>) {
    let Ok(response) = serde_json::from_slice::<WireResponse<'_>>(body) else {
        return (Cards::Unreadable, None);
    };
    let diagnostic = response
        .extension
        .as_ref()
        .and_then(|e| e.diagnostics.first())
        .map(|d| diagnostic_key(&d.rule_id, &d.kind));
    let cards = response
        .cards
        .iter()
        .map(|c| (c.indicator.as_ref(), c.summary.as_ref()))
        .collect();
    (first.compare(cards), diagnostic)
}

/// Opens one HTTP/2 connection for gRPC; its driver runs as a task until the connection closes.
pub async fn connect_grpc(
    addr: SocketAddr,
    origin: &Uri,
) -> io::Result<CdsHooksClient<H2Connection>> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    // Windows far above a call's size: no WINDOW_UPDATE round trips in a run.
    let (sender, connection) = h2::client::Builder::new()
        .initial_window_size(H2_WINDOW)
        .initial_connection_window_size(H2_WINDOW)
        .handshake::<_, Bytes>(stream)
        .await
        .map_err(h2_io_error)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let sender = sender.ready().await.map_err(h2_io_error)?;
    Ok(CdsHooksClient::with_origin(
        H2Connection { sender },
        origin.clone(),
    ))
}

/// The receive windows of the generator's HTTP/2 connections (stream and connection).
const H2_WINDOW: u32 = 4 * 1024 * 1024;

/// An `h2` error as the I/O error that describes it, so a failure is classified like HTTP's.
fn h2_io_error(error: h2::Error) -> io::Error {
    if error.is_go_away() {
        io::Error::new(io::ErrorKind::UnexpectedEof, error)
    } else if error.is_reset() {
        io::Error::new(io::ErrorKind::ConnectionReset, error)
    } else if error.is_io() {
        error
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"))
    } else {
        io::Error::other(error)
    }
}

/// One HTTP/2 connection as tonic's client transport: a call opens a stream on it directly.
#[derive(Clone)]
pub struct H2Connection {
    sender: h2::client::SendRequest<Bytes>,
}

/// A call's answer, once its headers are in.
type H2ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<H2Body>, tonic::codegen::StdError>> + Send>>;

impl tonic::client::GrpcService<tonic::body::Body> for H2Connection {
    type ResponseBody = H2Body;
    type Error = tonic::codegen::StdError;
    type Future = H2ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.sender
            .poll_ready(cx)
            .map_err(|e| h2_io_error(e).into())
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        // The headers go now, on the stream `poll_ready` made room for; the body follows.
        let opened = self
            .sender
            .send_request(Request::from_parts(parts, ()), false);
        Box::pin(async move {
            let (response, mut stream) = opened.map_err(h2_io_error)?;
            // A unary request's body is one encoded message, ready at once.
            let data = body.collect().await?.to_bytes();
            stream.send_data(data, true).map_err(h2_io_error)?;
            let response = response.await.map_err(h2_io_error)?;
            Ok(response.map(|recv| H2Body {
                recv,
                data_done: false,
            }))
        })
    }
}

/// A response body read from its `h2` stream: the data, then the trailers (gRPC's status).
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
}

impl hyper::body::Body for H2Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Read: the server may send that much more.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(h2_io_error(e)))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(h2_io_error(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}

/// A gRPC worker: one HTTP/2 connection, reopened when it breaks.
pub struct GrpcClient {
    addr: SocketAddr,
    origin: Uri,
    client: Option<CdsHooksClient<H2Connection>>,
    plan: Arc<CallPlan>,
    opened: u64,
}

impl GrpcClient {
    async fn call(&mut self) -> Outcome {
        let client = match &mut self.client {
            Some(client) => client,
            None => match connect_grpc(self.addr, &self.origin).await {
                Ok(client) => {
                    self.opened += 1;
                    self.client.insert(client)
                }
                Err(e) => return Outcome::Failed(TransportError::from_io(&e)),
            },
        };
        match client.call_hook(self.plan.grpc_request()).await {
            Ok(response) => {
                let response = response.into_inner();
                let cards = response
                    .cards
                    .iter()
                    .map(|c| (indicator_name(c.indicator), c.summary.as_str()))
                    .collect();
                Outcome::Answered {
                    status: Status::Grpc(tonic::Code::Ok),
                    cards: self.plan.first_cards.compare(cards),
                    diagnostic: response
                        .diagnostics
                        .first()
                        .map(|d| diagnostic_key(&d.rule_id, &d.kind)),
                }
            }
            // A status with a source was made by the client from a transport failure (the
            // connection is dropped, and reopened by the next call); one without came from the
            // server.
            Err(status) => match status.source() {
                Some(source) => {
                    self.client = None;
                    Outcome::Failed(TransportError::from_chain(source).unwrap_or(
                        match status.code() {
                            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => {
                                TransportError::Timeout
                            }
                            _ => TransportError::Other,
                        },
                    ))
                }
                None => Outcome::Answered {
                    status: Status::Grpc(status.code()),
                    cards: Cards::NotChecked,
                    diagnostic: None,
                },
            },
        }
    }
}

/// The JSON name of a card indicator, so both transports' cards compare alike.
fn indicator_name(indicator: i32) -> &'static str {
    match proto::Indicator::try_from(indicator) {
        Ok(proto::Indicator::Info) => "info",
        Ok(proto::Indicator::Warning) => "warning",
        Ok(proto::Indicator::Critical) => "critical",
        _ => "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cds_hooks::EXTENSION_DIAGNOSTICS;

    #[test]
    fn cards_compare_in_any_order() {
        let first = FirstCards::default();
        let body_a = br#"{"cards":[{"summary":"A","indicator":"warning","detail":"x"},{"summary":"B","indicator":"info"}]}"#;
        let body_b = br#"{"cards":[{"summary":"B","indicator":"info"},{"summary":"A","indicator":"warning"}],"extension":{"org.cardinalcds.diagnostics":[{"ruleId":"r","kind":"timeout","message":"m"}]}}"#;
        let body_c = br#"{"cards":[{"summary":"A","indicator":"critical"}]}"#;
        assert_eq!(check_json(body_a, &first), (Cards::Same, None));
        assert_eq!(
            check_json(body_b, &first),
            (Cards::Same, Some("r: timeout".to_owned()))
        );
        assert_eq!(check_json(body_c, &first), (Cards::Different, None));
        assert_eq!(check_json(b"not json", &first), (Cards::Unreadable, None));
        assert_eq!(first.get().map(Vec::len), Some(2));
    }

    #[test]
    fn the_diagnostics_key_is_the_servers() {
        assert_eq!(EXTENSION_DIAGNOSTICS, "org.cardinalcds.diagnostics");
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(Status::Http(200).class(), Class::Accepted);
        assert_eq!(Status::Http(503).class(), Class::Refused);
        assert_eq!(Status::Http(429).class(), Class::Other);
        assert_eq!(
            Status::Grpc(tonic::Code::Unavailable).class(),
            Class::Refused
        );
        assert_eq!(Status::Grpc(tonic::Code::Unavailable).key(), "UNAVAILABLE");
        assert_eq!(Status::Http(503).key(), "503");
    }
}
