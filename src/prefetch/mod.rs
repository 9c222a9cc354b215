//! Prefetch: what the EHR sent, reconciled with what the service declared, the rest fetched from the
//! EHR's FHIR server, or 412.
//!
//! Nothing is fetched from a `fhirServer` the caller may not name (its issuer's `fhir_servers`, or
//! `prefetch.allowed_fhir_servers` without authentication), and every value substituted into a URL
//! must be a FHIR id (path) or search value (query): Cardinal is no proxy into the network it sits in.
//!
//! A key the service does not declare is not its data: it is dropped (named in the explain report),
//! and the HTTP transport does not even read it into resources ([`PrefetchPlan::reads`]).
//!
//! Per declared key: present → used as sent; `null` → "no such resource"; an OperationOutcome (the
//! EHR's own prefetch failed) or absent → fetched from `fhirServer` with `fhirAuthorization`'s bearer
//! token. All missing keys are fetched concurrently under one per-request deadline. A key that cannot
//! be obtained is a 412 naming it, unless the manifest lists it in `optional_prefetch`, in which case
//! the rules run without it. Fetched answers are read exactly like sent ones
//! ([`PrefetchValue::from_json`]) with origin `fetched`, and go into the same prefetch map, so rules see
//! one patient context whichever way the data came.
//!
//! Templates are checked when the rules load ([`PrefetchPlan::compile`]), so a service with a bad
//! template never starts.

mod fetch;
mod template;

pub use fetch::FetchFailure;
pub use template::{RenderError, Template, TemplateError, Token};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio::time::Instant;
use toml::Spanned;
use tracing::Instrument;

use crate::auth::Caller;
use crate::cds_hooks::HookRequest;
use crate::evaluator::CallError;
use crate::fhir::{Prefetch, PrefetchReads, PrefetchValue};

use fetch::{FetchLimits, FhirServer};

/// `[prefetch]` in Cardinal's configuration: how fetching missing keys is bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrefetchConfig {
    /// All fetches of one request must be done by then (CDS Hooks expects ~500 ms for the whole call).
    pub deadline_ms: u64,
    /// Pages of one search followed through `next` links; a search with more is not obtained.
    pub max_pages: usize,
    /// Longer URLs are sent as POST `{type}/_search` with a form-encoded body.
    pub max_url_length: usize,
    /// The `fhirServer` base URLs fetched from for calls without a verified caller (authentication
    /// off). Empty by default: nothing is fetched. With authentication on, each issuer's
    /// `fhir_servers` apply instead.
    pub allowed_fhir_servers: Vec<String>,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            deadline_ms: 300,
            max_pages: 5,
            max_url_length: 2000,
            allowed_fhir_servers: Vec::new(),
        }
    }
}

/// One declared key of a service.
#[derive(Debug, Clone)]
pub struct PlannedKey {
    pub key: String,
    pub template: Template,
    /// Listed in `optional_prefetch`: the rules run without it when it cannot be obtained.
    pub optional: bool,
}

/// A service's prefetch, checked at load time.
#[derive(Debug, Clone, Default)]
pub struct PrefetchPlan {
    keys: Vec<PlannedKey>,
}

/// A manifest error in `[prefetch]` or `optional_prefetch`, located by the span of the TOML string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanError {
    /// Byte range of the string (with its quotes) in `service.toml`.
    pub span: Range<usize>,
    /// Byte offset of the faulty token within the string's value.
    pub within: Option<usize>,
    pub message: String,
}

impl PlanError {
    /// Byte offset in `service.toml` of the faulty token: exact when the string has no escapes,
    /// else the start of the string.
    pub fn offset_in(&self, manifest: &str) -> usize {
        let literal = manifest.get(self.span.clone()).unwrap_or_default();
        match self.within {
            // A basic or literal one-line string without escapes: value = literal minus its quotes.
            Some(within)
                if literal.len() >= 2
                    && !literal.contains('\\')
                    && !literal.starts_with("\"\"\"")
                    && !literal.starts_with("'''") =>
            {
                self.span.start + 1 + within
            }
            _ => self.span.start,
        }
    }
}

impl PrefetchPlan {
    /// Parses every template for `hook` and checks that `optional` names declared keys.
    pub fn compile(
        hook: &str,
        prefetch: &BTreeMap<String, Spanned<String>>,
        optional: &[Spanned<String>],
    ) -> Result<Self, Vec<PlanError>> {
        let mut errors = Vec::new();
        for name in optional {
            if !prefetch.contains_key(name.get_ref()) {
                errors.push(PlanError {
                    span: name.span(),
                    within: None,
                    message: format!(
                        "`optional_prefetch` names `{}`, which `[prefetch]` does not declare",
                        name.get_ref()
                    ),
                });
            }
        }
        let mut keys = Vec::new();
        for (key, template) in prefetch {
            match Template::parse(template.get_ref(), hook) {
                Ok(parsed) => keys.push(PlannedKey {
                    key: key.clone(),
                    template: parsed,
                    optional: optional.iter().any(|o| o.get_ref() == key),
                }),
                Err(e) => errors.push(PlanError {
                    span: template.span(),
                    within: Some(e.offset),
                    message: format!("prefetch `{key}`: {}", e.message),
                }),
            }
        }
        if errors.is_empty() {
            Ok(Self { keys })
        } else {
            Err(errors)
        }
    }

    pub fn keys(&self) -> impl Iterator<Item = &PlannedKey> {
        self.keys.iter()
    }

    /// The prefetch keys the service's rules can read: the declared ones, or every key sent when
    /// the service declares none (it has nothing to fetch, and takes what the EHR sends).
    pub fn reads(&self) -> PrefetchReads {
        if self.keys.is_empty() {
            PrefetchReads::All
        } else {
            PrefetchReads::Only(self.keys.iter().map(|k| k.key.clone()).collect())
        }
    }

    /// Drops the answers of keys the service does not declare (a transport that read every key)
    /// and lists them in `ignored_prefetch`: rules see only the prefetch their service declared.
    fn drop_undeclared(&self, request: &mut HookRequest) {
        if self.keys.is_empty() {
            return;
        }
        let before = request.ignored_prefetch.len();
        request.prefetch.retain(|key, _| {
            let declared = self.keys.iter().any(|k| &k.key == key);
            if !declared {
                request.ignored_prefetch.push(key.clone());
            }
            declared
        });
        if request.ignored_prefetch.len() > before {
            request.ignored_prefetch.sort_unstable();
            request.ignored_prefetch.dedup();
        }
    }

    /// Declared keys the request does not answer: absent, or an OperationOutcome in their place.
    fn missing(&self, prefetch: &Prefetch) -> Vec<&PlannedKey> {
        self.keys
            .iter()
            .filter(|k| match prefetch.get(&k.key) {
                None => true,
                Some(value) => value.is_operation_outcome(),
            })
            .collect()
    }
}

/// One key that could not be obtained, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFailure {
    pub key: String,
    pub reason: FetchFailure,
}

/// Why a call cannot go ahead: required prefetch is missing. Names keys, never values, URLs or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefetchError {
    #[error("prefetch {keys} not provided by the EHR, and {why}")]
    NotProvided { keys: String, why: &'static str },
    #[error("{}", describe(.0))]
    NotObtained(Vec<KeyFailure>),
}

fn describe(failures: &[KeyFailure]) -> String {
    failures
        .iter()
        .map(|f| {
            format!(
                "prefetch {} not provided by the EHR and not fetched: {}",
                f.key,
                f.reason.public_reason()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<PrefetchError> for CallError {
    fn from(err: PrefetchError) -> Self {
        CallError::PrefetchUnavailable(err.to_string())
    }
}

/// Answers a request's missing prefetch without fetching (the in-process path: CLI, benchmarks):
/// an OperationOutcome in a key is dropped, and a missing required key is an error.
pub fn require_provided(
    plan: &PrefetchPlan,
    request: &mut HookRequest,
) -> Result<(), PrefetchError> {
    plan.drop_undeclared(request);
    let missing = plan.missing(&request.prefetch);
    let required = required_keys(&missing);
    if !required.is_empty() {
        return Err(PrefetchError::NotProvided {
            keys: required,
            why: "an in-process evaluation does not fetch from the FHIR server",
        });
    }
    for key in missing {
        request.prefetch.remove(&key.key);
    }
    Ok(())
}

fn required_keys(missing: &[&PlannedKey]) -> String {
    missing
        .iter()
        .filter(|k| !k.optional)
        .map(|k| k.key.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which `fhirServer`s may be fetched from: per issuer, and for calls without a verified caller.
/// Entries are compared as base URLs (a trailing `/` aside, no query), exactly: a server is not
/// allowed because it shares a host or a path prefix with an allowed one.
#[derive(Debug, Clone, Default)]
struct FhirServerPolicy {
    unauthenticated: Vec<reqwest::Url>,
    by_issuer: HashMap<String, Vec<reqwest::Url>>,
}

impl FhirServerPolicy {
    fn new(config: &PrefetchConfig, auth: &crate::auth::AuthConfig) -> Self {
        let bases = |list: &[String]| -> Vec<reqwest::Url> {
            list.iter().filter_map(|s| fetch::base_url(s)).collect()
        };
        Self {
            unauthenticated: bases(&config.allowed_fhir_servers),
            by_issuer: auth
                .issuers
                .iter()
                .map(|i| (i.iss.clone(), bases(&i.fhir_servers)))
                .collect(),
        }
    }

    fn allows(&self, caller: Option<&Caller>, server: &FhirServer) -> bool {
        let allowed = match caller {
            None => Some(&self.unauthenticated),
            Some(caller) => self.by_issuer.get(&caller.issuer),
        };
        allowed.is_some_and(|list| list.iter().any(|base| base == server.base()))
    }
}

/// Fetches missing prefetch keys. One per [`crate::evaluator::Cardinal`]; cheap to clone.
#[derive(Debug, Clone)]
pub struct Prefetcher {
    /// `None` only when the HTTP client could not be built at start-up (then nothing is fetched).
    client: Option<reqwest::Client>,
    config: PrefetchConfig,
    policy: FhirServerPolicy,
    max_response_bytes: usize,
}

impl Prefetcher {
    /// `max_response_bytes` bounds what one key may bring in, all pages together; `auth` names the
    /// `fhirServer`s each issuer may send.
    pub fn new(
        config: &PrefetchConfig,
        auth: &crate::auth::AuthConfig,
        max_response_bytes: usize,
    ) -> Self {
        let client = reqwest::Client::builder()
            // A redirect could carry the bearer token elsewhere: FHIR servers answer in place.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cardinal/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build();
        let client = match client {
            Ok(client) => Some(client),
            Err(_) => {
                tracing::error!(
                    "the FHIR client could not be built: missing prefetch keys will not be fetched"
                );
                None
            }
        };
        Self {
            client,
            config: config.clone(),
            policy: FhirServerPolicy::new(config, auth),
            max_response_bytes,
        }
    }

    /// Reconciles `request.prefetch` with `plan`: fetches what is missing (if the request names a
    /// `fhirServer` that `caller` may name) and inserts it; drops OperationOutcomes; fails when a
    /// required key stays missing.
    pub async fn reconcile(
        &self,
        plan: &PrefetchPlan,
        request: &mut HookRequest,
        caller: Option<&Caller>,
    ) -> Result<(), PrefetchError> {
        plan.drop_undeclared(request);
        let missing = plan.missing(&request.prefetch);
        if missing.is_empty() {
            return Ok(());
        }
        // An OperationOutcome stands for no data: rules never see it as a resource.
        for key in &missing {
            request.prefetch.remove(&key.key);
        }
        let Some(fhir_server) = request.fhir_server.as_deref() else {
            let required = required_keys(&missing);
            if required.is_empty() {
                return Ok(());
            }
            return Err(PrefetchError::NotProvided {
                keys: required,
                why: "the request has no `fhirServer` to fetch from",
            });
        };
        let token = request
            .fhir_authorization
            .as_ref()
            .map(|a| a.access_token.as_str());
        let started = Instant::now();
        let fetched = match (&self.client, FhirServer::new(fhir_server, token)) {
            (None, _) => fail_all(&missing, &FetchFailure::NoClient),
            (_, Err(reason)) => fail_all(&missing, &reason),
            (_, Ok(server)) if !self.policy.allows(caller, &server) => {
                tracing::warn!(
                    issuer = caller.map(|c| c.issuer.as_str()),
                    "prefetch refused: fhirServer not on the allow-list"
                );
                fail_all(&missing, &FetchFailure::NotAllowed)
            }
            (Some(client), Ok(server)) => self.fetch(client, server, &missing, request).await,
        };
        let mut failures = Vec::new();
        for (key, result) in fetched {
            match result {
                Ok(value) => {
                    request.prefetch.insert(key.key.clone(), value);
                }
                Err(reason) => {
                    // Key names come from the manifest; reasons are fixed wording.
                    tracing::info!(key = %key.key, optional = key.optional, reason = %reason, "prefetch key not obtained");
                    if !key.optional {
                        failures.push(KeyFailure {
                            key: key.key.clone(),
                            reason,
                        });
                    }
                }
            }
        }
        tracing::debug!(
            missing = missing.len(),
            not_obtained = failures.len(),
            duration_us = started.elapsed().as_micros() as u64,
            "prefetch reconciled"
        );
        if failures.is_empty() {
            Ok(())
        } else {
            failures.sort_by(|a, b| a.key.cmp(&b.key));
            Err(PrefetchError::NotObtained(failures))
        }
    }

    /// Renders every missing key's template, then fetches them all at once under the deadline.
    async fn fetch<'p>(
        &self,
        client: &reqwest::Client,
        server: FhirServer,
        missing: &[&'p PlannedKey],
        request: &HookRequest,
    ) -> Vec<(&'p PlannedKey, Result<PrefetchValue, FetchFailure>)> {
        let mut results = Vec::with_capacity(missing.len());
        let mut urls = Vec::with_capacity(missing.len());
        for key in missing {
            match key.template.render(&request.context) {
                Ok(relative) => urls.push((*key, relative)),
                Err(e) => results.push((*key, Err(FetchFailure::Render(e)))),
            }
        }
        if results.iter().any(|(key, _)| !key.optional) {
            // The call fails on these keys whatever the server says: ask it nothing.
            return results;
        }
        let deadline_ms = self.config.deadline_ms;
        let deadline = Instant::now() + Duration::from_millis(deadline_ms);
        let limits = FetchLimits {
            max_pages: self.config.max_pages,
            max_url_length: self.config.max_url_length,
            max_bytes: self.max_response_bytes,
        };
        let mut tasks = JoinSet::new();
        let mut keys = HashMap::with_capacity(urls.len());
        for (key, relative) in urls {
            let client = client.clone();
            let server = server.clone();
            // The key name comes from the manifest; the URL carries patient ids and stays out.
            let span = tracing::info_span!(
                "prefetch.fetch",
                cds.prefetch.key = %key.key,
                cds.prefetch.outcome = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
            );
            let task = tasks.spawn(
                async move {
                    let result = tokio::time::timeout_at(
                        deadline,
                        fetch::fetch_key(&client, &server, &relative, limits),
                    )
                    .await
                    .unwrap_or(Err(FetchFailure::Deadline(deadline_ms)));
                    let span = tracing::Span::current();
                    match &result {
                        Ok(_) => span.record("cds.prefetch.outcome", "fetched"),
                        Err(_) => {
                            span.record("otel.status_code", "ERROR");
                            span.record("cds.prefetch.outcome", "not-obtained")
                        }
                    };
                    result
                }
                .instrument(span),
            );
            keys.insert(task.id(), key);
        }
        while let Some(joined) = tasks.join_next_with_id().await {
            let (id, result) = match joined {
                Ok((id, result)) => (id, result),
                Err(e) => (e.id(), Err(FetchFailure::Transport)),
            };
            if let Some(key) = keys.get(&id) {
                results.push((*key, result));
            }
        }
        results
    }
}

fn fail_all<'p>(
    missing: &[&'p PlannedKey],
    reason: &FetchFailure,
) -> Vec<(&'p PlannedKey, Result<PrefetchValue, FetchFailure>)> {
    missing.iter().map(|k| (*k, Err(reason.clone()))).collect()
}

impl fmt::Display for KeyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}
