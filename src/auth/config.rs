//! `[auth]` in Cardinal's configuration: which EHRs may call, and how their tokens are checked.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Whether calls must carry a JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every call (discovery included) carries a JWT signed by a configured issuer.
    Required,
    /// No authentication: only for `serve --dev`, which says so loudly.
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The URL EHRs call Cardinal by (`https://cds.example.org`): a token's `aud` must equal it plus
    /// the request path. Unset: the request's own scheme and `Host`.
    pub public_base_url: Option<String>,
    /// Tolerance on `exp`, `iat` and `nbf`.
    pub clock_skew_secs: u64,
    /// How long a `jti` is remembered; tokens that live longer (`exp` beyond it) are refused, so
    /// none can be replayed after its `jti` is forgotten.
    pub jti_ttl_secs: u64,
    /// A token with an unknown `kid` refetches its issuer's key set at most once per this interval.
    pub jwks_refetch_secs: u64,
    /// Issuers whose callers may use the explain endpoint (it can quote patient data).
    pub explain_issuers: Vec<String>,
    /// The EHRs trusted to call.
    pub issuers: Vec<IssuerConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Required,
            public_base_url: None,
            clock_skew_secs: 60,
            jti_ttl_secs: 3600,
            jwks_refetch_secs: 60,
            explain_issuers: Vec::new(),
            issuers: Vec::new(),
        }
    }
}

/// One trusted EHR (`[[auth.issuers]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The token's `iss`.
    pub iss: String,
    /// Its JWK Set, fetched over HTTPS (plain HTTP only to a loopback address), cached, and
    /// refetched when a token names an unknown `kid`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Or its JWK Set in a file (re-read on an unknown `kid`).
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// `jku` header values accepted from this issuer. Keys always come from `jwks_url` or
    /// `jwks_file`, never from the `jku` itself.
    #[serde(default)]
    pub jku_allowed: Vec<String>,
    /// The `fhirServer` values this issuer may send; Cardinal fetches prefetch from no other.
    #[serde(default)]
    pub fhir_servers: Vec<String>,
    /// When set, the token's `tenant` claim must equal it.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl AuthConfig {
    /// Checks what can be checked without reading keys.
    pub fn validate(&self) -> Result<(), String> {
        if self.jti_ttl_secs <= self.clock_skew_secs {
            return Err("auth.jti_ttl_secs must be larger than auth.clock_skew_secs".into());
        }
        if self.jwks_refetch_secs == 0 {
            return Err("auth.jwks_refetch_secs must be positive".into());
        }
        if let Some(base) = &self.public_base_url {
            let url = reqwest::Url::parse(base)
                .map_err(|_| "auth.public_base_url must be an absolute URL".to_owned())?;
            if !matches!(url.scheme(), "http" | "https") || url.query().is_some() {
                return Err("auth.public_base_url must be an http(s) URL without a query".into());
            }
        }
        for issuer in &self.issuers {
            if issuer.iss.is_empty() {
                return Err("auth.issuers: `iss` must not be empty".into());
            }
            match (&issuer.jwks_url, &issuer.jwks_file) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "auth.issuers `{}`: exactly one of jwks_url and jwks_file",
                        issuer.iss
                    ));
                }
            }
            if let Some(url) = &issuer.jwks_url {
                super::keys::check_jwks_url(url)
                    .map_err(|why| format!("auth.issuers `{}`: jwks_url {why}", issuer.iss))?;
            }
        }
        let mut names: Vec<&str> = self.issuers.iter().map(|i| i.iss.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w.first() == w.get(1)) {
            return Err("auth.issuers: each `iss` may appear once".into());
        }
        Ok(())
    }
}
