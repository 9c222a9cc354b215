//! The `[terminology]` configuration section: which sources answer, in which order, and how the
//! remote FHIR terminology server is reached and cached.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A terminology source named in `terminology.order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Value sets and code systems shipped in the rule packs (`valuesets/`, `codesystems/`).
    Local,
    /// The FHIR terminology server of `terminology.remote`.
    Remote,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TerminologyConfig {
    /// Sources asked in this order; the first that knows the value set (or code system) answers.
    /// `remote` is skipped when no remote server is configured.
    pub order: Vec<SourceKind>,
    /// A FHIR terminology server; none by default.
    pub remote: Option<RemoteSettings>,
}

impl Default for TerminologyConfig {
    fn default() -> Self {
        Self {
            order: vec![SourceKind::Local, SourceKind::Remote],
            remote: None,
        }
    }
}

impl TerminologyConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.order.is_empty() {
            return Err("terminology.order must name at least one source".into());
        }
        for (i, kind) in self.order.iter().enumerate() {
            if self.order.iter().take(i).any(|k| k == kind) {
                return Err(format!("terminology.order names {kind:?} twice"));
            }
        }
        if let Some(remote) = &self.remote {
            if !self.order.contains(&SourceKind::Remote) {
                return Err(
                    "terminology.remote is configured but `remote` is not in terminology.order"
                        .into(),
                );
            }
            remote.validate()?;
        }
        Ok(())
    }
}

/// How to reach and cache a remote FHIR terminology server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteSettings {
    /// Base URL of the FHIR server, e.g. `https://tx.example.org/fhir` (operations are appended).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`. A secret: never logged, redacted in `Debug`.
    pub bearer_token: Option<Secret>,
    /// Upper bound of one operation, retries included (a rule's own deadline may be shorter).
    pub timeout_ms: u64,
    /// Retries after a 5xx answer, a timeout or a connection error (never after a 4xx).
    pub retries: u32,
    /// Wait before the first retry; doubled for each further one.
    pub backoff_ms: u64,
    /// How long an answer (positive or negative) is reused without asking the server.
    pub cache_ttl_secs: u64,
    /// Most answers kept in the cache.
    pub cache_capacity: u64,
    /// How long a last-known-good answer may be served when the server fails (0 disables).
    pub stale_ttl_secs: u64,
    /// Expand, once at start-up, every value set the rules name that no earlier source knows, so
    /// membership needs no per-code call.
    pub pre_expand: bool,
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            bearer_token: None,
            timeout_ms: 2_000,
            retries: 2,
            backoff_ms: 50,
            cache_ttl_secs: 600,
            cache_capacity: 100_000,
            stale_ttl_secs: 86_400,
            pre_expand: true,
        }
    }
}

impl RemoteSettings {
    /// Settings for `base_url` with every other key at its default.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            ..Self::default()
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.backoff_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    pub fn stale_ttl(&self) -> Duration {
        Duration::from_secs(self.stale_ttl_secs)
    }

    pub fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.base_url).map_err(|e| {
            format!(
                "terminology.remote.base_url `{}` is not a URL: {e}",
                self.base_url
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(format!(
                "terminology.remote.base_url `{}` must be an http(s) URL",
                self.base_url
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "terminology.remote.base_url must not carry credentials; use bearer_token".into(),
            );
        }
        if self.timeout_ms == 0 {
            return Err("terminology.remote.timeout_ms must be positive".into());
        }
        if self.retries > 10 {
            return Err("terminology.remote.retries must be at most 10".into());
        }
        if self.cache_ttl_secs == 0 || self.cache_capacity == 0 {
            return Err(
                "terminology.remote.cache_ttl_secs and cache_capacity must be positive".into(),
            );
        }
        if self
            .bearer_token
            .as_ref()
            .is_some_and(|t| t.expose().trim().is_empty())
        {
            return Err("terminology.remote.bearer_token is empty".into());
        }
        Ok(())
    }
}

/// A credential. `Debug` prints `<redacted>`; there is no `Display`, so it cannot end up in a log
/// line or an error message by accident. Serialised as the plain string (configuration layering).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}
