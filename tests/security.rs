//! Security at the edge, over real HTTP and gRPC on 127.0.0.1:
//! - CDS Hooks JWT authentication with tokens signed exactly as the public CDS Hooks sandbox signs
//!   them (its published ES384 key, `tests/fixtures/jwt/`): accepted, and each kind of bad token a
//!   bare 401 / `UNAUTHENTICATED`; key rotation through a JWK Set server with rate-limited refetch;
//! - no SSRF: `fhirServer` allow-lists, FHIR-id checks on template values, `next` links kept under
//!   the base URL, all proven by a loopback FHIR listener that counts what it is asked;
//! - the explain endpoint limited to `auth.explain_issuers`;
//! - the audit trail: one record per call, its fields, no token; a sink that cannot be written
//!   refuses calls (503) and fails readiness;
//! - TLS on both transports with a certificate made here (rcgen), reloaded while serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::Uri;
use axum::response::IntoResponse;
use cardinal::audit::OnFailure;
use cardinal::auth::{AuthConfig, AuthMode, IssuerConfig};
use cardinal::config::Config;
use cardinal::prefetch::PrefetchConfig;
use cardinal::proto;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use common::jwt::{SANDBOX_ISS, Signer, b64, now, sandbox_auth};
use common::{TestServer, project_path, request_fixture};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

const GREETING: &str = "/cds-services/patient-greeting";

fn greeting_request() -> Value {
    request_fixture("patient-view-greeting")
}

async fn auth_server() -> TestServer {
    TestServer::start_with_auth(&project_path("rules")).await
}

/// POSTs the greeting call with `token` (if any).
async fn post_greeting(server: &TestServer, token: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(server.url(GREETING))
        .json(&greeting_request());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("POST")
}

/// A bare 401: no body, a `WWW-Authenticate: Bearer` challenge, nothing about why.
async fn assert_bare_401(response: reqwest::Response, case: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{case}");
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer"),
        "{case}"
    );
    let body = response.text().await.expect("body");
    assert!(body.is_empty(), "{case}: the 401 has a body: {body}");
}

async fn metrics(server: &TestServer) -> String {
    reqwest::get(server.admin_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// The value of the Prometheus sample `name` whose labels include `label` (0 when absent).
async fn sample(server: &TestServer, name: &str, label: &str) -> u64 {
    let text = metrics(server).await;
    text.lines()
        .filter(|l| l.starts_with(name))
        .find(|l| label.is_empty() || l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The value of `cardinal_auth_rejected_total{reason="…"}`.
async fn rejected(server: &TestServer, reason: &str) -> u64 {
    sample(
        server,
        "cardinal_auth_rejected_total",
        &format!("reason=\"{reason}\""),
    )
    .await
}

/// One token per way of getting it wrong, for a call to `aud`, with the metric reason expected.
fn bad_tokens(aud: &str) -> Vec<(&'static str, Option<String>, &'static str)> {
    let signer = Signer::sandbox();
    let header = signer.header();
    let mut cases = vec![("missing header", None, "missing")];
    cases.push(("not a JWT", Some("not-a-jwt".to_owned()), "malformed"));
    let mut expired = signer.claims(aud);
    expired["iat"] = json!(now() - 1_000);
    expired["exp"] = json!(now() - 700);
    cases.push(("expired", Some(signer.sign(&header, &expired)), "expired"));
    let mut early = signer.claims(aud);
    early["nbf"] = json!(now() + 600);
    cases.push((
        "not yet valid",
        Some(signer.sign(&header, &early)),
        "not_yet_valid",
    ));
    let mut elsewhere = signer.claims(aud);
    elsewhere["aud"] = json!("https://elsewhere.example.org/cds-services/patient-greeting");
    cases.push((
        "wrong aud",
        Some(signer.sign(&header, &elsewhere)),
        "audience",
    ));
    let mut stranger = signer.claims(aud);
    stranger["iss"] = json!("https://ehr.stranger.example");
    cases.push((
        "unknown iss",
        Some(signer.sign(&header, &stranger)),
        "unknown_issuer",
    ));
    let mut foreign_jku = header.clone();
    foreign_jku.jku = Some("https://attacker.example/jwks.json".into());
    cases.push((
        "jku off the allow-list",
        Some(signer.sign(&foreign_jku, &signer.claims(aud))),
        "jku",
    ));
    let none_header = json!({"alg": "none", "typ": "JWT", "kid": signer.kid});
    cases.push((
        "alg none",
        Some(format!(
            "{}.{}.",
            b64(&none_header),
            b64(&signer.claims(aud))
        )),
        "malformed",
    ));
    // The classic confusion: HMAC keyed with the issuer's public key.
    let public = std::fs::read(project_path("tests/fixtures/jwt/sandbox-jwks.json")).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(signer.kid.clone());
    let hs = jsonwebtoken::encode(
        &hs_header,
        &signer.claims(aud),
        &EncodingKey::from_secret(&public).unwrap(),
    )
    .unwrap();
    cases.push(("HS256 with the public key", Some(hs), "algorithm"));
    // A valid token whose payload is swapped for another: the signature no longer matches.
    let valid = signer.token(aud);
    let parts: Vec<&str> = valid.split('.').collect();
    let mut claims = signer.claims(aud);
    claims["sub"] = json!("someone-else");
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims), parts[2]);
    cases.push(("tampered payload", Some(tampered), "signature"));
    let mut unknown_kid = header.clone();
    unknown_kid.kid = Some("no-such-key".into());
    cases.push((
        "unknown kid",
        Some(signer.sign(&unknown_kid, &signer.claims(aud))),
        "unknown_kid",
    ));
    cases
}

// ---------------------------------------------------------------------------------------------
// JWT authentication, HTTP
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_accepts_a_sandbox_token_and_answers_every_bad_one_with_a_bare_401() {
    let server = auth_server().await;
    let aud = server.url(GREETING);
    let signer = Signer::sandbox();

    let ok = post_greeting(&server, Some(&signer.token(&aud))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let body: Value = ok.json().await.expect("json");
    assert!(
        body["cards"][0]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("Now seeing")),
        "{body:#}"
    );

    for (case, token, reason) in bad_tokens(&aud) {
        let before = rejected(&server, reason).await;
        assert_bare_401(post_greeting(&server, token.as_deref()).await, case).await;
        assert_eq!(
            rejected(&server, reason).await,
            before + 1,
            "{case}: counted as {reason}"
        );
    }

    // A replayed jti: accepted once.
    let token = signer.token(&aud);
    assert_eq!(
        post_greeting(&server, Some(&token)).await.status(),
        StatusCode::OK
    );
    assert_bare_401(post_greeting(&server, Some(&token)).await, "replayed jti").await;
    assert_eq!(rejected(&server, "replayed").await, 1);

    // Discovery needs a token too (its own URL as aud); CORS preflight does not.
    let client = reqwest::Client::new();
    let discovery = client
        .get(server.url("/cds-services"))
        .send()
        .await
        .expect("GET");
    assert_bare_401(discovery, "discovery without a token").await;
    let discovery = client
        .get(server.url("/cds-services"))
        .bearer_auth(signer.token(&server.url("/cds-services")))
        .send()
        .await
        .expect("GET");
    assert_eq!(discovery.status(), StatusCode::OK);
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url(GREETING))
        .header("origin", "https://ehr.example.org")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("OPTIONS");
    assert_eq!(preflight.status(), StatusCode::OK);
    assert!(
        preflight
            .headers()
            .contains_key("access-control-allow-origin")
    );
    // A browser EHR can read a 401 (it carries CORS headers).
    let refused = client
        .post(server.url(GREETING))
        .header("origin", "https://ehr.example.org")
        .json(&greeting_request())
        .send()
        .await
        .expect("POST");
    assert!(
        refused
            .headers()
            .contains_key("access-control-allow-origin")
    );
    assert_bare_401(refused, "browser call without a token").await;
    // Health and metrics are on the admin listener, without tokens.
    let health = reqwest::get(server.admin_url("/healthz"))
        .await
        .expect("GET");
    assert_eq!(health.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_tenant_and_public_base_url_are_required() {
    let mut config = Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    };
    config.auth = sandbox_auth();
    config.auth.public_base_url = Some("https://cds.example.org/".into());
    config.auth.issuers[0].tenant = Some("hospital-a".into());
    let server = TestServer::start_with(config).await;
    let signer = Signer::sandbox();
    let public = "https://cds.example.org/cds-services/patient-greeting";
    let mut claims = signer.claims(public);
    claims["tenant"] = json!("hospital-a");
    let ok = post_greeting(&server, Some(&signer.sign(&signer.header(), &claims))).await;
    assert_eq!(ok.status(), StatusCode::OK);
    // The URL the request reached is not the public one.
    let mut local = signer.claims(&server.url(GREETING));
    local["tenant"] = json!("hospital-a");
    assert_bare_401(
        post_greeting(&server, Some(&signer.sign(&signer.header(), &local))).await,
        "aud = the local URL",
    )
    .await;
    let mut other = signer.claims(public);
    other["tenant"] = json!("hospital-b");
    assert_bare_401(
        post_greeting(&server, Some(&signer.sign(&signer.header(), &other))).await,
        "another tenant",
    )
    .await;
    assert_bare_401(
        post_greeting(&server, Some(&signer.token(public))).await,
        "no tenant",
    )
    .await;
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// JWT authentication, gRPC
// ---------------------------------------------------------------------------------------------

fn grpc_greeting(token: Option<&str>) -> tonic::Request<proto::CallHookRequest> {
    let request = greeting_request();
    let mut prefetch = std::collections::HashMap::new();
    prefetch.insert(
        "patient".to_owned(),
        request["prefetch"]["patient"].to_string(),
    );
    let mut call = tonic::Request::new(proto::CallHookRequest {
        service_id: "patient-greeting".into(),
        hook: "patient-view".into(),
        hook_instance: "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea".into(),
        context_json: request["context"].to_string(),
        prefetch_json: prefetch,
        ..Default::default()
    });
    if let Some(token) = token {
        call.metadata_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("metadata"),
        );
    }
    call
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_accepts_the_same_token_and_answers_every_bad_one_unauthenticated() {
    let server = auth_server().await;
    // The CDS Hooks URL of the called service: one token type for both transports.
    let aud = server.url(GREETING);
    let signer = Signer::sandbox();
    let mut grpc = CdsHooksClient::new(server.grpc_channel().await);

    let ok = grpc
        .call_hook(grpc_greeting(Some(&signer.token(&aud))))
        .await
        .expect("a valid token is accepted");
    assert_eq!(ok.get_ref().cards.len(), 1);

    for (case, token, reason) in bad_tokens(&aud) {
        let before = rejected(&server, reason).await;
        let status = grpc
            .call_hook(grpc_greeting(token.as_deref()))
            .await
            .expect_err(case);
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{case}");
        assert_eq!(status.message(), "unauthenticated", "{case}: no detail");
        assert_eq!(
            rejected(&server, reason).await,
            before + 1,
            "{case}: counted as {reason}"
        );
    }

    let token = signer.token(&aud);
    grpc.call_hook(grpc_greeting(Some(&token)))
        .await
        .expect("first use");
    let replayed = grpc
        .call_hook(grpc_greeting(Some(&token)))
        .await
        .expect_err("replayed jti");
    assert_eq!(replayed.code(), tonic::Code::Unauthenticated);

    // A token for another service's URL is not one for this call.
    let other = signer.token(&server.url("/cds-services/opioidcds-04-05"));
    let status = grpc
        .call_hook(grpc_greeting(Some(&other)))
        .await
        .expect_err("aud of another service");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // Discovery: the discovery URL as aud.
    let mut discover = tonic::Request::new(proto::DiscoverRequest {});
    discover.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", signer.token(&server.url("/cds-services")))
            .parse()
            .expect("metadata"),
    );
    let services = grpc.discover(discover).await.expect("discover");
    assert!(!services.get_ref().services.is_empty());
    let status = grpc
        .discover(proto::DiscoverRequest {})
        .await
        .expect_err("discovery without a token");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Key rotation
// ---------------------------------------------------------------------------------------------

/// A JWK Set server on 127.0.0.1 that counts its requests; the set can be replaced.
struct JwksServer {
    url: String,
    set: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    async fn start(set: Value) -> Self {
        let set = Arc::new(Mutex::new(set));
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (Arc::clone(&set), Arc::clone(&hits));
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(
                    |State((set, hits)): State<(Arc<Mutex<Value>>, Arc<AtomicUsize>)>| async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        axum::Json(set.lock().unwrap().clone())
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            set,
            hits,
            handle,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A fresh ES384 key: its PEM private key and its public JWK.
fn es384_key(kid: &str) -> (String, Value) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384 key");
    // SEC1 uncompressed point: 0x04 || x (48 bytes) || y (48 bytes).
    let point = pair.public_key_raw();
    assert_eq!(point.len(), 97);
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let jwk = json!({
        "kty": "EC", "crv": "P-384", "use": "sig", "alg": "ES384", "kid": kid,
        "x": b64(&point[1..49]), "y": b64(&point[49..97]),
    });
    (pair.serialize_pem(), jwk)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_on_an_unknown_kid_at_most_once_per_interval() {
    const ISS: &str = "https://ehr.rotating.example";
    let (old_pem, old_jwk) = es384_key("2024-key");
    let (new_pem, new_jwk) = es384_key("2025-key");
    let jwks = JwksServer::start(json!({"keys": [old_jwk]})).await;
    let mut config = Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    };
    config.auth = AuthConfig {
        mode: AuthMode::Required,
        jwks_refetch_secs: 2,
        issuers: vec![IssuerConfig {
            iss: ISS.into(),
            jwks_url: Some(jwks.url.clone()),
            jwks_file: None,
            jku_allowed: vec![jwks.url.clone()],
            fhir_servers: Vec::new(),
            tenant: None,
        }],
        ..AuthConfig::default()
    };
    let server = TestServer::start_with(config).await;
    let aud = server.url(GREETING);
    let old = Signer::with_key(&old_pem, "2024-key", ISS);
    let new = Signer::with_key(&new_pem, "2025-key", ISS);
    let stranger = Signer::with_key(&new_pem, "made-up-kid", ISS);
    assert_eq!(jwks.hits(), 0, "keys are fetched when first needed");

    let status = |token: String| {
        let server = &server;
        async move { post_greeting(server, Some(&token)).await.status() }
    };
    assert_eq!(status(old.token(&aud)).await, StatusCode::OK);
    assert_eq!(jwks.hits(), 1);
    assert_eq!(status(old.token(&aud)).await, StatusCode::OK);
    assert_eq!(jwks.hits(), 1, "the set is cached");

    // The EHR rotates: its set now holds only the new key.
    *jwks.set.lock().unwrap() = json!({"keys": [new_jwk]});
    // Within the interval an unknown kid does not refetch, however many tokens name one.
    assert_eq!(status(new.token(&aud)).await, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        assert_eq!(status(stranger.token(&aud)).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.hits(), 1, "refetches are rate limited");

    // After it, the first unknown kid refetches, and the new key is accepted.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert_eq!(status(new.token(&aud)).await, StatusCode::OK);
    assert_eq!(jwks.hits(), 2);
    // The retired key is gone with the old set; made-up kids still cost no fetch.
    assert_eq!(status(old.token(&aud)).await, StatusCode::UNAUTHORIZED);
    for _ in 0..5 {
        assert_eq!(status(stranger.token(&aud)).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(jwks.hits(), 2);
    assert_eq!(status(new.token(&aud)).await, StatusCode::OK);
    jwks.handle.abort();
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// No SSRF
// ---------------------------------------------------------------------------------------------

/// A FHIR server on 127.0.0.1 that records every path it is asked for. Under `/fhir` it answers a
/// Patient, and an Observation search whose `next` link leads to `/internal/...` on the same origin.
struct CountingFhir {
    base: String,
    seen: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl CountingFhir {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let next = format!("{origin}/internal/Observation?page=2");
        let state = (Arc::clone(&seen), next);
        let app = axum::Router::new()
            .fallback(
                |State((seen, next)): State<(Arc<Mutex<Vec<String>>>, String)>, uri: Uri| async move {
                    seen.lock().unwrap().push(uri.to_string());
                    let path = uri.path();
                    let body = if path.starts_with("/fhir/Patient/") {
                        json!({"resourceType": "Patient", "id": "p1", "birthDate": "1960-05-01"})
                    } else {
                        json!({
                            "resourceType": "Bundle", "type": "searchset",
                            "link": [{"relation": "next", "url": next}],
                            "entry": [{"resource": {"resourceType": "Observation", "id": "o1",
                                "status": "final", "code": {"text": "x"}}}],
                        })
                    };
                    (
                        [("content-type", "application/fhir+json")],
                        body.to_string(),
                    )
                        .into_response()
                },
            )
            .with_state(state);
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("{origin}/fhir"),
            seen,
            handle,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }
}

fn prefetch_call(fhir_server: &str, patient: &str) -> Value {
    json!({
        "hook": "patient-view",
        "hookInstance": "6f0cbd6e-1b0e-4f8e-9a39-3b0e1f5bb2c1",
        "fhirServer": fhir_server,
        "fhirAuthorization": {"access_token": "ehr-access-token-5e1f", "token_type": "Bearer",
            "expires_in": 300, "scope": "patient/*.read", "subject": "cardinal"},
        "context": {"userId": "Practitioner/pr-1", "patientId": patient},
        "prefetch": {},
    })
}

/// Calls `service` with a sandbox token; returns the status and the diagnostics of a 412.
async fn call_prefetch(server: &TestServer, service: &str, body: &Value) -> (StatusCode, String) {
    let url = server.url(&format!("/cds-services/{service}"));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(Signer::sandbox().token(&url))
        .json(body)
        .send()
        .await
        .expect("POST");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    let diagnostics = body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, diagnostics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_fetches_only_from_the_issuers_servers_only_fhir_ids_and_only_below_the_base() {
    let fhir = CountingFhir::start().await;
    let elsewhere = CountingFhir::start().await;
    let mut config = Config {
        rules_dir: project_path("tests/fixtures/rules-prefetch"),
        ..Config::default().development()
    };
    config.auth = sandbox_auth();
    config.auth.issuers[0].fhir_servers = vec![fhir.base.clone()];
    // Allowed without authentication only: a verified caller is held to its issuer's list.
    config.prefetch.allowed_fhir_servers = vec![elsewhere.base.clone()];
    let server = TestServer::start_with(config).await;

    // On the list: fetched.
    let (status, _) =
        call_prefetch(&server, "paged-optional", &prefetch_call(&fhir.base, "p1")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        fhir.seen().iter().any(|p| p == "/fhir/Patient/p1"),
        "{:?}",
        fhir.seen()
    );
    fhir.reset();

    // Not on the issuer's list (though on the unauthenticated one): nothing is asked of it.
    let (status, diagnostics) =
        call_prefetch(&server, "paged", &prefetch_call(&elsewhere.base, "p1")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        diagnostics,
        "required FHIR data could not be obtained: prefetch observations not provided by the EHR \
         and not fetched: `fhirServer` is not one this caller may name"
    );
    // A server on the same host, another path: not the same base.
    let sibling = fhir.base.replace("/fhir", "/internal");
    let (status, _) = call_prefetch(&server, "paged", &prefetch_call(&sibling, "p1")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
    assert!(fhir.seen().is_empty(), "{:?}", fhir.seen());

    // `patientId = ".."` would make `Patient/{{context.patientId}}` the base itself.
    for patient in ["..", ".", "a/b", "p1/../.."] {
        let (status, diagnostics) =
            call_prefetch(&server, "chart", &prefetch_call(&fhir.base, patient)).await;
        assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{patient}");
        assert!(
            diagnostics.contains("is not a valid FHIR id")
                || diagnostics.contains("is not a valid FHIR search value"),
            "{patient}: {diagnostics}"
        );
        if patient.len() > 2 {
            assert!(!diagnostics.contains(patient), "{diagnostics}");
        }
    }
    assert!(fhir.seen().is_empty(), "{:?}", fhir.seen());

    // A `next` link to another path of the same origin is not followed.
    let (status, diagnostics) =
        call_prefetch(&server, "paged", &prefetch_call(&fhir.base, "p1")).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        diagnostics,
        "required FHIR data could not be obtained: prefetch observations not provided by the EHR \
         and not fetched: it could not be obtained from the FHIR server"
    );
    let seen = fhir.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].starts_with("/fhir/Observation?"), "{seen:?}");
    assert!(
        !seen.iter().any(|p| p.starts_with("/internal")),
        "followed a link off the base: {seen:?}"
    );
    fhir.handle.abort();
    elsewhere.handle.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_nothing_is_fetched_unless_allowed() {
    let fhir = CountingFhir::start().await;
    let server = TestServer::start_with_rules(&project_path("tests/fixtures/rules-prefetch")).await;
    let response = reqwest::Client::new()
        .post(server.url("/cds-services/paged"))
        .json(&prefetch_call(&fhir.base, "p1"))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = response.json().await.expect("json");
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| d.ends_with("`fhirServer` is not one this caller may name")),
        "{body:#}"
    );
    assert!(fhir.seen().is_empty(), "{:?}", fhir.seen());
    assert_eq!(
        PrefetchConfig::default().allowed_fhir_servers,
        Vec::<String>::new()
    );
    fhir.handle.abort();
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Explain
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_needs_a_caller_of_an_explain_issuer() {
    let explain = "/cds-services/patient-greeting/explain";
    for (explain_issuers, expected) in [
        (vec![SANDBOX_ISS.to_owned()], StatusCode::OK),
        (Vec::new(), StatusCode::FORBIDDEN),
    ] {
        let mut config = Config {
            rules_dir: project_path("rules"),
            ..Config::default().development()
        };
        config.auth = sandbox_auth();
        config.auth.explain_issuers = explain_issuers;
        let server = TestServer::start_with(config).await;
        let url = server.url(explain);
        let response = reqwest::Client::new()
            .post(&url)
            .bearer_auth(Signer::sandbox().token(&url))
            .json(&greeting_request())
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), expected);
        let mut grpc = CdsHooksClient::new(server.grpc_channel().await);
        let mut request = grpc_greeting(None);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", Signer::sandbox().token(&url))
                .parse()
                .expect("metadata"),
        );
        let answer = grpc.explain(request).await;
        match expected {
            StatusCode::OK => assert!(answer.is_ok(), "{answer:?}"),
            _ => assert_eq!(
                answer.expect_err("refused").code(),
                tonic::Code::PermissionDenied
            ),
        }
        server.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Audit trail
// ---------------------------------------------------------------------------------------------

/// The audit records once `count` are written (bounded wait: the writer is asynchronous).
async fn audit_records(path: &std::path::Path, count: usize) -> Vec<Value> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let records: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect();
        if records.len() >= count {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "fewer than {count} audit records in {}:\n{}",
        path.display(),
        std::fs::read_to_string(path).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hook_and_feedback_call_leaves_one_audit_record_without_the_token() {
    let server = auth_server().await;
    let signer = Signer::sandbox();
    let url = server.url(GREETING);
    let mut claims = signer.claims(&url);
    claims["sub"] = json!("sandbox-client-7");
    let token = signer.sign(&signer.header(), &claims);
    let mut request = greeting_request();
    request["fhirAuthorization"] = json!({"access_token": "fhir-access-9c2d", "token_type": "Bearer",
        "expires_in": 300, "scope": "patient/*.read", "subject": "cardinal"});
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&token)
        .json(&request)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: Value = response.json().await.expect("json");
    let card_uuid = answer["cards"][0]["uuid"]
        .as_str()
        .expect("card uuid")
        .to_owned();

    let feedback_url = server.url("/cds-services/patient-greeting/feedback");
    let feedback = reqwest::Client::new()
        .post(&feedback_url)
        .bearer_auth(signer.token(&feedback_url))
        .json(
            &json!({"feedback": [{"card": card_uuid, "outcome": "overridden",
            "outcomeTimestamp": "2024-05-01T10:00:00Z"}]}),
        )
        .send()
        .await
        .expect("POST feedback");
    assert_eq!(feedback.status(), StatusCode::OK);

    let mut grpc = CdsHooksClient::new(server.grpc_channel().await);
    grpc.call_hook(grpc_greeting(Some(&signer.token(&url))))
        .await
        .expect("gRPC call");
    // Refused (hook of another service): recorded with its status.
    let opioid = server.url("/cds-services/opioidcds-04-05");
    let refused = reqwest::Client::new()
        .post(&opioid)
        .bearer_auth(signer.token(&opioid))
        .json(&greeting_request())
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    // Not authenticated: no record (the log and metrics have it).
    assert_eq!(
        post_greeting(&server, None).await.status(),
        StatusCode::UNAUTHORIZED
    );

    let path = server.data_dir().join("audit.jsonl");
    let records = audit_records(&path, 4).await;
    assert_eq!(records.len(), 4, "{records:#?}");
    let hook = &records[0];
    assert_eq!(hook["kind"], "hook");
    assert_eq!(hook["transport"], "http");
    assert_eq!(hook["issuer"], SANDBOX_ISS);
    assert_eq!(hook["subject"], "sandbox-client-7");
    assert_eq!(hook["tenant"], Value::Null);
    assert_eq!(hook["service_id"], "patient-greeting");
    assert_eq!(hook["hook"], "patient-view");
    assert_eq!(
        hook["hook_instance"],
        "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea"
    );
    assert_eq!(hook["patient_id"], "pat-7");
    assert_eq!(
        hook["rule_set_version"].as_str(),
        Some(server.cardinal.rule_set().version()),
        "{hook}"
    );
    assert_eq!(
        hook["cards"],
        json!([{"uuid": card_uuid, "rule_id": "greeting"}])
    );
    assert_eq!(hook["outcome"], "answered");
    assert_eq!(hook["status"], 200);
    assert!(
        chrono::DateTime::parse_from_rfc3339(hook["time"].as_str().expect("time")).is_ok(),
        "{hook}"
    );
    let feedback = &records[1];
    assert_eq!(feedback["kind"], "feedback");
    assert_eq!(feedback["cards"][0]["uuid"], card_uuid);
    assert_eq!(feedback["status"], 200);
    let grpc_record = &records[2];
    assert_eq!(grpc_record["transport"], "grpc");
    assert_eq!(grpc_record["issuer"], SANDBOX_ISS);
    assert_eq!(grpc_record["patient_id"], "pat-7");
    assert_eq!(grpc_record["cards"].as_array().map(Vec::len), Some(1));
    let refused = &records[3];
    assert_eq!(refused["service_id"], "opioidcds-04-05");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["status"], 400);

    let text = std::fs::read_to_string(&path).expect("audit file");
    for secret in [token.as_str(), "fhir-access-9c2d", "Bearer"] {
        assert!(!text.contains(secret), "the audit trail holds `{secret}`");
    }
    assert_eq!(
        sample(
            &server,
            "cardinal_audit_records_total",
            "outcome=\"written\""
        )
        .await,
        4
    );
    server.stop().await;
}

fn audit_config(path: &str, on_failure: OnFailure) -> Config {
    let mut config = Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    };
    config.audit.path = PathBuf::from(path);
    config.audit.on_failure = on_failure;
    config
}

/// A path nothing may create a file under, root included (a test may run as root, for which file
/// permissions are no obstacle): `/proc` is a read-only file system.
const READ_ONLY: &str = "/proc/cardinal-audit/audit.jsonl";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_trail_that_cannot_be_written_refuses_calls_and_fails_readiness() {
    let server = TestServer::start_with(audit_config(READ_ONLY, OnFailure::Refuse)).await;
    let response = post_greeting(&server, None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let outcome: Value = response.json().await.expect("OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "transient", "{outcome:#}");
    let mut grpc = CdsHooksClient::new(server.grpc_channel().await);
    let status = grpc
        .call_hook(grpc_greeting(None))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let feedback = reqwest::Client::new()
        .post(server.url("/cds-services/patient-greeting/feedback"))
        .json(&json!({"feedback": []}))
        .send()
        .await
        .expect("POST");
    assert_eq!(feedback.status(), StatusCode::SERVICE_UNAVAILABLE);

    let ready = reqwest::get(server.admin_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["status"], "audit-failing", "{ready:#}");
    assert_eq!(ready["audit"]["status"], "failing", "{ready:#}");
    assert!(
        ready["audit"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(READ_ONLY) && r.contains("cannot be opened")),
        "{ready:#}"
    );
    assert_eq!(sample(&server, "cardinal_audit_failing", "").await, 1);
    server.stop().await;

    // `continue`: answered anyway, and the failure still shows.
    let server = TestServer::start_with(audit_config(READ_ONLY, OnFailure::Continue)).await;
    assert_eq!(post_greeting(&server, None).await.status(), StatusCode::OK);
    let ready = reqwest::get(server.admin_url("/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.expect("json");
    assert_eq!(ready["audit"]["status"], "failing", "{ready:#}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_trail_that_fails_while_serving_stops_the_calls_that_follow() {
    // /dev/full opens, and every write to it fails (no space left on device).
    let server = TestServer::start_with(audit_config("/dev/full", OnFailure::Refuse)).await;
    let mut statuses = BTreeMap::new();
    let mut refused = false;
    for _ in 0..100 {
        let status = post_greeting(&server, None).await.status();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "calls kept being answered: {statuses:?}");
    let ready: Value = reqwest::get(server.admin_url("/readyz"))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert!(
        ready["audit"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("cannot be written")),
        "{ready:#}"
    );
    assert!(
        sample(
            &server,
            "cardinal_audit_records_total",
            "outcome=\"failed\""
        )
        .await
            >= 1
    );
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for `localhost`, written to `dir`; returns its PEM.
fn write_certificate(dir: &std::path::Path) -> String {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &pem).expect("write cert");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write key");
    pem
}

fn https_client(server: &TestServer, trusted: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(trusted.as_bytes()).expect("pem"))
        .resolve("localhost", server.addr)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_http_and_grpc_on_one_port_and_reloads_its_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = write_certificate(dir.path());
    let mut config = Config {
        rules_dir: project_path("rules"),
        ..Config::default().development()
    };
    config.tls.cert = Some(dir.path().join("cert.pem"));
    config.tls.key = Some(dir.path().join("key.pem"));
    let server = TestServer::start_with(config).await;
    assert!(server.base.starts_with("https://localhost:"));

    // HTTP/JSON over TLS.
    let response = https_client(&server, &first)
        .post(server.url(GREETING))
        .json(&greeting_request())
        .send()
        .await
        .expect("HTTPS call");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), reqwest::Version::HTTP_2, "ALPN h2");
    // Plain HTTP on the TLS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/cds-services", server.addr))
        .send()
        .await;
    assert!(plain.is_err() || plain.is_ok_and(|r| !r.status().is_success()));

    // gRPC over TLS, same port.
    let grpc_over = |trusted: String| {
        let base = server.base.clone();
        async move {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(trusted))
                .domain_name("localhost");
            let channel = tonic::transport::Endpoint::from_shared(base)
                .expect("endpoint")
                .tls_config(tls)
                .expect("tls config")
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            CdsHooksClient::new(channel)
                .call_hook(grpc_greeting(None))
                .await
                .map(|r| r.into_inner().cards.len())
                .map_err(|e| format!("call: {e:?}"))
        }
    };
    assert_eq!(grpc_over(first.clone()).await.expect("gRPC over TLS"), 1);

    // A renewed certificate, picked up on reload (SIGHUP in the binary) without a restart.
    let second = write_certificate(dir.path());
    server.edge.tls().expect("TLS on").reload().expect("reload");
    let renewed = https_client(&server, &second)
        .get(server.url("/cds-services"))
        .send()
        .await
        .expect("HTTPS with the renewed certificate");
    assert_eq!(renewed.status(), StatusCode::OK);
    assert!(
        https_client(&server, &first)
            .get(server.url("/cds-services"))
            .send()
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    assert_eq!(grpc_over(second).await.expect("gRPC, renewed"), 1);
    // A broken file leaves the served certificate in place.
    std::fs::write(dir.path().join("cert.pem"), "not a certificate").expect("write");
    assert!(server.edge.tls().expect("TLS on").reload().is_err());
    server.stop().await;
}
