//! An issuer's signing keys: its JWK Set, read from a URL (HTTPS) or a file, cached, and read again
//! when a token names a `kid` the cache does not have, at most once per `jwks_refetch_secs`: a
//! stream of tokens with made-up `kid`s cannot make Cardinal hammer the issuer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use reqwest::Url;
use serde::Deserialize;
use tokio::sync::Mutex;

/// A key set older than this is read again when next used (a revoked key leaves the cache).
const MAX_AGE: Duration = Duration::from_secs(3600);
/// A JWK Set larger than this is refused.
const MAX_JWKS_BYTES: usize = 256 * 1024;
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where an issuer's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    Url(Url),
    File(PathBuf),
}

/// Why a key set could not be read. Its words name the source, never a token.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("the JWK Set could not be fetched: {0}")]
    Fetch(&'static str),
    #[error("the JWK Set file {path} could not be read: {error}")]
    File {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the JWK Set is not valid JSON with a `keys` array")]
    NotJwks,
    #[error("the JWK Set holds no usable signing key")]
    NoKeys,
}

/// `jwks_url` must be https, or http to a loopback address (a JWKS server on the same host).
pub fn check_jwks_url(url: &str) -> Result<Url, &'static str> {
    let parsed = Url::parse(url).map_err(|_| "is not an absolute URL")?;
    let loopback = match parsed.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        _ => Err("must be an https URL (plain http only to a loopback address)"),
    }
}

/// One verification key and what it may verify.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    /// The algorithms this key verifies: its declared `alg`, or every algorithm of its type
    /// (and curve) that Cardinal accepts.
    pub algorithms: Vec<Algorithm>,
}

/// The keys of one issuer, by `kid`.
#[derive(Default)]
struct KeySet {
    keys: HashMap<String, Arc<Key>>,
    read_at: Option<Instant>,
}

impl KeySet {
    fn fresh(&self) -> bool {
        self.read_at.is_some_and(|t| t.elapsed() < MAX_AGE)
    }
}

/// The cached keys of one issuer.
pub struct IssuerKeys {
    source: KeySource,
    client: reqwest::Client,
    refetch_every: Duration,
    set: RwLock<Arc<KeySet>>,
    /// When the source was last read (successfully or not); held while reading, so concurrent
    /// callers wait for one read instead of starting their own.
    last_read: Mutex<Option<Instant>>,
    /// Number of reads of the source (for metrics and tests).
    reads: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for IssuerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKeys")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl IssuerKeys {
    pub fn new(source: KeySource, client: reqwest::Client, refetch_every: Duration) -> Self {
        Self {
            source,
            client,
            refetch_every,
            set: RwLock::new(Arc::new(KeySet::default())),
            last_read: Mutex::new(None),
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Reads a file source now, so a missing or broken file stops start-up rather than every call.
    pub fn load_file_now(&self) -> Result<(), KeysError> {
        if let KeySource::File(path) = &self.source {
            let text = std::fs::read(path).map_err(|error| KeysError::File {
                path: path.clone(),
                error,
            })?;
            self.store(parse_jwks(&text)?);
        }
        Ok(())
    }

    /// How many times the source has been read.
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn current(&self) -> Arc<KeySet> {
        match self.set.read() {
            Ok(set) => Arc::clone(&set),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn store(&self, keys: HashMap<String, Arc<Key>>) {
        let set = Arc::new(KeySet {
            keys,
            read_at: Some(Instant::now()),
        });
        match self.set.write() {
            Ok(mut slot) => *slot = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }

    /// The key `kid`, reading the source again if it is unknown or the set is old (rate limited).
    pub async fn key(&self, kid: &str) -> Option<Arc<Key>> {
        let set = self.current();
        if set.fresh()
            && let Some(key) = set.keys.get(kid)
        {
            return Some(Arc::clone(key));
        }
        let mut last_read = self.last_read.lock().await;
        // Another caller may have read the set while this one waited.
        let set = self.current();
        if set.fresh()
            && let Some(key) = set.keys.get(kid)
        {
            return Some(Arc::clone(key));
        }
        let allowed = last_read.is_none_or(|t| t.elapsed() >= self.refetch_every);
        if allowed {
            *last_read = Some(Instant::now());
            self.reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self.read_source().await {
                Ok(keys) => {
                    tracing::info!(keys = keys.len(), "issuer key set read");
                    self.store(keys);
                }
                // The keys read before stay in use.
                Err(e) => tracing::warn!(error = %e, "issuer key set could not be read"),
            }
        }
        drop(last_read);
        self.current().keys.get(kid).cloned()
    }

    async fn read_source(&self) -> Result<HashMap<String, Arc<Key>>, KeysError> {
        let bytes = match &self.source {
            KeySource::File(path) => std::fs::read(path).map_err(|error| KeysError::File {
                path: path.clone(),
                error,
            })?,
            KeySource::Url(url) => self.fetch(url).await?,
        };
        parse_jwks(&bytes)
    }

    async fn fetch(&self, url: &Url) -> Result<Vec<u8>, KeysError> {
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(FETCH_TIMEOUT)
            .send()
            .await
            .map_err(|e| {
                KeysError::Fetch(if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "the server could not be reached"
                } else {
                    "the exchange failed"
                })
            })?;
        if !response.status().is_success() {
            return Err(KeysError::Fetch("the server answered an error status"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|_| KeysError::Fetch("the answer could not be read"))?
        {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(KeysError::Fetch("the answer is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The signing keys of a JWK Set, by `kid`. Keys without a `kid`, for encryption, of a type
/// Cardinal does not verify with (HMAC secrets among them), or that do not parse are skipped.
pub fn parse_jwks(bytes: &[u8]) -> Result<HashMap<String, Arc<Key>>, KeysError> {
    let raw: RawSet = serde_json::from_slice(bytes).map_err(|_| KeysError::NotJwks)?;
    let mut keys = HashMap::new();
    for value in raw.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        let Some(algorithms) = algorithms_of(&jwk) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        keys.insert(kid, Arc::new(Key { key, algorithms }));
    }
    if keys.is_empty() {
        return Err(KeysError::NoKeys);
    }
    Ok(keys)
}

/// The algorithms a key may verify: never HMAC (a public key must not double as a shared secret).
fn algorithms_of(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => return Some(by_type),
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::ES384) => Algorithm::ES384,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(_) => return None,
    };
    by_type.contains(&declared).then(|| vec![declared])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sandbox_key_set() {
        let text = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/jwt/sandbox-jwks.json"
        ))
        .expect("fixture");
        let keys = parse_jwks(&text).expect("jwks");
        let key = keys
            .get("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f")
            .expect("the sandbox kid");
        assert_eq!(key.algorithms, vec![Algorithm::ES384]);
    }

    #[test]
    fn skips_secrets_and_keys_without_kid() {
        let set = br#"{"keys":[
            {"kty":"oct","kid":"s","k":"c2VjcmV0"},
            {"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]}"#;
        assert!(matches!(parse_jwks(set), Err(KeysError::NoKeys)));
        assert!(matches!(parse_jwks(b"[]"), Err(KeysError::NotJwks)));
    }

    #[test]
    fn jwks_urls_are_https_or_loopback() {
        assert!(check_jwks_url("https://sandbox.cds-hooks.org/.well-known/jwks.json").is_ok());
        assert!(check_jwks_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_jwks_url("http://localhost/jwks").is_ok());
        assert!(check_jwks_url("http://[::1]/jwks").is_ok());
        assert!(check_jwks_url("http://ehr.example.org/jwks").is_err());
        assert!(check_jwks_url("file:///etc/jwks").is_err());
        assert!(check_jwks_url("jwks.json").is_err());
    }
}
