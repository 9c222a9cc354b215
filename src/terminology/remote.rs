//! A remote FHIR R4 terminology server as a terminology source: its answers cached, the value sets
//! rules name expanded at start-up, every call bounded by the rule's deadline. The HTTP operations
//! themselves are in `client.rs`.
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
//! Error messages name the operation and the value set or code system, never the code (patient
//! data) and never the bearer token.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::cache::{Answer, Counters, Key, TerminologyCache, TerminologyStats};
use super::client::{Client, Operation};
use super::local::ValueSetIndex;
use super::settings::RemoteSettings;
use super::{Subsumption, TerminologyError, TerminologySource};

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
