//! One listener, two protocols: the CDS Hooks HTTP routes and the gRPC services share a port (gRPC is
//! HTTP/2 with `application/grpc`; axum routes by path).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_http::cors::{Any, CorsLayer};

use crate::evaluator::Cardinal;

use super::{EVALUATION_TIME_HEADER, grpc, http, observe};

/// The complete router: HTTP/JSON with CORS and a body limit, gRPC, and a JSON 404 for the rest.
pub async fn router(cardinal: Cardinal) -> Router {
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
        .expose_headers([header::HeaderName::from_static(observe::TRACE_ID_HEADER)])
        .max_age(std::time::Duration::from_secs(3600));
    let http = http::routes(cardinal.clone())
        .fallback(http::not_found)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(cors);
    // tonic's router answers unknown gRPC methods with `UNIMPLEMENTED`, as gRPC clients expect.
    let grpc = grpc::routes(cardinal).await.into_axum_router();
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
        .layer(axum::middleware::from_fn(observe::observe))
}

pub(super) fn is_grpc(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// A bound, not yet serving, Cardinal server.
pub struct Server {
    listener: TcpListener,
    router: Router,
}

impl Server {
    pub async fn bind(cardinal: Cardinal, addr: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            listener,
            router: router(cardinal).await,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // Without TCP_NODELAY, small gRPC responses wait on Nagle's algorithm (~40 ms per call).
        let listener = self.listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
