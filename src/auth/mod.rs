//! Who is calling: CDS Hooks 2.0 JWT verification, the same for HTTP (`Authorization: Bearer`) and
//! gRPC (`authorization` metadata).
//!
//! An EHR signs every call with its own key (ES384/RS384 recommended; ES256, RS256, RS512 and PS*
//! also accepted; never `none` or HMAC). Cardinal trusts the issuers configured in `[auth]` only:
//! the token's `iss` picks the issuer, whose JWK Set (from its configured URL or file, never from the
//! token's `jku`) must hold the `kid`; then the signature, `exp`/`iat`/`nbf` within the clock skew,
//! the `tenant` when configured, a `jti` not seen before, and finally `aud`, which must be the exact
//! URL called (for gRPC, the CDS Hooks URL of the same call). Every failure is a bare 401 to the
//! caller; the reason ([`Rejection`]) goes to the log and metrics, never the token.

mod config;
mod keys;
mod replay;

pub use config::{AuthConfig, AuthMode, IssuerConfig};
pub use keys::{KeySource, KeysError};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use keys::IssuerKeys;
use replay::{Replay, ReplayCache};

/// The verified caller of one call: travels with it (like the trace id) to prefetch and the audit
/// trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// The token's `iss`: a configured issuer.
    pub issuer: String,
    /// The token's `sub` (e.g. the EHR's client id), when it has one.
    pub subject: Option<String>,
    /// The token's `tenant`, when it has one.
    pub tenant: Option<String>,
}

/// Why a token was refused. Fixed words: the caller only ever sees a bare 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("no bearer token")]
    Missing,
    #[error("not a JWT, or an unsupported alg")]
    Malformed,
    #[error("alg not accepted (none and HMAC never are)")]
    Algorithm,
    #[error("no kid in the header")]
    NoKid,
    #[error("unknown issuer")]
    UnknownIssuer,
    #[error("jku not on the issuer's allow-list")]
    Jku,
    #[error("kid not in the issuer's key set")]
    UnknownKid,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid")]
    NotYetValid,
    #[error("issued in the future")]
    IssuedInFuture,
    #[error("lives longer than the replay window")]
    TooLong,
    #[error("required claims missing or malformed")]
    Claims,
    #[error("tenant does not match")]
    Tenant,
    #[error("jti already seen")]
    Replayed,
    #[error("replay cache full")]
    ReplayCacheFull,
    #[error("aud is not the URL called")]
    Audience,
}

impl Rejection {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::NoKid => "no_kid",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Jku => "jku",
            Self::UnknownKid => "unknown_kid",
            Self::Signature => "signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::TooLong => "too_long",
            Self::Claims => "claims",
            Self::Tenant => "tenant",
            Self::Replayed => "replayed",
            Self::ReplayCacheFull => "replay_cache_full",
            Self::Audience => "audience",
        }
    }
}

/// Why the authentication settings cannot be used (start-up).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Config(String),
    #[error("auth.issuers `{issuer}`: {source}")]
    Keys {
        issuer: String,
        #[source]
        source: KeysError,
    },
}

/// A token whose signature, issuer, times and `jti` are verified; `aud` is checked against the
/// called URL with [`Verified::caller_for`], once that URL is known.
#[derive(Debug, Clone)]
pub struct Verified {
    caller: Caller,
    audiences: Vec<String>,
}

impl Verified {
    /// The caller, if the token was made for `url` (trailing slashes aside).
    pub fn caller_for(&self, url: &str) -> Result<Caller, Rejection> {
        let url = url.trim_end_matches('/');
        if self
            .audiences
            .iter()
            .any(|aud| aud.trim_end_matches('/') == url)
        {
            Ok(self.caller.clone())
        } else {
            Err(Rejection::Audience)
        }
    }
}

struct Issuer {
    config: IssuerConfig,
    keys: IssuerKeys,
}

/// Verifies tokens against the configured issuers. One per server; cheap to share.
pub struct Authenticator {
    issuers: HashMap<String, Issuer>,
    skew: u64,
    jti_ttl: u64,
    replay: ReplayCache,
    public_base_url: Option<String>,
    explain_issuers: Vec<String>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuers", &self.issuers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The claims Cardinal reads; `exp` and `nbf` are checked by `jsonwebtoken`.
#[derive(Deserialize)]
struct Claims {
    iss: String,
    #[serde(default)]
    sub: Option<String>,
    aud: Audience,
    iat: i64,
    exp: i64,
    jti: String,
    #[serde(default)]
    tenant: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: String,
}

/// Algorithms Cardinal verifies with. HMAC and `none` are not among them.
const ACCEPTED: [Algorithm; 8] = [
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Longest `jti` accepted (they are remembered).
const MAX_JTI_LEN: usize = 256;

impl Authenticator {
    /// `None` when authentication is off. Reads `jwks_file` key sets now; `jwks_url` ones are
    /// fetched when first needed.
    pub fn from_config(config: &AuthConfig) -> Result<Option<Arc<Self>>, AuthError> {
        if config.mode == AuthMode::Off {
            return Ok(None);
        }
        config.validate().map_err(AuthError::Config)?;
        if config.issuers.is_empty() {
            return Err(AuthError::Config(
                "auth.mode = \"required\" needs at least one [[auth.issuers]] (or `serve --dev` for \
                 a development server without authentication)"
                    .into(),
            ));
        }
        let client = reqwest::Client::builder()
            // A redirect could lead the key fetch anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cardinal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| AuthError::Config("the JWK Set client could not be built".into()))?;
        let refetch = Duration::from_secs(config.jwks_refetch_secs);
        let mut issuers = HashMap::new();
        for issuer in &config.issuers {
            let source = match (&issuer.jwks_url, &issuer.jwks_file) {
                (Some(url), _) => KeySource::Url(
                    keys::check_jwks_url(url)
                        .map_err(|why| AuthError::Config(format!("jwks_url {why}")))?,
                ),
                (None, Some(file)) => KeySource::File(file.clone()),
                (None, None) => {
                    return Err(AuthError::Config(format!(
                        "auth.issuers `{}` has no key source",
                        issuer.iss
                    )));
                }
            };
            let keys = IssuerKeys::new(source, client.clone(), refetch);
            keys.load_file_now().map_err(|source| AuthError::Keys {
                issuer: issuer.iss.clone(),
                source,
            })?;
            issuers.insert(
                issuer.iss.clone(),
                Issuer {
                    config: issuer.clone(),
                    keys,
                },
            );
        }
        Ok(Some(Arc::new(Self {
            issuers,
            skew: config.clock_skew_secs,
            jti_ttl: config.jti_ttl_secs,
            replay: ReplayCache::new(Duration::from_secs(config.jti_ttl_secs)),
            public_base_url: config
                .public_base_url
                .as_ref()
                .map(|u| u.trim_end_matches('/').to_owned()),
            explain_issuers: config.explain_issuers.clone(),
        })))
    }

    /// The configured public base URL (no trailing `/`), if any.
    pub fn public_base_url(&self) -> Option<&str> {
        self.public_base_url.as_deref()
    }

    /// Whether `caller` may use the explain endpoint.
    pub fn may_explain(&self, caller: &Caller) -> bool {
        self.explain_issuers.contains(&caller.issuer)
    }

    /// How many times `issuer`'s key set has been read (metrics, tests).
    pub fn key_reads(&self, issuer: &str) -> Option<u64> {
        self.issuers.get(issuer).map(|i| i.keys.reads())
    }

    /// Verifies everything but `aud` (see [`Verified::caller_for`]) and consumes the `jti`.
    pub async fn verify(&self, token: &str) -> Result<Verified, Rejection> {
        // `alg: none` and unknown algorithms fail here: jsonwebtoken has no such variant.
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        if !ACCEPTED.contains(&header.alg) {
            return Err(Rejection::Algorithm);
        }
        let kid = header.kid.as_deref().ok_or(Rejection::NoKid)?;
        // Only to pick the issuer whose keys then verify the token (and this claim with it).
        let unverified: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|_| Rejection::Claims)?;
        let issuer = self
            .issuers
            .get(&unverified.iss)
            .ok_or(Rejection::UnknownIssuer)?;
        if let Some(jku) = &header.jku
            && !issuer.config.jku_allowed.contains(jku)
        {
            return Err(Rejection::Jku);
        }
        let key = issuer.keys.key(kid).await.ok_or(Rejection::UnknownKid)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(Rejection::Algorithm);
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.skew;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // Checked against the called URL by `caller_for`.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[issuer.config.iss.as_str()]);
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Rejection::Signature,
                ErrorKind::ExpiredSignature => Rejection::Expired,
                ErrorKind::ImmatureSignature => Rejection::NotYetValid,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    Rejection::Algorithm
                }
                ErrorKind::Json(_)
                | ErrorKind::MissingRequiredClaim(_)
                | ErrorKind::InvalidIssuer => Rejection::Claims,
                _ => Rejection::Malformed,
            })?
            .claims;
        let now = chrono::Utc::now().timestamp();
        let skew = i64::try_from(self.skew).unwrap_or(i64::MAX);
        let ttl = i64::try_from(self.jti_ttl).unwrap_or(i64::MAX);
        if claims.iat > now.saturating_add(skew) {
            return Err(Rejection::IssuedInFuture);
        }
        // A token must expire (skew included) before its jti is forgotten.
        if claims.exp > now.saturating_add(ttl).saturating_sub(skew) {
            return Err(Rejection::TooLong);
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(Rejection::Claims);
        }
        if let Some(tenant) = &issuer.config.tenant
            && claims.tenant.as_ref() != Some(tenant)
        {
            return Err(Rejection::Tenant);
        }
        self.replay
            .accept(&claims.iss, &claims.jti)
            .map_err(|why| match why {
                Replay::Seen => Rejection::Replayed,
                Replay::Full => Rejection::ReplayCacheFull,
            })?;
        let audiences = match claims.aud {
            Audience::One(aud) => vec![aud],
            Audience::Many(auds) => auds,
        };
        Ok(Verified {
            caller: Caller {
                issuer: claims.iss,
                subject: claims.sub,
                tenant: claims.tenant,
            },
            audiences,
        })
    }
}
