//! Test harness: starts a real Cardinal server (HTTP + gRPC on one port) on 127.0.0.1:0, with its
//! admin listener (metrics, health, readiness) on another loopback port.
#![allow(dead_code)]

pub mod browser;
pub mod cdp;
pub mod fhir_server;
pub mod jwt;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::transport::{Edge, Server};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A request fixture from `tests/fixtures/requests/`.
pub fn request_fixture(name: &str) -> Value {
    let path = project_path(&format!("tests/fixtures/requests/{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub struct TestServer {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` with TLS configured.
    pub base: String,
    /// The admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_addr: SocketAddr,
    pub cardinal: Cardinal,
    /// Authentication, audit and TLS of the server.
    pub edge: Edge,
    /// The data directory (audit trail) when the test did not choose one.
    data_dir: Option<tempfile::TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves the project's shipped `rules/`.
    pub async fn start() -> Self {
        Self::start_with_rules(&project_path("rules")).await
    }

    /// The test configuration: the rules in `rules`, with the development profile (no
    /// authentication, the explain endpoint on, evaluation time pinning allowed).
    pub async fn start_with_rules(rules: &Path) -> Self {
        let config = Config {
            rules_dir: rules.to_path_buf(),
            ..Config::default().development()
        };
        Self::start_with(config).await
    }

    /// The development profile with authentication on: tokens of the CDS Hooks sandbox's key
    /// (see [`jwt`]) are accepted.
    pub async fn start_with_auth(rules: &Path) -> Self {
        let mut config = Config {
            rules_dir: rules.to_path_buf(),
            ..Config::default().development()
        };
        config.auth = jwt::sandbox_auth();
        Self::start_with(config).await
    }

    /// Serves `config`. Unless the test set `data_dir`, the audit trail goes to a temporary one. A
    /// configuration without `[[auth.issuers]]` is served without authentication (as `serve --dev`
    /// would), so tests about other things need no tokens; tests about authentication configure
    /// issuers (see [`TestServer::start_with_auth`]).
    pub async fn start_with(mut config: Config) -> Self {
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        if config.auth.issuers.is_empty() {
            config.auth.mode = cardinal::auth::AuthMode::Off;
        }
        let data_dir = if config.data_dir == Config::default().data_dir {
            let dir = tempfile::tempdir().expect("temporary data directory");
            config.data_dir = dir.path().to_path_buf();
            Some(dir)
        } else {
            None
        };
        let tls = config.tls.cert.is_some();
        let cardinal =
            Cardinal::load(config).unwrap_or_else(|e| panic!("rules failed to load:\n{e}"));
        let server = Server::bind(cardinal.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .unwrap_or_else(|e| panic!("server: {e}"));
        let addr = server.local_addr().expect("local addr");
        let edge = server.edge().clone();
        // A test that sets an ephemeral admin address (e.g. 0.0.0.0:0) gets it; else loopback.
        let admin_listen = if cardinal.config().admin_listen.port() == 0 {
            cardinal.config().admin_listen
        } else {
            "127.0.0.1:0".parse().expect("addr")
        };
        let admin = server
            .bind_admin(admin_listen)
            .expect("bind the admin listener");
        let admin_addr = admin.local_addr().expect("admin addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let (stop_admin, admin_stopped) = oneshot::channel::<()>();
            let admin = tokio::spawn(admin.serve(async {
                let _ = admin_stopped.await;
            }));
            server
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("server");
            let _ = stop_admin.send(());
            let _ = admin.await;
        });
        let base = if tls {
            format!("https://localhost:{}", addr.port())
        } else {
            format!("http://{addr}")
        };
        Self {
            addr,
            base,
            admin_addr,
            cardinal,
            edge,
            data_dir,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// The data directory (where the audit trail is written).
    pub fn data_dir(&self) -> PathBuf {
        self.cardinal.config().data_dir.clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A tonic channel to the same port (gRPC shares it with HTTP).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.base.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("grpc connect")
    }

    /// A tonic channel to the admin listener (`cardinal.v1.RuleSetAdmin`).
    pub async fn admin_grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.admin_addr))
            .expect("endpoint")
            .connect()
            .await
            .expect("admin grpc connect")
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The services of the CDC opioid prescribing pack in `rules/opioid-cds/`.
#[allow(dead_code)]
pub const OPIOID_SERVICES: [&str; 16] = [
    "hello-world-patient-view",
    "opioidcds-01",
    "opioidcds-02",
    "opioidcds-03",
    "opioidcds-03-patient-view",
    "opioidcds-04-05",
    "opioidcds-06",
    "opioidcds-07",
    "opioidcds-08",
    "opioidcds-09",
    "opioidcds-10",
    "opioidcds-10-order-sign",
    "opioidcds-10-patient-view",
    "opioidcds-11",
    "opioidcds-11-patient-view",
    "opioidcds-12-patient-view",
];
