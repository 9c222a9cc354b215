//! State of the rule run in progress on this thread: its clock, deadline, and what it has emitted.
//!
//! A Rhai evaluation is synchronous and stays on one thread, so native functions reach the run they
//! belong to through a thread-local instead of a shared, mutable context the rule could see.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::cds_hooks::{Card, Fact, Source};

use super::DataTables;
use super::outcome::ConditionCheck;

/// Value carried by `ErrorTerminated` when the rule's deadline passed.
pub(crate) const TIMEOUT_TOKEN: &str = "cardinal:timeout";
/// Value carried by `ErrorTerminated` when `require(...)` found a condition false.
pub(crate) const NOT_MET_TOKEN: &str = "cardinal:not-met";

pub(crate) struct RunState {
    pub now: DateTime<Utc>,
    pub deadline: Instant,
    pub default_source: Source,
    pub cards: Vec<Card>,
    pub facts: Vec<Fact>,
    pub conditions: Vec<ConditionCheck>,
    pub prints: Vec<String>,
    pub operations: u64,
    /// The service's data tables (`data("name")`).
    pub data: Arc<DataTables>,
    /// Set when a terminology look-up failed, so the error is reported as a terminology error.
    pub terminology_failed: bool,
}

thread_local! {
    static RUN: RefCell<Option<RunState>> = const { RefCell::new(None) };
    /// Operations of the run in progress: a plain cell, cheap enough to set on every operation.
    static OPERATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub(crate) fn note_operations(ops: u64) {
    OPERATIONS.with(|c| c.set(ops));
}

/// Installs `state` for the duration of `f`, then returns it with `f`'s result.
pub(crate) fn with_state<R>(state: RunState, f: impl FnOnce() -> R) -> (R, RunState) {
    RUN.with(|cell| *cell.borrow_mut() = Some(state));
    OPERATIONS.with(|c| c.set(0));
    let result = f();
    let state = RUN.with(|cell| cell.borrow_mut().take());
    // `with_state` always installed a state, and nothing else removes it.
    let mut state = state.unwrap_or_else(unreachable_state);
    state.operations = OPERATIONS.with(|c| c.get());
    (result, state)
}

#[cold]
fn unreachable_state() -> RunState {
    RunState {
        now: Utc::now(),
        deadline: Instant::now(),
        default_source: Source::default(),
        cards: Vec::new(),
        facts: Vec::new(),
        conditions: Vec::new(),
        prints: Vec::new(),
        operations: 0,
        data: Arc::default(),
        terminology_failed: false,
    }
}

/// Runs `f` on the current run state; `None` outside a run (e.g. at compile time).
pub(crate) fn with_run<R>(f: impl FnOnce(&mut RunState) -> R) -> Option<R> {
    RUN.with(|cell| cell.borrow_mut().as_mut().map(f))
}

pub(crate) fn deadline_passed(ops: u64) -> bool {
    with_run(|run| {
        run.operations = ops;
        Instant::now() >= run.deadline
    })
    .unwrap_or(false)
}

pub(crate) fn record_print(text: &str) {
    with_run(|run| {
        // Bounded: a rule printing in a loop must not grow memory without limit.
        if run.prints.len() < 100 {
            run.prints.push(text.chars().take(1000).collect());
        }
    });
}

/// When the current run must stop (bounds remote terminology calls too).
pub(crate) fn deadline() -> Instant {
    with_run(|run| run.deadline).unwrap_or_else(Instant::now)
}

/// The evaluation time of the current run ("now"), never the wall clock.
pub(crate) fn now() -> DateTime<Utc> {
    with_run(|run| run.now).unwrap_or_else(Utc::now)
}
