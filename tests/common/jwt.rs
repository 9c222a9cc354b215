//! CDS Hooks JWTs as the public CDS Hooks sandbox (an EHR simulator) signs them: ES384 with its
//! published key (`tests/fixtures/jwt/`, a throwaway key from github.com/cds-hooks/sandbox), `kid`,
//! `jku`, `aud` = the exact URL called, `exp` = `iat` + 300 and a fresh `jti`.

use cardinal::auth::{AuthConfig, AuthMode, IssuerConfig};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const SANDBOX_ISS: &str = "https://sandbox.cds-hooks.org";
pub const SANDBOX_KID: &str = "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f";
pub const SANDBOX_JKU: &str = "https://sandbox.cds-hooks.org/.well-known/jwks.json";

/// The sandbox's private key (PEM, PKCS#8).
pub fn sandbox_private_key() -> Vec<u8> {
    std::fs::read(super::project_path(
        "tests/fixtures/jwt/sandbox-ecprivkey.pem",
    ))
    .expect("sandbox private key fixture")
}

/// The sandbox issuer, keys from the fixture JWK Set file.
pub fn sandbox_issuer() -> IssuerConfig {
    IssuerConfig {
        iss: SANDBOX_ISS.into(),
        jwks_url: None,
        jwks_file: Some(super::project_path("tests/fixtures/jwt/sandbox-jwks.json")),
        jku_allowed: vec![SANDBOX_JKU.into()],
        fhir_servers: Vec::new(),
        tenant: None,
    }
}

/// Authentication required, the sandbox trusted (also for the explain endpoint).
pub fn sandbox_auth() -> AuthConfig {
    AuthConfig {
        mode: AuthMode::Required,
        issuers: vec![sandbox_issuer()],
        explain_issuers: vec![SANDBOX_ISS.into()],
        ..AuthConfig::default()
    }
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs with an ES384 PEM key.
pub struct Signer {
    key: EncodingKey,
    pub kid: String,
    pub iss: String,
    pub jku: Option<String>,
}

impl Signer {
    /// The sandbox, exactly.
    pub fn sandbox() -> Self {
        Self {
            key: EncodingKey::from_ec_pem(&sandbox_private_key()).expect("sandbox key"),
            kid: SANDBOX_KID.into(),
            iss: SANDBOX_ISS.into(),
            jku: Some(SANDBOX_JKU.into()),
        }
    }

    /// Another ES384 key (PEM), with its `kid`.
    pub fn with_key(pem: &str, kid: &str, iss: &str) -> Self {
        Self {
            key: EncodingKey::from_ec_pem(pem.as_bytes()).expect("ES384 key"),
            kid: kid.into(),
            iss: iss.into(),
            jku: None,
        }
    }

    /// The sandbox's header.
    pub fn header(&self) -> Header {
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        header.jku = self.jku.clone();
        header
    }

    /// The sandbox's claims for a call to `aud`.
    pub fn claims(&self, aud: &str) -> Value {
        let iat = now();
        json!({
            "iss": self.iss,
            "aud": aud,
            "exp": iat + 300,
            "iat": iat,
            "jti": uuid::Uuid::new_v4().to_string(),
        })
    }

    pub fn sign(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.key).expect("sign")
    }

    /// A fresh token for a call to `aud`.
    pub fn token(&self, aud: &str) -> String {
        self.sign(&self.header(), &self.claims(aud))
    }
}

/// `base64url(json)` without padding, for hand-made tokens.
pub fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}
