//! Admission control: whether a hook call is taken at all, decided on arrival.
//!
//! Why: evaluation is CPU work. Past the load a replica can carry, waiting only makes every caller
//! late, and an EHR waiting on CDS makes a clinician wait. So a call is admitted on arrival — before
//! its body is read, before prefetch — only while fewer than `max_concurrent_evaluations +
//! max_queued_calls` calls are in the replica; otherwise it is refused at once (HTTP 503 with
//! `Retry-After`, gRPC `UNAVAILABLE`) and the EHR can retry elsewhere. An admitted call must start
//! evaluating by its deadline, counted from arrival (prefetch time counts); one that cannot is refused
//! the same way rather than answered late. Readiness reports overload so a load balancer routes
//! around the replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a replica reports itself overloaded after it last refused a call.
const OVERLOAD_MEMORY: Duration = Duration::from_secs(1);

/// Seconds an EHR is asked to wait before retrying a refused call (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// Every evaluation slot and queue place was taken when the call arrived.
    #[error("Cardinal is at capacity: every evaluation slot and queue place is taken")]
    QueueFull,
    /// The call could not start evaluating by its deadline.
    #[error("Cardinal could not start this call within its {0} ms deadline")]
    Deadline(u64),
    /// The server is shutting down.
    #[error("Cardinal is shutting down")]
    Draining,
}

impl Overloaded {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Deadline(_) => "deadline",
            Self::Draining => "draining",
        }
    }
}

/// Admission settings.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionLimits {
    pub max_concurrent_evaluations: usize,
    pub max_queued_calls: usize,
    /// From arrival to the start of evaluation.
    pub queue_timeout: Duration,
}

/// The replica's admission state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Admission {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    evaluations: Arc<Semaphore>,
    /// Calls admitted and not yet answered (prefetching, queued or evaluating).
    admitted: AtomicUsize,
    capacity: usize,
    queue_timeout: Duration,
    epoch: Instant,
    /// Milliseconds since `epoch` of the last refusal, plus one (0: never).
    last_refusal: AtomicU64,
    draining: AtomicBool,
}

impl Admission {
    pub fn new(limits: AdmissionLimits) -> Self {
        let slots = limits.max_concurrent_evaluations.max(1);
        Self {
            inner: Arc::new(Inner {
                evaluations: Arc::new(Semaphore::new(slots)),
                admitted: AtomicUsize::new(0),
                capacity: slots.saturating_add(limits.max_queued_calls),
                queue_timeout: limits.queue_timeout,
                epoch: Instant::now(),
                last_refusal: AtomicU64::new(0),
                draining: AtomicBool::new(false),
            }),
        }
    }

    /// Admits a call that has just arrived, or refuses it at once.
    pub fn admit(&self) -> Result<Ticket, Overloaded> {
        let inner = &self.inner;
        if inner.draining.load(Ordering::Relaxed) {
            return Err(self.refused(Overloaded::Draining));
        }
        let taken = inner
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < inner.capacity).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Ticket {
                inner: Arc::clone(inner),
                arrived: Instant::now(),
            }),
            Err(_) => Err(self.refused(Overloaded::QueueFull)),
        }
    }

    fn refused(&self, why: Overloaded) -> Overloaded {
        self.inner.note_refusal();
        why
    }

    /// Calls admitted and not yet answered.
    pub fn admitted(&self) -> usize {
        self.inner.admitted.load(Ordering::Relaxed)
    }

    /// Whether a load balancer should send this replica fewer calls: it is full, or refused a call
    /// within the last second.
    pub fn overloaded(&self) -> bool {
        let inner = &self.inner;
        if inner.admitted.load(Ordering::Relaxed) >= inner.capacity {
            return true;
        }
        match inner.last_refusal.load(Ordering::Relaxed) {
            0 => false,
            at => {
                let since = inner.elapsed_ms().saturating_sub(at - 1);
                since < OVERLOAD_MEMORY.as_millis() as u64
            }
        }
    }

    /// Stops admitting calls (shutdown): new calls are refused, readiness fails.
    pub fn drain(&self) {
        self.inner.draining.store(true, Ordering::Relaxed);
    }

    pub fn draining(&self) -> bool {
        self.inner.draining.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn note_refusal(&self) {
        self.last_refusal
            .store(self.elapsed_ms().saturating_add(1), Ordering::Relaxed);
    }
}

/// An admitted call's place in the replica, released when the call is answered (dropped).
#[derive(Debug)]
pub struct Ticket {
    inner: Arc<Inner>,
    arrived: Instant,
}

impl Ticket {
    pub fn arrived(&self) -> Instant {
        self.arrived
    }

    /// Waits for an evaluation slot until the call's deadline (arrival + `queue_timeout`).
    pub async fn evaluation_slot(&self) -> Result<EvaluationSlot, Overloaded> {
        let deadline = self.arrived + self.inner.queue_timeout;
        let semaphore = Arc::clone(&self.inner.evaluations);
        let refused = || {
            self.inner.note_refusal();
            Overloaded::Deadline(u64::try_from(self.inner.queue_timeout.as_millis()).unwrap_or(0))
        };
        // A free slot is taken without touching the timer: the common case stays cheap.
        if let Ok(permit) = Arc::clone(&semaphore).try_acquire_owned() {
            return Ok(EvaluationSlot(permit));
        }
        match tokio::time::timeout_at(deadline.into(), semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(EvaluationSlot(permit)),
            // The semaphore is never closed; treat it like a missed deadline all the same.
            Ok(Err(_)) | Err(_) => Err(refused()),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.inner.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One of the `max_concurrent_evaluations` slots, held while the call's rules run.
#[derive(Debug)]
pub struct EvaluationSlot(#[allow(dead_code)] OwnedSemaphorePermit);

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(slots: usize, queued: usize, timeout_ms: u64) -> Admission {
        Admission::new(AdmissionLimits {
            max_concurrent_evaluations: slots,
            max_queued_calls: queued,
            queue_timeout: Duration::from_millis(timeout_ms),
        })
    }

    #[test]
    fn refuses_beyond_slots_plus_queue_and_recovers() {
        let a = admission(2, 1, 100);
        let tickets: Vec<_> = (0..3).filter_map(|_| a.admit().ok()).collect();
        assert_eq!(tickets.len(), 3);
        assert_eq!(a.admit().err(), Some(Overloaded::QueueFull));
        assert!(a.overloaded());
        drop(tickets);
        assert_eq!(a.admitted(), 0);
        assert!(a.admit().is_ok());
    }

    #[tokio::test]
    async fn a_call_that_cannot_start_by_its_deadline_is_refused() {
        let a = admission(1, 4, 30);
        let first = a.admit().ok();
        let slot = match &first {
            Some(t) => t.evaluation_slot().await.ok(),
            None => None,
        };
        assert!(slot.is_some());
        let second = a.admit().ok();
        let waited = match &second {
            Some(t) => t.evaluation_slot().await.err(),
            None => None,
        };
        assert_eq!(waited, Some(Overloaded::Deadline(30)));
        drop(slot);
        let third = a.admit().ok();
        let ok = match &third {
            Some(t) => t.evaluation_slot().await.is_ok(),
            None => false,
        };
        assert!(ok);
    }

    #[test]
    fn draining_refuses_everything() {
        let a = admission(2, 2, 100);
        a.drain();
        assert_eq!(a.admit().err(), Some(Overloaded::Draining));
        assert!(a.draining());
    }
}
