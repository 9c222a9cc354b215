//! The wall-clock backstop's watchdog. Reading the clock on every operation would cost as much as the
//! operation, and reading it every N operations lets N slow operations (a copy of a large list, say,
//! which nothing charges) overrun the backstop. Instead one thread sleeps until the earliest backstop
//! of the calls in progress and then bumps a global alarm counter; a running rule compares the counter
//! on each operation (one relaxed load) and, when it moved, reads the clock against its own backstop.
//! A rule therefore stops within one operation of its backstop (plus the watchdog's granularity).

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The watchdog sleeps at least this long between wake-ups, handling every backstop that passed
/// meanwhile at once: a busy server ends thousands of calls a second, and waking for each one's
/// (mostly cancelled) deadline would cost more CPU than it saves. 1% of the default backstop.
const GRANULARITY: Duration = Duration::from_millis(10);

/// Bumped each time the backstop of a call still in progress passes.
static ALARMS: AtomicU64 = AtomicU64::new(0);

/// The alarm counter: a change means some call's backstop passed.
#[inline(always)]
pub(crate) fn alarms() -> u64 {
    ALARMS.load(Ordering::Relaxed)
}

/// Keeps a call's backstop watched; dropping it (the call ended) cancels the alarm.
#[derive(Debug)]
pub(crate) struct Watched {
    _live: Arc<()>,
}

struct Entry {
    at: Instant,
    live: Weak<()>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

struct Watchdog {
    pending: Mutex<BinaryHeap<Reverse<Entry>>>,
    wake: Condvar,
}

/// The watchdog, started on first use; `None` if its thread could not be started (the meter then
/// relies on its periodic clock reading alone).
fn watchdog() -> Option<&'static Watchdog> {
    static WATCHDOG: OnceLock<Option<&'static Watchdog>> = OnceLock::new();
    *WATCHDOG.get_or_init(|| {
        let dog: &'static Watchdog = Box::leak(Box::new(Watchdog {
            pending: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("cardinal-backstop".into())
            .spawn(move || run(dog))
            .ok()
            .map(|_| dog)
    })
}

fn run(dog: &Watchdog) {
    let mut pending = dog.pending.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse(e)| e.at <= now) {
            if let Some(Reverse(entry)) = pending.pop()
                && entry.live.strong_count() > 0
            {
                ALARMS.fetch_add(1, Ordering::Relaxed);
            }
        }
        pending = match pending.peek().map(|Reverse(e)| e.at) {
            Some(at) => {
                let wait = at.saturating_duration_since(now).max(GRANULARITY);
                dog.wake
                    .wait_timeout(pending, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => dog
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Watches `deadline` until the returned guard is dropped.
pub(crate) fn watch(deadline: Instant) -> Watched {
    let live = Arc::new(());
    if let Some(dog) = watchdog() {
        let mut pending = dog.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let earliest = pending.peek().is_none_or(|Reverse(e)| deadline < e.at);
        pending.push(Reverse(Entry {
            at: deadline,
            live: Arc::downgrade(&live),
        }));
        drop(pending);
        // Deadlines mostly arrive in order: the thread is woken only for a new earliest one.
        if earliest {
            dog.wake.notify_one();
        }
    }
    Watched { _live: live }
}
