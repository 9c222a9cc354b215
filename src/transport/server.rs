//! One listener, two protocols: the CDS Hooks HTTP routes and the gRPC services share a port (gRPC is
//! HTTP/2 with `application/grpc`; axum routes by path), over TLS when a certificate is configured.
//! A second, plain listener serves the operators' routes ([`super::admin`]).
//!
//! The accept loop is Cardinal's own rather than `axum::serve` because a service in front of an EHR
//! must bound what a connection may hold: a connection limit, a deadline for the first byte and for
//! the headers (slow or half-open clients are closed), HTTP/2 stream and header limits, and a
//! shutdown that drains in-flight calls for a bounded time and then exits.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::{Extension, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{Any, CorsLayer};

use crate::config::ServerConfig;
use crate::evaluator::Cardinal;

use super::admin_guard::AdminGuard;
use super::edge::{Edge, ServeError};
use super::tls::TlsReloader;
use super::{EVALUATION_TIME_HEADER, admin, admit, authn, grpc, http, observe};

/// The complete EHR-facing router: HTTP/JSON with a body limit, gRPC, and a JSON 404 for the rest.
/// Every call passes, in order: tracing, CORS (preflights answered here), admission control (hook
/// calls refused cheaply when the replica is full), authentication, then the protocol's routes. A
/// panic anywhere answers a fixed 500 (`INTERNAL` for gRPC) and is counted, never echoed.
pub async fn router(cardinal: Cardinal, edge: Edge) -> Router {
    let max_body = cardinal.config().max_body_bytes;
    // Browser-based EHRs call from another origin; the spec asks for CORS with these headers.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static(EVALUATION_TIME_HEADER),
            header::HeaderName::from_static("traceparent"),
            header::HeaderName::from_static("tracestate"),
        ])
        .expose_headers([
            header::HeaderName::from_static(observe::TRACE_ID_HEADER),
            header::HeaderName::from_static(super::RULE_SET_HEADER),
        ])
        .max_age(std::time::Duration::from_secs(3600));
    let http_panics = cardinal.clone();
    let http = http::routes(cardinal.clone())
        .fallback(http::not_found)
        .layer(Extension(edge.clone()))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(move |_payload| {
            http_panics.metrics().panic("http");
            http::panic_response()
        }));
    let grpc_panics = cardinal.clone();
    // tonic's router answers unknown gRPC methods with `UNIMPLEMENTED`, as gRPC clients expect.
    let grpc = grpc::routes(cardinal.clone(), edge.clone())
        .await
        .into_axum_router()
        .layer(CatchPanicLayer::custom(move |_payload| {
            grpc_panics.metrics().panic("grpc");
            grpc::panic_response()
        }));
    let auth = authn::AuthState {
        cardinal: cardinal.clone(),
        edge,
    };
    // Dispatch by protocol, not by path: a gRPC client always gets a gRPC status, and a plain HTTP
    // caller always gets a JSON answer, whatever path either asks for.
    Router::new()
        .fallback_service(tower::service_fn(move |request: Request| {
            let target = if is_grpc(&request) {
                grpc.clone()
            } else {
                http.clone()
            };
            target.oneshot(request)
        }))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            authn::authenticate,
        ))
        .layer(axum::middleware::from_fn_with_state(cardinal, admit::admit))
        .layer(cors)
        .layer(axum::middleware::from_fn(observe::observe))
}

pub(super) fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// Pending connections the kernel may queue before Cardinal accepts them.
const LISTEN_BACKLOG: u32 = 4096;

/// A bound, not yet serving, Cardinal server (the EHR-facing port).
pub struct Server {
    listener: TcpListener,
    router: Router,
    cardinal: Cardinal,
    edge: Edge,
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A burst of new connections (an EHR's pool reconnecting after a deploy) should wait in the
    // kernel's queue, not be dropped into SYN retransmits; the kernel caps it at somaxconn.
    socket.listen(LISTEN_BACKLOG)
}

impl Server {
    /// Binds `addr` with the authentication, TLS and audit settings of `cardinal`'s configuration
    /// (a bad certificate, key set or issuer list stops here).
    pub async fn bind(cardinal: Cardinal, addr: SocketAddr) -> Result<Self, ServeError> {
        let edge = Edge::new(&cardinal).await?;
        let listener = listen(addr)?;
        Ok(Self {
            listener,
            router: router(cardinal.clone(), edge.clone()).await,
            cardinal,
            edge,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Authentication, audit and TLS of this server.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// The TLS settings, reloadable while serving (`None`: plain HTTP).
    pub fn tls(&self) -> Option<Arc<TlsReloader>> {
        self.edge.tls.clone()
    }

    /// Binds the admin listener (metrics, health, readiness), sharing this server's state.
    pub fn bind_admin(&self, addr: SocketAddr) -> io::Result<AdminServer> {
        let guard = AdminGuard::new(addr, self.cardinal.config().admin_token_file.as_deref())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(AdminServer {
            listener: listen(addr)?,
            router: admin::router(self.cardinal.clone(), self.edge.clone(), guard),
            settings: self.cardinal.config().server.clone(),
        })
    }

    /// Serves until `shutdown` completes; then stops accepting, fails readiness, lets in-flight
    /// calls finish for at most `server.shutdown_grace_ms`, and returns (cutting what is left).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let settings = self.cardinal.config().server.clone();
        let graceful = accept_until(
            self.listener,
            self.router,
            &settings,
            self.edge.tls.clone(),
            shutdown,
        )
        .await;
        self.cardinal.admission().drain();
        let grace = Duration::from_millis(settings.shutdown_grace_ms);
        tracing::info!(
            grace_ms = settings.shutdown_grace_ms,
            "draining connections"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                grace_ms = settings.shutdown_grace_ms,
                "shutdown grace period over: cutting the calls still in flight"
            );
        }
        // The cards of the calls just answered are in the store before the process exits.
        if let Some(store) = self.edge.store() {
            store.flush().await;
        }
        Ok(())
    }
}

/// The bound admin listener.
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
    settings: ServerConfig,
}

impl AdminServer {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes (stop it after the EHR-facing port has drained, so
    /// `/readyz` says `draining` meanwhile).
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let graceful =
            accept_until(self.listener, self.router, &self.settings, None, shutdown).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    }
}

/// Accepts connections (TLS when `tls` is set) until `shutdown`; returns the connections still open.
async fn accept_until(
    listener: TcpListener,
    router: Router,
    settings: &ServerConfig,
    tls: Option<Arc<TlsReloader>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> GracefulShutdown {
    let builder = Arc::new(connection_builder(settings));
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let first_byte = Duration::from_millis(settings.header_read_timeout_ms);
    let service = TowerToHyperService::new(router);
    tokio::pin!(shutdown);
    loop {
        // At the connection limit, further clients wait in the kernel's backlog.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut shutdown => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: wait a moment
                // rather than spin; the listener itself is fine.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without TCP_NODELAY, small gRPC responses wait on Nagle's algorithm (~40 ms per call).
        let _ = stream.set_nodelay(true);
        let builder = Arc::clone(&builder);
        let service = service.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|tls| tls.acceptor());
        tokio::spawn(async move {
            let _slot = slot;
            // The HTTP/1-or-2 detection waits for bytes without a timer of its own: a client
            // that connects and sends nothing is closed here.
            if !first_byte_within(&stream, first_byte).await {
                return;
            }
            match acceptor {
                None => {
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
                Some(acceptor) => {
                    // The handshake is bounded like the headers that follow it.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(first_byte, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let connection =
                        builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let _ = watcher.watch(connection.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    graceful
}

/// HTTP/1 and HTTP/2 with Cardinal's limits.
fn connection_builder(settings: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header_timeout = Duration::from_millis(settings.header_read_timeout_ms);
    builder
        .http1()
        .timer(TokioTimer::new())
        // Also bounds how long a keep-alive connection may sit idle between requests.
        .header_read_timeout(header_timeout)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        // Bounds the "rapid reset" pattern: streams opened and cancelled before they are served.
        .max_pending_accept_reset_streams(64)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Whether the client sends a first byte within `limit` (one that closes or fails is not served).
async fn first_byte_within(stream: &TcpStream, limit: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(limit, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}
