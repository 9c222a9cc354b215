//! The cache in front of the remote terminology server.
//!
//! - Keyed by operation plus what identifies the question: (value set `url[|version]`, system, code)
//!   for `$validate-code`, (system, code) for `$lookup`, (system, a, b) for `$subsumes`.
//! - Every answer is cached for the TTL, negative ones too ("not a member", "value set unknown",
//!   "no display"): a code that is not in a value set is asked about as often as one that is.
//! - Concurrent misses for one key are coalesced: one thread asks the server, the others wait for
//!   its answer (moka's `try_get_with`). The one asking is bounded by its deadline and the configured
//!   timeout, so the wait is bounded too; a waiter whose own deadline is earlier may wait until the
//!   asker's (at most one rule timeout later).
//! - Stale-if-error: every good answer is also written to a last-known-good store (bounded, longer
//!   TTL). When the server fails, that answer is served and counted; only a key never answered
//!   before fails the rule.
//!
//! Hits are answered on the caller's thread without touching the async runtime.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Equivalent;
use moka::notification::RemovalCause;
use moka::sync::Cache;

use super::{Subsumption, TerminologyError};

/// A snapshot of the terminology counters (for metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TerminologyStats {
    /// Answers served from the cache.
    pub hits: u64,
    /// Look-ups the cache could not answer (coalesced waiters included).
    pub misses: u64,
    /// Entries dropped to stay within the capacity.
    pub evictions: u64,
    /// Entries dropped because their TTL passed.
    pub expirations: u64,
    /// Answers served from the last-known-good store because the server failed.
    pub stale_answers: u64,
    /// HTTP requests sent to the server (retries and expansion pages included).
    pub remote_calls: u64,
    /// Requests that failed (timeout, connection error, 5xx, OperationOutcome); "not found" is an
    /// answer, not an error.
    pub remote_errors: u64,
    pub remote_latency_count: u64,
    pub remote_latency_sum: Duration,
    pub remote_latency_max: Duration,
    /// Entries currently in the cache (approximate).
    pub cached_entries: u64,
    /// Value sets expanded at start-up and their codes, answered without per-code calls.
    pub pre_expanded_value_sets: u64,
    pub pre_expanded_codes: u64,
}

/// The live counters behind [`TerminologyStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
    stale_answers: AtomicU64,
    remote_calls: AtomicU64,
    remote_errors: AtomicU64,
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_max_us: AtomicU64,
    pub(crate) pre_expanded_value_sets: AtomicU64,
    pub(crate) pre_expanded_codes: AtomicU64,
}

impl Counters {
    /// One HTTP request and how long it took.
    pub(crate) fn remote_call(&self, elapsed: Duration, failed: bool) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.remote_calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.remote_errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        self.latency_max_us.fetch_max(us, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TerminologyStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        TerminologyStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            evictions: get(&self.evictions),
            expirations: get(&self.expirations),
            stale_answers: get(&self.stale_answers),
            remote_calls: get(&self.remote_calls),
            remote_errors: get(&self.remote_errors),
            remote_latency_count: get(&self.latency_count),
            remote_latency_sum: Duration::from_micros(get(&self.latency_sum_us)),
            remote_latency_max: Duration::from_micros(get(&self.latency_max_us)),
            cached_entries: 0,
            pre_expanded_value_sets: get(&self.pre_expanded_value_sets),
            pre_expanded_codes: get(&self.pre_expanded_codes),
        }
    }
}

/// A cached answer. `None` = the server does not know the value set / code system / code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    Member(Option<bool>),
    Display(Option<Arc<str>>),
    Subsumption(Option<Subsumption>),
}

/// What a question is about, borrowed: hits build no owned key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key<'a> {
    ValidateCode {
        value_set: &'a str,
        system: &'a str,
        code: &'a str,
    },
    Lookup {
        system: &'a str,
        code: &'a str,
    },
    Subsumes {
        system: &'a str,
        a: &'a str,
        b: &'a str,
    },
}

impl Key<'_> {
    fn parts(&self) -> (u8, [&str; 3]) {
        match *self {
            Key::ValidateCode {
                value_set,
                system,
                code,
            } => (0, [value_set, system, code]),
            Key::Lookup { system, code } => (1, [system, code, ""]),
            Key::Subsumes { system, a, b } => (2, [system, a, b]),
        }
    }

    fn to_owned_key(self) -> OwnedKey {
        let (operation, [p, q, r]) = self.parts();
        OwnedKey {
            operation,
            parts: [p.into(), q.into(), r.into()],
        }
    }

    /// The operation and the value set or code system, for logs (never the code: patient data).
    pub(crate) fn describe(&self) -> (&'static str, &str) {
        match *self {
            Key::ValidateCode { value_set, .. } => ("ValueSet/$validate-code", value_set),
            Key::Lookup { system, .. } => ("CodeSystem/$lookup", system),
            Key::Subsumes { system, .. } => ("CodeSystem/$subsumes", system),
        }
    }
}

impl Hash for Key<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (operation, parts) = self.parts();
        hash_parts(operation, parts, state);
    }
}

/// The stored key: operation tag plus up to three strings. Hashes exactly like its [`Key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnedKey {
    operation: u8,
    parts: [Box<str>; 3],
}

impl Hash for OwnedKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [p, q, r] = &self.parts;
        hash_parts(self.operation, [p, q, r], state);
    }
}

fn hash_parts<H: Hasher>(operation: u8, parts: [&str; 3], state: &mut H) {
    state.write_u8(operation);
    for part in parts {
        part.hash(state);
    }
}

impl Equivalent<OwnedKey> for Key<'_> {
    fn equivalent(&self, key: &OwnedKey) -> bool {
        let (operation, parts) = self.parts();
        operation == key.operation && parts.iter().zip(&key.parts).all(|(a, b)| *a == &**b)
    }
}

/// Fresh answers (TTL) plus the last-known-good store (longer TTL), with counters.
pub(crate) struct TerminologyCache {
    fresh: Cache<OwnedKey, Answer>,
    last_good: Option<Cache<OwnedKey, Answer>>,
    counters: Arc<Counters>,
}

impl TerminologyCache {
    pub(crate) fn new(
        ttl: Duration,
        capacity: u64,
        stale_ttl: Duration,
        counters: Arc<Counters>,
    ) -> Self {
        let listener = counters.clone();
        let fresh = Cache::builder()
            .name("cardinal-terminology")
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |_key, _value, cause| match cause {
                RemovalCause::Size => {
                    listener.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener.expirations.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        let last_good = (!stale_ttl.is_zero()).then(|| {
            Cache::builder()
                .name("cardinal-terminology-last-good")
                .max_capacity(capacity)
                .time_to_live(stale_ttl.max(ttl))
                .build()
        });
        Self {
            fresh,
            last_good,
            counters,
        }
    }

    /// The cached answer for `key`, or `fetch`'s (one `fetch` per key at a time); on failure the
    /// last known good answer, if any.
    pub(crate) fn get_or_fetch(
        &self,
        key: Key<'_>,
        fetch: impl FnOnce() -> Result<Answer, TerminologyError>,
    ) -> Result<Answer, TerminologyError> {
        let (operation, about) = key.describe();
        if let Some(answer) = self.fresh.get(&key) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            // Hits are many and cheap: traced only when debug tracing is on.
            let _span = tracing::debug_span!(
                "terminology.lookup",
                terminology.source = "remote",
                terminology.operation = operation,
                terminology.target = about,
                terminology.cache = "hit",
            )
            .entered();
            return Ok(answer);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        // Value set or code system only: the code looked up is patient data.
        let span = tracing::info_span!(
            "terminology.lookup",
            terminology.source = "remote",
            terminology.operation = operation,
            terminology.target = about,
            terminology.cache = "miss",
            otel.status_code = tracing::field::Empty,
        );
        let _entered = span.enter();
        let result = self.fresh.try_get_with(key.to_owned_key(), || {
            let answer = fetch()?;
            if let Some(last_good) = &self.last_good {
                last_good.insert(key.to_owned_key(), answer.clone());
            }
            Ok::<_, TerminologyError>(answer)
        });
        match result {
            Ok(answer) => Ok(answer),
            Err(error) => match self.last_good.as_ref().and_then(|s| s.get(&key)) {
                Some(answer) => {
                    self.counters.stale_answers.fetch_add(1, Ordering::Relaxed);
                    span.record("terminology.cache", "stale");
                    tracing::debug!(
                        operation,
                        about,
                        %error,
                        "terminology server failed; serving the last known answer"
                    );
                    Ok(answer)
                }
                None => {
                    span.record("otel.status_code", "ERROR");
                    Err((*error).clone())
                }
            },
        }
    }

    pub(crate) fn stats(&self) -> TerminologyStats {
        TerminologyStats {
            cached_entries: self.fresh.entry_count(),
            ..self.counters.snapshot()
        }
    }

    /// Drops every fresh answer (the last-known-good store is kept).
    pub(crate) fn clear(&self) {
        self.fresh.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    fn hash_of(value: &impl Hash) -> u64 {
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        h.finish()
    }

    #[test]
    fn borrowed_and_owned_keys_agree() {
        let keys = [
            Key::ValidateCode {
                value_set: "http://x/ValueSet/a",
                system: "http://loinc.org",
                code: "4548-4",
            },
            Key::Lookup {
                system: "http://loinc.org",
                code: "4548-4",
            },
            Key::Subsumes {
                system: "http://loinc.org",
                a: "4548-4",
                b: "",
            },
        ];
        for key in keys {
            let owned = key.to_owned_key();
            assert_eq!(hash_of(&key), hash_of(&owned));
            assert!(key.equivalent(&owned));
        }
        assert!(!keys[1].equivalent(&keys[2].to_owned_key()));
    }

    #[test]
    fn answers_are_cached_and_failures_fall_back_to_the_last_good_answer() {
        let counters = Arc::new(Counters::default());
        let cache = TerminologyCache::new(
            Duration::from_secs(60),
            100,
            Duration::from_secs(600),
            counters,
        );
        let key = Key::Lookup {
            system: "s",
            code: "c",
        };
        let display = |d: &str| Answer::Display(Some(d.into()));
        let first = cache.get_or_fetch(key, || Ok(display("one")));
        assert_eq!(first.ok(), Some(display("one")));
        let second = cache.get_or_fetch(key, || Ok(display("two")));
        assert_eq!(second.ok(), Some(display("one")));
        cache.clear();
        let stale = cache.get_or_fetch(key, || Err(TerminologyError::Server("down".into())));
        assert_eq!(stale.ok(), Some(display("one")));
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.stale_answers), (1, 2, 1));
        let other = Key::Lookup {
            system: "s",
            code: "d",
        };
        let failed = cache.get_or_fetch(other, || Err(TerminologyError::Server("down".into())));
        assert!(matches!(failed, Err(TerminologyError::Server(_))));
    }
}
