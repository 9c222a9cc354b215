//! A remote FHIR R4 terminology server: `ValueSet/$validate-code`, `ValueSet/$expand` (paged with
//! `offset`/`count`), `CodeSystem/$lookup` and `CodeSystem/$subsumes`, over HTTP(S) with `GET` and
//! FHIR `Parameters` / `ValueSet` / `OperationOutcome` JSON.
//!
//! **Sync over async.** [`TerminologySource`] is synchronous: rules call it from tokio's blocking
//! pool (`Cardinal::call`) or from the CLI's main thread (`Cardinal::evaluate`), and `Cardinal::load`
//! runs before any runtime exists. So this source owns a small runtime (one worker thread) and every
//! remote operation is spawned onto it; the caller waits on a channel for at most
//! `min(deadline, timeout)`, then gives up (the task is aborted). Waiting on a channel works on any
//! thread and never panics; on a multi-threaded runtime's worker the wait is wrapped in
//! `block_in_place` so the worker's other tasks move elsewhere, and on a current-thread runtime the
//! thread simply blocks for at most the deadline. Cache hits and pre-expanded value sets are
//! answered on the caller's thread without touching the runtime.
//!
//! **Not found.** A 404 (or an `OperationOutcome` whose issue code is `not-found`) means this
//! server does not know the value set, code system or code: the source answers `Ok(None)`, which
//! is cached like any answer, and [`super::Terminology`] moves on to the next source and finally
//! reports [`TerminologyError::UnknownValueSet`]. Any other `OperationOutcome` is a
//! [`TerminologyError::Server`] error carrying the issues' text.
//!
//! **Retries.** A 5xx answer, a timeout or a connection error is retried up to `retries` times,
//! waiting `backoff`, `2 × backoff`, ... in between, as long as the deadline allows; a 4xx is not.
//!
//! Error messages name the operation and the value set or code system, never the code (patient
//! data) and never the bearer token.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use reqwest::header::ACCEPT;
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::cache::{Answer, Counters, Key, TerminologyCache, TerminologyStats};
use super::local::{ValueSetIndex, collect_contains};
use super::settings::{RemoteSettings, Secret};
use super::{Subsumption, TerminologyError, TerminologySource};

/// Codes asked for per `$expand` page (servers may return fewer).
const EXPAND_PAGE_SIZE: usize = 1000;
/// Largest expansion kept in memory.
const MAX_EXPANSION_CODES: usize = 1_000_000;
/// Largest response body read.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Value sets expanded at once at start-up.
const PRE_EXPAND_CONCURRENCY: usize = 4;
/// Upper bound of the whole start-up pre-expansion (each page is bounded by the timeout too).
const PRE_EXPAND_LIMIT: Duration = Duration::from_secs(300);
/// After this many failed expansions in a row the server is taken to be down and the remaining
/// value sets are not tried (start-up is not held up by a server that times out on every one).
const PRE_EXPAND_GIVE_UP: usize = 8;
/// Failed pre-expansions logged one by one (the rest are counted).
const MAX_LOGGED_FAILURES: usize = 20;
/// Extra wait for an answer the runtime produced right at the deadline.
const WAIT_GRACE: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Copy)]
enum Operation {
    ValidateCode,
    Expand,
    Lookup,
    Subsumes,
}

impl Operation {
    fn path(self) -> &'static str {
        match self {
            Self::ValidateCode => "ValueSet/$validate-code",
            Self::Expand => "ValueSet/$expand",
            Self::Lookup => "CodeSystem/$lookup",
            Self::Subsumes => "CodeSystem/$subsumes",
        }
    }
}

/// `url|version` → (`url`, `version`).
fn split_version(url: &str) -> (&str, Option<&str>) {
    match url.split_once('|') {
        Some((url, version)) => (url, Some(version)),
        None => (url, None),
    }
}

fn timeout_error(op: Operation, about: &str) -> TerminologyError {
    TerminologyError::Timeout(format!("{} for `{about}`", op.path()))
}

fn server_error(op: Operation, about: &str, what: impl fmt::Display) -> TerminologyError {
    TerminologyError::Server(format!("{} for `{about}`: {what}", op.path()))
}

/// The parameter `name` of a FHIR `Parameters` resource.
fn parameter<'a>(parameters: &'a Value, name: &str) -> Option<&'a Value> {
    parameters
        .get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}

fn is_operation_outcome(body: &Value) -> bool {
    body.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
}

/// Whether an `OperationOutcome` says the thing asked about does not exist.
fn is_not_found(outcome: &Value) -> bool {
    outcome
        .get("issue")
        .and_then(Value::as_array)
        .is_some_and(|issues| {
            issues
                .iter()
                .any(|i| i.get("code").and_then(Value::as_str) == Some("not-found"))
        })
}

/// The readable text of an `OperationOutcome`: each issue's severity and diagnostics (or details).
fn outcome_text(outcome: &Value) -> String {
    let issues: Vec<String> = outcome
        .get("issue")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|issue| {
            let severity = issue
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("error");
            let text = issue
                .get("diagnostics")
                .and_then(Value::as_str)
                .or_else(|| issue.pointer("/details/text").and_then(Value::as_str))
                .or_else(|| issue.get("code").and_then(Value::as_str))
                .unwrap_or("no details");
            format!("{severity}: {text}")
        })
        .collect();
    if issues.is_empty() {
        "OperationOutcome without issues".into()
    } else {
        issues.join("; ")
    }
}

/// The innermost cause of a transport error (no URL: it carries the code being asked about).
fn root_cause(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if std::ptr::addr_eq(cause, error as &dyn std::error::Error) {
        "request failed".into()
    } else {
        cause.to_string()
    }
}

/// How one HTTP attempt ended.
enum Attempt {
    /// A final answer (`Ok(None)` = not found) or an error not worth retrying.
    Done(Result<Option<Value>, TerminologyError>),
    /// A 5xx, a timeout or a connection error.
    Retry(TerminologyError),
}

impl Attempt {
    fn failed(&self) -> bool {
        matches!(self, Self::Retry(_) | Self::Done(Err(_)))
    }
}

/// The HTTP side: async, shared with the tasks on the runtime.
struct Client {
    http: reqwest::Client,
    /// Ends with `/`, so operation paths join below it.
    base: Url,
    token: Option<Secret>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    counters: Arc<Counters>,
}

impl Client {
    fn new(settings: &RemoteSettings, counters: Arc<Counters>) -> Result<Self, TerminologyError> {
        settings.validate().map_err(TerminologyError::Config)?;
        let mut base = Url::parse(&settings.base_url)
            .map_err(|e| TerminologyError::Config(format!("terminology.remote.base_url: {e}")))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .connect_timeout(settings.timeout().min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("cardinal/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                TerminologyError::Config(format!("cannot build the terminology HTTP client: {e}"))
            })?;
        Ok(Self {
            http,
            base,
            token: settings.bearer_token.clone(),
            retries: settings.retries,
            backoff: settings.backoff(),
            timeout: settings.timeout(),
            counters,
        })
    }

    /// `GET base/op?params`, retried on 5xx, timeouts and connection errors while `end` allows.
    async fn get(
        &self,
        op: Operation,
        about: &str,
        params: &[(&str, &str)],
        end: Instant,
    ) -> Result<Option<Value>, TerminologyError> {
        let mut url = self
            .base
            .join(op.path())
            .map_err(|e| server_error(op, about, e))?;
        url.query_pairs_mut().extend_pairs(params);
        let mut retried = 0;
        loop {
            let now = Instant::now();
            if now >= end {
                return Err(timeout_error(op, about));
            }
            let attempt = self.attempt(&url, op, about, end - now).await;
            let error = match attempt {
                Attempt::Done(result) => return result,
                Attempt::Retry(error) => error,
            };
            let wait = self.backoff.saturating_mul(1 << retried.min(16));
            if retried >= self.retries || Instant::now() + wait >= end {
                return Err(error);
            }
            tracing::debug!(
                operation = op.path(),
                about,
                retry = retried + 1,
                %error,
                "retrying terminology request"
            );
            tokio::time::sleep(wait).await;
            retried += 1;
        }
    }

    async fn attempt(&self, url: &Url, op: Operation, about: &str, budget: Duration) -> Attempt {
        let mut request = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/fhir+json")
            .timeout(budget);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let started = Instant::now();
        let attempt = match request.send().await {
            Ok(response) => {
                let status = response.status();
                match read_body(response).await {
                    Ok(body) => classify(op, about, status, &body),
                    Err(error) => transport_failure(op, about, &error),
                }
            }
            Err(error) => transport_failure(op, about, &error),
        };
        self.counters
            .remote_call(started.elapsed(), attempt.failed());
        attempt
    }

    async fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        end: Instant,
    ) -> Result<Option<bool>, TerminologyError> {
        let op = Operation::ValidateCode;
        let (value_set, version) = split_version(url);
        let mut params = vec![("url", value_set), ("code", code)];
        if !system.is_empty() {
            params.push(("system", system));
        }
        if let Some(version) = version {
            params.push(("valueSetVersion", version));
        }
        let Some(body) = self.get(op, url, &params, end).await? else {
            return Ok(None);
        };
        parameter(&body, "result")
            .and_then(|p| p.get("valueBoolean"))
            .and_then(Value::as_bool)
            .map(Some)
            .ok_or_else(|| server_error(op, url, "the answer has no boolean `result` parameter"))
    }

    async fn lookup(
        &self,
        system: &str,
        code: &str,
        end: Instant,
    ) -> Result<Option<String>, TerminologyError> {
        let params = [("system", system), ("code", code)];
        let Some(body) = self.get(Operation::Lookup, system, &params, end).await? else {
            return Ok(None);
        };
        Ok(parameter(&body, "display")
            .and_then(|p| p.get("valueString"))
            .and_then(Value::as_str)
            .map(str::to_owned))
    }

    async fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        end: Instant,
    ) -> Result<Option<Subsumption>, TerminologyError> {
        let op = Operation::Subsumes;
        let params = [("system", system), ("codeA", a), ("codeB", b)];
        let Some(body) = self.get(op, system, &params, end).await? else {
            return Ok(None);
        };
        let outcome = parameter(&body, "outcome").and_then(|p| p.get("valueCode"));
        match outcome.and_then(Value::as_str).and_then(Subsumption::parse) {
            Some(relation) => Ok(Some(relation)),
            None => Err(server_error(
                op,
                system,
                "the answer has no valid `outcome` parameter",
            )),
        }
    }

    /// Every code of a value set, page by page until `expansion.total`; `None` if unknown.
    async fn expand(&self, url: &str) -> Result<Option<ValueSetIndex>, TerminologyError> {
        let op = Operation::Expand;
        let (value_set, version) = split_version(url);
        let count = EXPAND_PAGE_SIZE.to_string();
        let mut index = ValueSetIndex::default();
        let mut offset = 0usize;
        loop {
            let offset_text = offset.to_string();
            let mut params = vec![
                ("url", value_set),
                ("offset", offset_text.as_str()),
                ("count", count.as_str()),
            ];
            if let Some(version) = version {
                params.push(("valueSetVersion", version));
            }
            let end = Instant::now() + self.timeout;
            let body = match self.get(op, url, &params, end).await? {
                Some(body) => body,
                None if offset == 0 => return Ok(None),
                None => return Err(server_error(op, url, format!("no page at offset {offset}"))),
            };
            let expansion = body
                .get("expansion")
                .ok_or_else(|| server_error(op, url, "the answer has no `expansion`"))?;
            if let Some(echoed) = expansion.get("offset").and_then(Value::as_u64) {
                if echoed != offset as u64 {
                    return Err(server_error(
                        op,
                        url,
                        format!("asked for offset {offset}, got {echoed}"),
                    ));
                }
            }
            let contains = expansion
                .get("contains")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut entries = Vec::new();
            collect_contains(contains, &mut entries);
            for (system, code, _) in &entries {
                index.insert(system, code);
            }
            if index.len() > MAX_EXPANSION_CODES {
                return Err(server_error(
                    op,
                    url,
                    format!("more than {MAX_EXPANSION_CODES} codes"),
                ));
            }
            offset += contains.len();
            let total = expansion.get("total").and_then(Value::as_u64);
            let done = match total {
                Some(total) => offset as u64 >= total,
                None => contains.len() < EXPAND_PAGE_SIZE,
            };
            if done {
                return Ok(Some(index));
            }
            if contains.is_empty() {
                return Err(server_error(
                    op,
                    url,
                    format!(
                        "the expansion stopped at {offset} of {} codes",
                        total.unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            // Too large to be a terminology answer; keep what fits and let parsing fail.
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn transport_failure(op: Operation, about: &str, error: &reqwest::Error) -> Attempt {
    if error.is_timeout() {
        Attempt::Retry(timeout_error(op, about))
    } else if error.is_connect() {
        Attempt::Retry(server_error(
            op,
            about,
            format_args!(
                "cannot connect to the terminology server ({})",
                root_cause(error)
            ),
        ))
    } else if error.is_request() || error.is_body() {
        Attempt::Retry(server_error(op, about, root_cause(error)))
    } else {
        Attempt::Done(Err(server_error(op, about, root_cause(error))))
    }
}

/// Reads an HTTP answer: a resource, "not found", or an error (retryable for 5xx).
fn classify(op: Operation, about: &str, status: StatusCode, body: &[u8]) -> Attempt {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let outcome = json.as_ref().filter(|j| is_operation_outcome(j));
    if status == StatusCode::NOT_FOUND
        || status == StatusCode::GONE
        || (status.is_client_error() && outcome.is_some_and(is_not_found))
    {
        return Attempt::Done(Ok(None));
    }
    if status.is_success() {
        return match outcome {
            Some(outcome) if is_not_found(outcome) => Attempt::Done(Ok(None)),
            Some(outcome) => Attempt::Done(Err(server_error(op, about, outcome_text(outcome)))),
            None => match json {
                Some(json) => Attempt::Done(Ok(Some(json))),
                None => Attempt::Done(Err(server_error(op, about, "the answer is not JSON"))),
            },
        };
    }
    let text = match outcome {
        Some(outcome) => format!("HTTP {}: {}", status.as_u16(), outcome_text(outcome)),
        None => format!("HTTP {}", status.as_u16()),
    };
    let error = server_error(op, about, text);
    if status.is_server_error() {
        Attempt::Retry(error)
    } else {
        Attempt::Done(Err(error))
    }
}

/// What start-up pre-expansion did.
#[derive(Debug, Clone, Default)]
pub struct PreExpandReport {
    /// Value sets asked for.
    pub requested: usize,
    /// Value sets expanded and kept in memory, and their codes.
    pub value_sets: usize,
    pub codes: usize,
    /// Value sets the server does not know.
    pub unknown: Vec<String>,
    /// Value sets whose expansion failed, with the error (answered per code instead).
    pub failed: Vec<(String, String)>,
    pub elapsed: Duration,
    /// Approximate heap held by the expansions.
    pub approx_bytes: usize,
}

impl fmt::Display for PreExpandReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} of {} value sets pre-expanded ({} codes) in {:.1} ms, ~{:.1} MiB; {} unknown, {} failed",
            self.value_sets,
            self.requested,
            self.codes,
            self.elapsed.as_secs_f64() * 1000.0,
            self.approx_bytes as f64 / (1024.0 * 1024.0),
            self.unknown.len(),
            self.failed.len()
        )
    }
}

/// A runtime that may be dropped anywhere: dropping a tokio runtime inside async code panics, so
/// it is shut down in the background instead.
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Whether the current thread is inside a multi-threaded tokio runtime, where `block_in_place`
/// is allowed (on a current-thread runtime it would panic).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok_and(|handle| {
        matches!(
            handle.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        )
    })
}

/// The remote source: a cache in front of the server, plus the value sets expanded at start-up.
pub struct RemoteTerminology {
    client: Arc<Client>,
    cache: TerminologyCache,
    counters: Arc<Counters>,
    expanded: RwLock<HashMap<Box<str>, Arc<ValueSetIndex>>>,
    timeout: Duration,
    pre_expand: bool,
    runtime: OwnedRuntime,
}

impl fmt::Debug for RemoteTerminology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteTerminology")
            .field("base_url", &self.client.base.as_str())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RemoteTerminology {
    /// Validates `settings` and starts the client's runtime (no request is sent yet).
    pub fn new(settings: &RemoteSettings) -> Result<Self, TerminologyError> {
        let counters = Arc::new(Counters::default());
        let client = Client::new(settings, counters.clone())?;
        if client.token.is_some() && client.base.scheme() == "http" {
            let host = client.base.host_str().unwrap_or_default();
            if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
                tracing::warn!(host, "the terminology bearer token is sent over plain HTTP");
            }
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cardinal-terminology")
            .enable_all()
            .build()
            .map_err(|e| {
                TerminologyError::Config(format!("cannot start the terminology runtime: {e}"))
            })?;
        Ok(Self {
            client: Arc::new(client),
            cache: TerminologyCache::new(
                settings.cache_ttl(),
                settings.cache_capacity,
                settings.stale_ttl(),
                counters.clone(),
            ),
            counters,
            expanded: RwLock::default(),
            timeout: settings.timeout(),
            pre_expand: settings.pre_expand,
            runtime: OwnedRuntime(Some(runtime)),
        })
    }

    pub fn base_url(&self) -> &str {
        self.client.base.as_str()
    }

    /// Whether start-up should expand the value sets rules name (`pre_expand`).
    pub fn pre_expand_enabled(&self) -> bool {
        self.pre_expand
    }

    pub fn stats(&self) -> TerminologyStats {
        self.cache.stats()
    }

    /// Forgets every cached answer (pre-expanded value sets and last-known-good answers stay).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Whether `url` was expanded at start-up (membership is answered in memory).
    pub fn is_pre_expanded(&self, url: &str) -> bool {
        self.read_expanded(|expanded| expanded.contains_key(url))
    }

    fn read_expanded<R>(&self, f: impl FnOnce(&HashMap<Box<str>, Arc<ValueSetIndex>>) -> R) -> R {
        f(&self.expanded.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Expands `urls` with `$expand` (a few at a time) and keeps them in memory. Failures are
    /// logged and reported, never fatal: those value sets are answered per code through the cache.
    pub fn pre_expand(&self, urls: &[String]) -> PreExpandReport {
        let started = Instant::now();
        let todo: Vec<String> = urls
            .iter()
            .filter(|url| !self.is_pre_expanded(url))
            .cloned()
            .collect();
        let mut report = PreExpandReport {
            requested: todo.len(),
            ..PreExpandReport::default()
        };
        if todo.is_empty() {
            return report;
        }
        let client = self.client.clone();
        let urls = todo.clone();
        let expansions = self.block_on(
            started + PRE_EXPAND_LIMIT,
            "start-up pre-expansion".into(),
            async move { Ok(expand_all(client, urls).await) },
        );
        let expansions = match expansions {
            Ok(expansions) => expansions,
            Err(error) => todo
                .into_iter()
                .map(|url| (url, Err(error.clone())))
                .collect(),
        };
        let mut expanded = self
            .expanded
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (url, result) in expansions {
            match result {
                Ok(Some(index)) => {
                    report.value_sets += 1;
                    report.codes += index.len();
                    report.approx_bytes += index.approx_bytes();
                    expanded.insert(url.into(), Arc::new(index));
                }
                Ok(None) => {
                    tracing::warn!(
                        value_set = %url,
                        "the terminology server does not know this value set"
                    );
                    report.unknown.push(url);
                }
                Err(error) => {
                    // Each failure is named, up to a point; the summary below gives the count.
                    if report.failed.len() < MAX_LOGGED_FAILURES {
                        tracing::warn!(
                            value_set = %url,
                            %error,
                            "pre-expansion failed; membership will be asked per code"
                        );
                    }
                    report.failed.push((url, error.to_string()));
                }
            }
        }
        drop(expanded);
        let counters = &self.counters;
        counters
            .pre_expanded_value_sets
            .fetch_add(report.value_sets as u64, Ordering::Relaxed);
        counters
            .pre_expanded_codes
            .fetch_add(report.codes as u64, Ordering::Relaxed);
        report.elapsed = started.elapsed();
        tracing::info!(
            requested = report.requested,
            value_sets = report.value_sets,
            codes = report.codes,
            unknown = report.unknown.len(),
            failed = report.failed.len(),
            load_ms = report.elapsed.as_secs_f64() * 1000.0,
            approx_bytes = report.approx_bytes,
            "remote value sets pre-expanded"
        );
        if let Some((first, _)) = report.failed.first() {
            tracing::warn!(
                failed = report.failed.len(),
                first = %first,
                "value sets could not be pre-expanded; they are answered per code through the cache"
            );
        }
        report
    }

    /// Runs `future` on the source's runtime and waits for it until `end` at most. Never panics,
    /// whatever thread it is called from.
    fn block_on<T, F>(&self, end: Instant, label: String, future: F) -> Result<T, TerminologyError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, TerminologyError>> + Send + 'static,
    {
        if Instant::now() >= end {
            return Err(TerminologyError::Timeout(label));
        }
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(TerminologyError::Server(
                "the terminology client is stopped".into(),
            ));
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let timeout_label = label.clone();
        let task = runtime.spawn(async move {
            let result = tokio::time::timeout_at(tokio::time::Instant::from_std(end), future)
                .await
                .unwrap_or(Err(TerminologyError::Timeout(timeout_label)));
            let _ = tx.send(result);
        });
        let wait =
            move || rx.recv_timeout(end.saturating_duration_since(Instant::now()) + WAIT_GRACE);
        let received = if on_multi_thread_runtime() {
            tokio::task::block_in_place(wait)
        } else {
            wait()
        };
        received.unwrap_or_else(|_| {
            task.abort();
            Err(TerminologyError::Timeout(label))
        })
    }

    /// When a call that must finish by `deadline` gives up.
    fn end(&self, deadline: Instant) -> Instant {
        deadline.min(Instant::now() + self.timeout)
    }
}

/// Expands every URL, at most [`PRE_EXPAND_CONCURRENCY`] at a time.
async fn expand_all(
    client: Arc<Client>,
    urls: Vec<String>,
) -> Vec<(String, Result<Option<ValueSetIndex>, TerminologyError>)> {
    let limit = Arc::new(tokio::sync::Semaphore::new(PRE_EXPAND_CONCURRENCY));
    let failures_in_a_row = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for url in urls {
        let client = client.clone();
        let limit = limit.clone();
        let failures = failures_in_a_row.clone();
        let task_url = url.clone();
        let handle = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            if failures.load(Ordering::Relaxed) >= PRE_EXPAND_GIVE_UP {
                return Err(TerminologyError::Server(format!(
                    "not tried: the last {PRE_EXPAND_GIVE_UP} expansions failed"
                )));
            }
            let result = client.expand(&task_url).await;
            if result.is_ok() {
                failures.store(0, Ordering::Relaxed);
            } else {
                failures.fetch_add(1, Ordering::Relaxed);
            }
            result
        });
        names.insert(handle.id(), url);
    }
    let mut results = Vec::with_capacity(names.len());
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, result)) => (id, result),
            Err(error) => (
                error.id(),
                Err(TerminologyError::Server("the expansion task failed".into())),
            ),
        };
        if let Some(url) = names.remove(&id) {
            results.push((url, result));
        }
    }
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results
}

fn wrong_answer() -> TerminologyError {
    TerminologyError::Server("internal error: cached answer of another operation".into())
}

impl TerminologySource for RemoteTerminology {
    fn name(&self) -> &'static str {
        "remote"
    }

    fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<bool>, TerminologyError> {
        let pre_expanded = self
            .read_expanded(|expanded| expanded.get(url).map(|index| index.contains(system, code)));
        if let Some(member) = pre_expanded {
            return Ok(Some(member));
        }
        let key = Key::ValidateCode {
            value_set: url,
            system,
            code,
        };
        let answer = self.cache.get_or_fetch(key, || {
            let end = self.end(deadline);
            let client = self.client.clone();
            let (url, system, code) = (url.to_owned(), system.to_owned(), code.to_owned());
            let label = format!("{} for `{url}`", Operation::ValidateCode.path());
            self.block_on(end, label, async move {
                client.validate_code(&url, &system, &code, end).await
            })
            .map(Answer::Member)
        })?;
        match answer {
            Answer::Member(member) => Ok(member),
            _ => Err(wrong_answer()),
        }
    }

    fn lookup_display(
        &self,
        system: &str,
        code: &str,
        deadline: Instant,
    ) -> Result<Option<String>, TerminologyError> {
        let key = Key::Lookup { system, code };
        let answer = self.cache.get_or_fetch(key, || {
            let end = self.end(deadline);
            let client = self.client.clone();
            let (system, code) = (system.to_owned(), code.to_owned());
            let label = format!("{} for `{system}`", Operation::Lookup.path());
            self.block_on(end, label, async move {
                client.lookup(&system, &code, end).await
            })
            .map(|display| Answer::Display(display.map(Arc::from)))
        })?;
        match answer {
            Answer::Display(display) => Ok(display.map(|d| d.to_string())),
            _ => Err(wrong_answer()),
        }
    }

    fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        deadline: Instant,
    ) -> Result<Option<Subsumption>, TerminologyError> {
        let key = Key::Subsumes { system, a, b };
        let answer = self.cache.get_or_fetch(key, || {
            let end = self.end(deadline);
            let client = self.client.clone();
            let (system, a, b) = (system.to_owned(), a.to_owned(), b.to_owned());
            let label = format!("{} for `{system}`", Operation::Subsumes.path());
            self.block_on(end, label, async move {
                client.subsumes(&system, &a, &b, end).await
            })
            .map(Answer::Subsumption)
        })?;
        match answer {
            Answer::Subsumption(relation) => Ok(relation),
            _ => Err(wrong_answer()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn operation_outcomes_are_read() {
        let outcome = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "too-costly", "diagnostics": "expansion too large"},
            {"severity": "warning", "code": "processing", "details": {"text": "try later"}}]});
        assert_eq!(
            outcome_text(&outcome),
            "error: expansion too large; warning: try later"
        );
        assert!(!is_not_found(&outcome));
        let missing = json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "not-found"}]});
        assert!(is_not_found(&missing));
        let op = Operation::ValidateCode;
        let body = serde_json::to_vec(&missing).unwrap_or_default();
        assert!(matches!(
            classify(op, "vs", StatusCode::BAD_REQUEST, &body),
            Attempt::Done(Ok(None))
        ));
        assert!(matches!(
            classify(op, "vs", StatusCode::NOT_FOUND, b""),
            Attempt::Done(Ok(None))
        ));
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        match classify(op, "vs", StatusCode::BAD_REQUEST, &body) {
            Attempt::Done(Err(TerminologyError::Server(text))) => {
                assert!(
                    text.contains("HTTP 400: error: expansion too large"),
                    "{text}"
                );
            }
            _ => panic!("a 400 OperationOutcome is a final server error"),
        }
        assert!(matches!(
            classify(op, "vs", StatusCode::SERVICE_UNAVAILABLE, &body),
            Attempt::Retry(TerminologyError::Server(_))
        ));
        assert!(matches!(
            classify(op, "vs", StatusCode::OK, &body),
            Attempt::Done(Err(TerminologyError::Server(_)))
        ));
    }

    #[test]
    fn parameters_and_versions() {
        let params = json!({"resourceType": "Parameters", "parameter": [
            {"name": "result", "valueBoolean": true}, {"name": "display", "valueString": "x"}]});
        assert_eq!(
            parameter(&params, "result").and_then(|p| p.get("valueBoolean")),
            Some(&json!(true))
        );
        assert!(parameter(&params, "message").is_none());
        assert_eq!(
            split_version("http://x/ValueSet/a|2"),
            ("http://x/ValueSet/a", Some("2"))
        );
        assert_eq!(
            split_version("http://x/ValueSet/a"),
            ("http://x/ValueSet/a", None)
        );
    }
}
