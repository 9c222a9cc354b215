//! State of the rule run in progress on this thread: its operation meter, backstop, and what it has
//! emitted.
//!
//! A Rhai evaluation is synchronous and stays on one thread, so native functions reach the run they
//! belong to through a thread-local instead of a shared, mutable context the rule could see.
//!
//! Limits are counted in operations, never in time, so that load on the machine cannot change which
//! rules finish: the meter counts every Rhai operation (each call of the progress hook, including
//! those inside closures and comparisons that native functions run, which Rhai's own counter loses)
//! plus the work native helpers declare with [`charge`] before doing it. The wall clock is only a
//! backstop for work nothing charges, set far above any normal call.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rhai::{Dynamic, EvalAltResult, Position};

use crate::cds_hooks::{Action, Card, Fact, Source};

use super::outcome::ConditionCheck;
use super::{DataTables, backstop};

/// Value carried by `ErrorTerminated` when the call's wall-clock backstop passed.
pub(crate) const TIMEOUT_TOKEN: &str = "cardinal:timeout";
/// Value carried by `ErrorTerminated` when the rule used its own operation limit.
pub(crate) const OPERATIONS_TOKEN: &str = "cardinal:operations";
/// Value carried by `ErrorTerminated` when the rule used what was left of the call's operations.
pub(crate) const BUDGET_TOKEN: &str = "cardinal:budget";
/// Value carried by `ErrorTerminated` when `require(...)` found a condition false.
pub(crate) const NOT_MET_TOKEN: &str = "cardinal:not-met";

/// Units of work between two readings of the clock, besides the watchdog's alarms (`backstop`): the
/// fallback if its thread could not start, cheap at this interval.
const CLOCK_CHECK_EVERY: u64 = 1024;

/// Why the meter stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The rule's own operation limit.
    Operations,
    /// What the call had left, spent by this rule after earlier rules used the rest.
    Budget,
    /// The call's wall-clock backstop.
    Backstop,
}

impl Stop {
    fn token(self) -> &'static str {
        match self {
            Self::Operations => OPERATIONS_TOKEN,
            Self::Budget => BUDGET_TOKEN,
            Self::Backstop => TIMEOUT_TOKEN,
        }
    }

    pub(crate) fn error(self) -> Box<EvalAltResult> {
        EvalAltResult::ErrorTerminated(Dynamic::from(self.token()), Position::NONE).into()
    }
}

/// What a run may use: operations up to `limit` (stopping with `at_limit`), until `deadline`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Allowance {
    pub limit: u64,
    pub at_limit: Stop,
    pub deadline: Instant,
}

/// The operation meter. Plain cells: the common path of [`tick`] is one add and one compare.
struct Meter {
    used: Cell<u64>,
    /// `used` at which the slow path runs next: the limit, the next clock reading, or 0 once stopped.
    next_check: Cell<u64>,
    next_clock: Cell<u64>,
    allowance: Cell<Option<Allowance>>,
    stop: Cell<Option<Stop>>,
    /// The watchdog's alarm count when last looked at: a change means some backstop passed.
    alarms: Cell<u64>,
}

impl Meter {
    /// Adds `n` units; `Some` once the run must stop (and on every later call: a stop is final).
    #[inline(always)]
    fn add(&self, n: u64) -> Option<Stop> {
        let used = self.used.get().saturating_add(n);
        self.used.set(used);
        if used < self.next_check.get() && backstop::alarms() == self.alarms.get() {
            None
        } else {
            self.check(used)
        }
    }

    #[cold]
    #[inline(never)]
    fn check(&self, used: u64) -> Option<Stop> {
        if let Some(stop) = self.stop.get() {
            return Some(stop);
        }
        let alarms = backstop::alarms();
        let alarmed = alarms != self.alarms.get();
        self.alarms.set(alarms);
        // Outside a run (e.g. constant folding at compile time) nothing is limited.
        let Some(allowance) = self.allowance.get() else {
            self.next_check.set(u64::MAX);
            return None;
        };
        let stop = if used > allowance.limit {
            Some(allowance.at_limit)
        } else if (alarmed || used >= self.next_clock.get()) && Instant::now() >= allowance.deadline
        {
            Some(Stop::Backstop)
        } else {
            None
        };
        if stop.is_some() {
            self.stop.set(stop);
            self.next_check.set(0);
            return stop;
        }
        if used >= self.next_clock.get() {
            self.next_clock.set(used.saturating_add(CLOCK_CHECK_EVERY));
        }
        let limit = allowance.limit.saturating_add(1);
        self.next_check.set(limit.min(self.next_clock.get()));
        None
    }

    fn start(&self, allowance: Allowance) {
        self.used.set(0);
        self.stop.set(None);
        self.alarms.set(backstop::alarms());
        self.allowance.set(Some(allowance));
        // The clock is read on the first unit, so a run that starts past the backstop stops at once.
        self.next_clock.set(0);
        self.next_check.set(0);
    }

    fn finish(&self) -> (u64, Option<Stop>) {
        self.allowance.set(None);
        self.next_check.set(u64::MAX);
        (self.used.get(), self.stop.take())
    }
}

pub(crate) struct RunState {
    pub now: DateTime<Utc>,
    pub default_source: Source,
    pub cards: Vec<Card>,
    pub system_actions: Vec<Action>,
    pub facts: Vec<Fact>,
    pub conditions: Vec<ConditionCheck>,
    pub prints: Vec<String>,
    /// The service's data tables (`data("name")`).
    pub data: Arc<DataTables>,
    /// Set when a terminology look-up failed, so the error is reported as a terminology error.
    pub terminology_failed: bool,
    /// When the call's backstop passes (bounds remote terminology calls too).
    pub deadline: Instant,
}

/// How a run ended, as the meter saw it.
pub(crate) struct Metered {
    pub operations: u64,
    pub stop: Option<Stop>,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    static METER: Meter = const {
        Meter {
            used: Cell::new(0),
            next_check: Cell::new(u64::MAX),
            next_clock: Cell::new(0),
            allowance: Cell::new(None),
            stop: Cell::new(None),
            alarms: Cell::new(0),
        }
    };
}

/// One Rhai operation (the progress hook): `Some(token)` stops the rule.
#[inline(always)]
pub(crate) fn tick() -> Option<Dynamic> {
    METER
        .with(|m| m.add(1))
        .map(|stop| Dynamic::from(stop.token()))
}

/// Charges `units` of native work to the run, before the work is done. Fails with the same
/// termination the progress hook gives once a limit is reached, so the helper returns at once.
#[inline]
pub(crate) fn charge(units: usize) -> Result<(), Box<EvalAltResult>> {
    // Nothing to add: the next operation checks the limits anyway.
    if units == 0 {
        return Ok(());
    }
    match METER.with(|m| m.add(units as u64)) {
        None => Ok(()),
        Some(stop) => Err(stop.error()),
    }
}

/// Installs `state` and the meter's `allowance` for the duration of `f`, then returns `f`'s result,
/// the state, and what the meter counted.
pub(crate) fn with_state<R>(
    state: RunState,
    allowance: Allowance,
    f: impl FnOnce() -> R,
) -> (R, RunState, Metered) {
    RUN.with(|cell| *cell.borrow_mut() = Some(state));
    METER.with(|m| m.start(allowance));
    let result = f();
    let (operations, stop) = METER.with(Meter::finish);
    let state = RUN.with(|cell| cell.borrow_mut().take());
    // `with_state` always installed a state, and nothing else removes it.
    let state = state.unwrap_or_else(unreachable_state);
    (result, state, Metered { operations, stop })
}

#[cold]
fn unreachable_state() -> RunState {
    RunState {
        now: Utc::now(),
        default_source: Source::default(),
        cards: Vec::new(),
        system_actions: Vec::new(),
        facts: Vec::new(),
        conditions: Vec::new(),
        prints: Vec::new(),
        data: Arc::default(),
        terminology_failed: false,
        deadline: Instant::now(),
    }
}

/// Runs `f` on the current run state; `None` outside a run (e.g. at compile time).
pub(crate) fn with_run<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    RUN.with(|cell| cell.borrow_mut().as_mut().map(f))
}

pub(crate) fn record_print(text: &str) {
    with_run(|run| {
        // Bounded: a rule printing in a loop must not grow memory without limit.
        if run.prints.len() < 100 {
            run.prints.push(text.chars().take(1000).collect());
        }
    });
}

/// When the call's backstop passes: remote terminology calls give up by then.
pub(crate) fn deadline() -> Instant {
    with_run(|run| run.deadline).unwrap_or_else(Instant::now)
}

/// The evaluation time of the current run ("now"), never the wall clock.
pub(crate) fn now() -> DateTime<Utc> {
    with_run(|run| run.now).unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn allowance(limit: u64) -> Allowance {
        Allowance {
            limit,
            at_limit: Stop::Operations,
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn the_meter_stops_past_the_limit_and_stays_stopped() {
        let (_, _, metered) = with_state(unreachable_state(), allowance(100), || {
            for _ in 0..100 {
                assert!(tick().is_none());
            }
            assert!(charge(0).is_ok());
            assert!(tick().is_some());
            assert!(charge(1).is_err());
            assert!(tick().is_some());
        });
        assert_eq!(metered.stop, Some(Stop::Operations));
        assert_eq!(metered.operations, 103);
        // Between runs nothing is limited.
        assert!(charge(1 << 40).is_ok() && tick().is_none());
    }

    #[test]
    fn a_charge_counts_like_operations() {
        let (_, _, metered) = with_state(unreachable_state(), allowance(1000), || {
            assert!(charge(990).is_ok());
            assert!(charge(10).is_ok());
            assert!(charge(1).is_err());
        });
        assert_eq!(
            (metered.operations, metered.stop),
            (1001, Some(Stop::Operations))
        );
    }

    #[test]
    fn a_passed_backstop_stops_on_the_first_unit() {
        let passed = Allowance {
            deadline: Instant::now(),
            ..allowance(u64::MAX)
        };
        let (_, _, metered) = with_state(unreachable_state(), passed, tick);
        assert_eq!(metered.stop, Some(Stop::Backstop));
    }
}
