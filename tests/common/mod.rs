//! Test harness: starts a real Cardinal server (HTTP + gRPC on one port) on 127.0.0.1:0.
#![allow(dead_code)]

pub mod fhir_server;
pub mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::transport::Server;
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
    pub base: String,
    pub cardinal: Cardinal,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Serves the project's shipped `rules/`.
    pub async fn start() -> Self {
        Self::start_with_rules(&project_path("rules")).await
    }

    /// The test configuration: the rules in `rules`, with the development profile (the explain
    /// endpoint on, evaluation time pinning allowed).
    pub async fn start_with_rules(rules: &Path) -> Self {
        let config = Config {
            rules_dir: rules.to_path_buf(),
            ..Config::default().development()
        };
        Self::start_with(config).await
    }

    pub async fn start_with(mut config: Config) -> Self {
        config.listen = "127.0.0.1:0".parse().expect("loopback address");
        let cardinal =
            Cardinal::load(config).unwrap_or_else(|e| panic!("rules failed to load:\n{e}"));
        let server = Server::bind(cardinal.clone(), "127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind 127.0.0.1:0");
        let addr = server.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .serve(async {
                    let _ = rx.await;
                })
                .await
                .expect("server");
        });
        Self {
            addr,
            base: format!("http://{addr}"),
            cardinal,
            shutdown: Some(tx),
            handle: Some(handle),
        }
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
