//! Configuration: built-in defaults, then a TOML file, then `CARDINAL_*` environment variables
//! (nested keys with `__`, e.g. `CARDINAL_SANDBOX__MAX_OPERATIONS=500000`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::audit::AuditConfig;
use crate::auth::{AuthConfig, AuthMode};
use crate::engine::SandboxLimits;
use crate::prefetch::PrefetchConfig;
use crate::store::StoreConfig;
use crate::terminology::TerminologyConfig;
use crate::transport::TlsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log pipelines.
    Json,
    /// Human-readable, for terminals.
    Pretty,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the one port serving HTTP/JSON and gRPC (the EHR-facing port).
    pub listen: SocketAddr,
    /// Address of the operators' port: `/metrics`, `/healthz`, `/readyz` and admin calls. Never
    /// exposed to EHRs.
    pub admin_listen: SocketAddr,
    /// A file holding the bearer token the operators' admin calls (rule-set reload, analytics)
    /// need. Unset: those calls are open on a loopback `admin_listen` and refused on any other
    /// address. Probes and `/metrics` never need it.
    pub admin_token_file: Option<PathBuf>,
    /// Where Cardinal keeps its own files (the audit trail); relative paths in `[audit]` are below it.
    pub data_dir: PathBuf,
    /// Directory holding the CDS services (one folder with a `service.toml` each).
    pub rules_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Whether callers may pin the evaluation time (header, gRPC field, request extension). Off in
    /// production: a caller could move "now" and suppress a card.
    pub allow_evaluation_time_override: bool,
    /// Hook calls evaluated at once (default: the number of CPUs; evaluation is CPU work).
    pub max_concurrent_evaluations: usize,
    /// Calls admitted beyond those evaluating (prefetching or waiting for a slot). A call arriving
    /// when all are taken is refused at once with 503 / `UNAVAILABLE`.
    pub max_queued_calls: usize,
    /// An admitted call must start evaluating within this many milliseconds of its arrival
    /// (prefetch included), or it is refused with 503 / `UNAVAILABLE` instead of answered late.
    pub queue_timeout_ms: u64,
    /// Cards one response may carry; a rule whose cards would go beyond is reported instead.
    pub max_cards_per_response: usize,
    /// Bytes of cards one response may carry; a rule whose cards would go beyond is reported instead.
    pub max_response_bytes: usize,
    /// Whether `POST /cds-services/{id}/explain` answers (every rule's verdict, facts and
    /// conditions, for rule authors). Off in production: the report can quote patient data.
    pub explain_endpoint: bool,
    /// Whether the admin listener serves the rule-authoring playground (`/playground`). Set only by
    /// `serve --dev` ([`Config::development`]), never by a file or the environment: the playground
    /// writes rule files.
    #[serde(skip)]
    pub playground: bool,
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` syntax), overridden by `RUST_LOG`.
    pub log_filter: String,
    pub sandbox: SandboxLimits,
    /// Terminology sources: their order and an optional remote FHIR terminology server.
    pub terminology: TerminologyConfig,
    /// Fetching the prefetch keys an EHR did not send.
    pub prefetch: PrefetchConfig,
    /// Connections: limits, timeouts, graceful shutdown.
    pub server: ServerConfig,
    /// Hot reload of the rules directory.
    pub reload: ReloadConfig,
    /// Who may call: CDS Hooks JWT verification.
    pub auth: AuthConfig,
    /// TLS on the shared port (plain HTTP when no certificate is configured).
    pub tls: TlsConfig,
    /// The audit trail of hook and feedback calls.
    pub audit: AuditConfig,
    /// The store of cards, outcomes and feedback behind the analytics.
    pub store: StoreConfig,
}

/// Hot reload: a new rule set is loaded, compiled and tested beside the one serving, and swapped in
/// only when all of that succeeds. SIGHUP and the admin call always reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when a file in the rules directory changes (including a Kubernetes ConfigMap update).
    pub watch: bool,
    /// A burst of file events (an editor saving, `git pull`, a ConfigMap swap) becomes one reload
    /// once the directory has been quiet this long.
    pub debounce_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce_ms: 500,
        }
    }
}

/// Connection handling. The defaults close connections that hold resources without sending a
/// request, and finish a shutdown before Kubernetes' 30 s grace period ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Open connections at most; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// A connection must deliver its first byte, and then each request's headers, within this time;
    /// an HTTP/1 keep-alive connection idle for longer is closed. (HTTP/2 connections stay open while
    /// the client answers keep-alive pings, sent every 30 s; `max_connections` bounds them.)
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this time.
    pub body_read_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// Largest header block accepted (HTTP/1 and HTTP/2).
    pub max_header_bytes: usize,
    /// On SIGTERM: stop accepting, fail readiness, finish in-flight calls for at most this long, then
    /// exit (in-flight calls past it are cut).
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 12_000,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            http2_max_concurrent_streams: 128,
            max_header_bytes: 32 * 1024,
            shutdown_grace_ms: 20_000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
            admin_token_file: None,
            data_dir: PathBuf::from("data"),
            rules_dir: PathBuf::from("rules"),
            max_body_bytes: 5 * 1024 * 1024,
            allow_evaluation_time_override: false,
            max_concurrent_evaluations: std::thread::available_parallelism()
                .map(std::num::NonZeroUsize::get)
                .unwrap_or(2),
            max_queued_calls: 32,
            queue_timeout_ms: 500,
            max_cards_per_response: 50,
            max_response_bytes: 1024 * 1024,
            explain_endpoint: false,
            playground: false,
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            sandbox: SandboxLimits::default(),
            terminology: TerminologyConfig::default(),
            prefetch: PrefetchConfig::default(),
            server: ServerConfig::default(),
            reload: ReloadConfig::default(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            audit: AuditConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// `port`, `port_8080_tcp_addr`, `service_host`, `service_port_http`...: the variables Kubernetes
/// sets for a Service, with the `CARDINAL_` prefix removed.
fn is_kubernetes_service_link(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "port"
        || key.starts_with("port_")
        || key.starts_with("service_host")
        || key.starts_with("service_port")
}

impl Config {
    /// Defaults, then `file` (if given), then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    file.display()
                )));
            }
            figment = figment.merge(Toml::file(file));
        }
        // CARDINAL_CONFIG names the file itself; it is not a setting. Kubernetes injects
        // CARDINAL_PORT, CARDINAL_SERVICE_HOST, ... for a Service named `cardinal`: not settings either.
        figment = figment.merge(
            Env::prefixed("CARDINAL_")
                .filter(|key| !is_kubernetes_service_link(key.as_str()))
                .ignore(&["config"])
                .split("__"),
        );
        let config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The development profile (`cardinal serve --dev`): no authentication, callers may pin the
    /// evaluation time, the explain endpoint answers and the admin listener serves the playground.
    /// Never for a deployment that sees patient data.
    pub fn development(mut self) -> Self {
        self.allow_evaluation_time_override = true;
        self.explain_endpoint = true;
        self.playground = true;
        self.auth.mode = AuthMode::Off;
        self
    }

    /// The admission settings.
    pub fn admission(&self) -> crate::admission::AdmissionLimits {
        crate::admission::AdmissionLimits {
            max_concurrent_evaluations: self.max_concurrent_evaluations,
            max_queued_calls: self.max_queued_calls,
            queue_timeout: std::time::Duration::from_millis(self.queue_timeout_ms),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError("max_body_bytes must be positive".into()));
        }
        if self.max_concurrent_evaluations == 0 {
            return Err(ConfigError(
                "max_concurrent_evaluations must be positive".into(),
            ));
        }
        if self.queue_timeout_ms == 0
            || self.max_cards_per_response == 0
            || self.max_response_bytes == 0
        {
            return Err(ConfigError(
                "queue_timeout_ms, max_cards_per_response and max_response_bytes must be positive"
                    .into(),
            ));
        }
        let s = &self.server;
        if s.max_connections == 0
            || s.header_read_timeout_ms == 0
            || s.body_read_timeout_ms == 0
            || s.http2_max_concurrent_streams == 0
            || s.max_header_bytes < 1024
            || s.shutdown_grace_ms == 0
        {
            return Err(ConfigError(
                "server limits must be positive (max_header_bytes at least 1024)".into(),
            ));
        }
        if self.sandbox.max_operations == 0
            || self.sandbox.call_max_operations == 0
            || self.sandbox.backstop_ms == 0
        {
            return Err(ConfigError("sandbox limits must be positive".into()));
        }
        if self.reload.debounce_ms == 0 {
            return Err(ConfigError("reload.debounce_ms must be positive".into()));
        }
        self.terminology.validate().map_err(ConfigError)?;
        self.auth.validate().map_err(ConfigError)?;
        if self.audit.queue_capacity == 0 {
            return Err(ConfigError("audit.queue_capacity must be positive".into()));
        }
        self.store.validate().map_err(ConfigError)?;
        if self.prefetch.deadline_ms == 0
            || self.prefetch.max_pages == 0
            || self.prefetch.max_url_length == 0
        {
            return Err(ConfigError("prefetch limits must be positive".into()));
        }
        Ok(())
    }
}
