//! Replay protection: each `(iss, jti)` is accepted once within `jti_ttl_secs`. Per replica: a
//! token replayed to another replica is not caught here (see the README's Security section).

use std::time::Duration;

use moka::sync::Cache;

/// Remembered token ids at most. A full cache refuses new tokens rather than forget old ones (which
/// would let them be replayed); filling it takes this many validly signed tokens within the TTL.
const CAPACITY: u64 = 1_000_000;

pub struct ReplayCache {
    seen: Cache<(String, String), ()>,
}

/// Why a `jti` was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    Seen,
    Full,
}

impl ReplayCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            // No size bound in the cache itself: its eviction could drop an id still in its window.
            seen: Cache::builder().time_to_live(ttl).build(),
        }
    }

    /// Records `(issuer, jti)`; refuses one already seen (atomically: of two concurrent calls with
    /// the same id, one wins).
    pub fn accept(&self, issuer: &str, jti: &str) -> Result<(), Replay> {
        if self.seen.entry_count() >= CAPACITY {
            self.seen.run_pending_tasks();
            if self.seen.entry_count() >= CAPACITY {
                return Err(Replay::Full);
            }
        }
        let entry = self
            .seen
            .entry((issuer.to_owned(), jti.to_owned()))
            .or_insert(());
        if entry.is_fresh() {
            Ok(())
        } else {
            Err(Replay::Seen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jti_is_accepted_once_per_issuer() {
        let cache = ReplayCache::new(Duration::from_secs(60));
        assert_eq!(cache.accept("https://a", "1"), Ok(()));
        assert_eq!(cache.accept("https://a", "1"), Err(Replay::Seen));
        assert_eq!(cache.accept("https://b", "1"), Ok(()));
    }
}
