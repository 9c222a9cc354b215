//! Configuration: built-in defaults, then a TOML file, then `CARDINAL_*` environment variables
//! (nested keys with `__`, e.g. `CARDINAL_SANDBOX__MAX_OPERATIONS=500000`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::engine::SandboxLimits;
use crate::prefetch::PrefetchConfig;
use crate::terminology::TerminologyConfig;

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
    /// Address of the one port serving HTTP/JSON and gRPC.
    pub listen: SocketAddr,
    /// Directory holding the CDS services (one folder with a `service.toml` each).
    pub rules_dir: PathBuf,
    /// Largest accepted request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Whether callers may pin the evaluation time (header, gRPC field, request extension).
    pub allow_evaluation_time_override: bool,
    /// Hook calls evaluated at once; further calls wait their turn.
    pub max_concurrent_evaluations: usize,
    /// Whether `POST /cds-services/{id}/explain` answers (every rule's verdict, facts and
    /// conditions, for rule authors). Off in production: the report can quote patient data.
    pub explain_endpoint: bool,
    pub log_format: LogFormat,
    /// Default log filter (`RUST_LOG` syntax), overridden by `RUST_LOG`.
    pub log_filter: String,
    pub sandbox: SandboxLimits,
    /// Terminology sources: their order and an optional remote FHIR terminology server.
    pub terminology: TerminologyConfig,
    /// Fetching the prefetch keys an EHR did not send.
    pub prefetch: PrefetchConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            rules_dir: PathBuf::from("rules"),
            max_body_bytes: 5 * 1024 * 1024,
            allow_evaluation_time_override: true,
            max_concurrent_evaluations: 64,
            explain_endpoint: false,
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            sandbox: SandboxLimits::default(),
            terminology: TerminologyConfig::default(),
            prefetch: PrefetchConfig::default(),
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

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 {
            return Err(ConfigError("max_body_bytes must be positive".into()));
        }
        if self.max_concurrent_evaluations == 0 {
            return Err(ConfigError(
                "max_concurrent_evaluations must be positive".into(),
            ));
        }
        if self.sandbox.max_operations == 0
            || self.sandbox.call_max_operations == 0
            || self.sandbox.backstop_ms == 0
        {
            return Err(ConfigError("sandbox limits must be positive".into()));
        }
        self.terminology.validate().map_err(ConfigError)?;
        if self.prefetch.deadline_ms == 0
            || self.prefetch.max_pages == 0
            || self.prefetch.max_url_length == 0
        {
            return Err(ConfigError("prefetch limits must be positive".into()));
        }
        Ok(())
    }
}
