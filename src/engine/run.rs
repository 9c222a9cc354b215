//! Running one compiled rule against one request, and classifying how it ended.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope};

use crate::cds_hooks::Source;
use crate::patient::PatientContext;

use super::api::{HookContext, Record};
use super::compile::CompiledRule;
use super::messages;
use super::outcome::{RuleError, RuleErrorKind, RuleOutcome, Verdict};
use super::run_state::{self, Allowance, NOT_MET_TOKEN, RunState, Stop};
use super::sandbox::SandboxLimits;
use super::{DataTables, backstop};

/// What all the rules of one call share: operations (`call_max_operations`) and the wall-clock
/// backstop (`backstop_ms`). Rules run in order; each may use what the ones before it left.
#[derive(Debug)]
pub struct CallBudget {
    remaining: AtomicU64,
    deadline: Instant,
    _watched: backstop::Watched,
}

impl CallBudget {
    /// The budget of a call whose evaluation started at `started`.
    pub fn new(limits: &SandboxLimits, started: Instant) -> Self {
        let deadline = started + limits.backstop();
        Self {
            remaining: AtomicU64::new(limits.call_max_operations),
            deadline,
            _watched: backstop::watch(deadline),
        }
    }

    /// Operations the rules still to run may use.
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Relaxed)
    }

    /// When the backstop passes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    fn spend(&self, operations: u64) {
        // Only the evaluating thread spends; `fetch_update` keeps it exact if that ever changes.
        let _ = self
            .remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left.saturating_sub(operations))
            });
    }
}

/// What every rule of one call sees. Cloning is cheap (reference counts).
#[derive(Clone)]
pub struct RuleInput {
    pub patient: PatientContext,
    pub hook: String,
    pub service_id: String,
    /// The evaluation time: "now" for the rules.
    pub now: DateTime<Utc>,
    /// The card `source` used when a rule does not give one.
    pub default_source: Source,
    /// The operations and backstop the rules of the call share.
    pub budget: Arc<CallBudget>,
    /// The service's data tables, read by rules with `data("name")`.
    pub data: Arc<DataTables>,
}

/// Runs `rule` within what the call has left: the rule's own operation limit, or the call's
/// remaining operations when fewer, and the call's backstop.
pub(crate) fn run_in_budget(
    engine: &Engine,
    limits: &SandboxLimits,
    rule: &CompiledRule,
    input: &RuleInput,
) -> RuleOutcome {
    let budget = &input.budget;
    let remaining = budget.remaining();
    if remaining == 0 {
        return not_run(rule, NotRun::Budget);
    }
    if Instant::now() >= budget.deadline() {
        return not_run(rule, NotRun::Backstop);
    }
    let (limit, at_limit) = if limits.max_operations <= remaining {
        (limits.max_operations, Stop::Operations)
    } else {
        (remaining, Stop::Budget)
    };
    let allowance = Allowance {
        limit,
        at_limit,
        deadline: budget.deadline(),
    };
    let outcome = run(engine, rule, input, allowance);
    budget.spend(outcome.operations);
    outcome
}

fn run(
    engine: &Engine,
    rule: &CompiledRule,
    input: &RuleInput,
    allowance: Allowance,
) -> RuleOutcome {
    let started = Instant::now();
    // Each rule gets its own scope of constants: one rule cannot change what another sees.
    let mut scope = Scope::new();
    scope.push_constant("patient", Record(input.patient.clone()));
    scope.push_constant("context", HookContext(input.patient.clone()));
    scope.push_constant("hook", input.hook.clone());
    scope.push_constant("service", input.service_id.clone());
    let state = RunState {
        now: input.now,
        default_source: input.default_source.clone(),
        cards: Vec::new(),
        system_actions: Vec::new(),
        facts: Vec::new(),
        conditions: Vec::new(),
        prints: Vec::new(),
        data: input.data.clone(),
        terminology_failed: false,
        deadline: allowance.deadline,
    };
    let (result, state, metered) = run_state::with_state(state, allowance, || {
        catch_unwind(AssertUnwindSafe(|| {
            engine.eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast)
        }))
    });
    let verdict = match (result, metered.stop) {
        // The meter decides, however the stop surfaced (a helper may have turned it into an error).
        (result, Some(stop)) => {
            let pos = match result {
                Ok(Err(err)) => err.position(),
                _ => Position::NONE,
            };
            stopped(stop, allowance.limit, pos)
        }
        (result, None) => classified(engine, rule, result, &state),
    };
    // Every located error names its file (the rule's, unless a library function placed it).
    let verdict = match verdict {
        Verdict::Error(mut e) if e.file.is_none() && e.line.is_some() => {
            e.file = Some(rule.file.clone());
            Verdict::Error(e)
        }
        verdict => verdict,
    };
    // A rule stopped by an error or an unmet `require` returns no cards (nor system actions), even
    // ones emitted before.
    let (cards, system_actions) = if verdict == Verdict::Fired {
        (state.cards, state.system_actions)
    } else {
        (Vec::new(), Vec::new())
    };
    RuleOutcome {
        rule_id: rule.id.clone(),
        rule_version: rule.version.clone(),
        mode: rule.mode,
        verdict,
        cards,
        system_actions,
        facts: state.facts,
        conditions: state.conditions,
        prints: state.prints,
        duration: started.elapsed(),
        operations: metered.operations,
    }
}

type Evaluated = std::thread::Result<Result<Dynamic, Box<EvalAltResult>>>;

/// How a run the meter did not stop ended.
fn classified(
    engine: &Engine,
    rule: &CompiledRule,
    result: Evaluated,
    state: &RunState,
) -> Verdict {
    match result {
        Ok(Ok(_)) if state.cards.is_empty() && state.system_actions.is_empty() => Verdict::NotFired,
        Ok(Ok(_)) => Verdict::Fired,
        Ok(Err(err)) => match classify(engine, rule, *err) {
            Verdict::Error(mut e) if state.terminology_failed => {
                e.kind = RuleErrorKind::Terminology;
                Verdict::Error(e)
            }
            verdict => verdict,
        },
        Err(_) => Verdict::Error(RuleError {
            kind: RuleErrorKind::Runtime,
            message: "internal error while running the rule".into(),
            file: None,
            line: None,
            column: None,
        }),
    }
}

/// A run the meter stopped. The message names the limit so the rule's author knows which to fix.
fn stopped(stop: Stop, limit: u64, pos: Position) -> Verdict {
    let (kind, message) = match stop {
        Stop::Operations => (
            RuleErrorKind::Operations,
            format!("rule stopped: it used its limit of {limit} operations"),
        ),
        Stop::Budget => (
            RuleErrorKind::Budget,
            format!(
                "rule stopped: it used the {limit} operations the call had left after earlier rules"
            ),
        ),
        Stop::Backstop => (
            RuleErrorKind::Timeout,
            "rule stopped: the call ran past its wall-clock backstop".into(),
        ),
    };
    located(kind, message, pos)
}

/// Why a rule was not started.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NotRun {
    /// Earlier rules used all of the call's operations.
    Budget,
    /// The call's backstop passed before the rule's turn.
    Backstop,
}

/// The outcome of a rule that was not run.
pub(crate) fn not_run(rule: &CompiledRule, why: NotRun) -> RuleOutcome {
    let (kind, message) = match why {
        NotRun::Budget => (
            RuleErrorKind::Budget,
            "rule not run: earlier rules used all of the call's operations",
        ),
        NotRun::Backstop => (
            RuleErrorKind::Timeout,
            "rule not run: the call's wall-clock backstop had passed",
        ),
    };
    RuleOutcome {
        rule_id: rule.id.clone(),
        rule_version: rule.version.clone(),
        mode: rule.mode,
        verdict: Verdict::Error(RuleError {
            kind,
            message: message.into(),
            file: None,
            line: None,
            column: None,
        }),
        cards: Vec::new(),
        system_actions: Vec::new(),
        facts: Vec::new(),
        conditions: Vec::new(),
        prints: Vec::new(),
        duration: std::time::Duration::ZERO,
        operations: 0,
    }
}

fn located(kind: RuleErrorKind, message: String, pos: Position) -> Verdict {
    Verdict::Error(RuleError {
        kind,
        message,
        file: None,
        line: pos.line().map(|l| l as u32),
        column: pos.position().map(|c| c as u32),
    })
}

/// Where an error happened: in a library function, its library file and the line there; otherwise
/// the rule's own file (filled in by `run`).
fn placed(
    rule: &CompiledRule,
    kind: RuleErrorKind,
    message: String,
    err: &EvalAltResult,
) -> Verdict {
    let (inner, function) = messages::innermost(err);
    let pos = inner.position();
    let in_library = function
        .as_deref()
        .is_some_and(|f| rule.library_functions.contains(f));
    let line = pos.line();
    let library_file = line.filter(|_| in_library).and_then(|line| {
        rule.library_files
            .iter()
            .rev()
            .find(|(_, start)| *start <= line)
            .map(|(file, start)| (file.clone(), line - start + 1))
    });
    match library_file {
        Some((file, line)) => Verdict::Error(RuleError {
            kind,
            message,
            file: Some(file),
            line: u32::try_from(line).ok(),
            column: pos.position().map(|c| c as u32),
        }),
        None => located(kind, message, pos),
    }
}

fn classify(engine: &Engine, rule: &CompiledRule, err: EvalAltResult) -> Verdict {
    match err {
        // The meter's own stops never reach here (see `run`): only `require`.
        EvalAltResult::ErrorTerminated(token, pos) => {
            if token.into_immutable_string().ok().as_deref() == Some(NOT_MET_TOKEN) {
                Verdict::NotFired
            } else {
                located(RuleErrorKind::Runtime, "rule stopped".into(), pos)
            }
        }
        // Rhai's own limit is not set (the meter counts more), but a stop is a stop.
        EvalAltResult::ErrorTooManyOperations(pos) => located(
            RuleErrorKind::Operations,
            "rule stopped: it exceeded its operation limit".into(),
            pos,
        ),
        EvalAltResult::ErrorDataTooLarge(what, pos) => located(
            RuleErrorKind::SizeLimit,
            format!("rule stopped: {what} exceeds its size limit"),
            pos,
        ),
        EvalAltResult::ErrorStackOverflow(pos) => located(
            RuleErrorKind::SizeLimit,
            "rule stopped: calls nested too deeply".into(),
            pos,
        ),
        // Unwrap so a limit hit inside a rule's function reports as that limit.
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) if is_system(&inner) => {
            classify(engine, rule, *inner)
        }
        EvalAltResult::ErrorRuntime(value, pos) => {
            located(RuleErrorKind::Runtime, value.to_string(), pos)
        }
        other => {
            if let Some(explained) = messages::explain(engine, &rule.ast, &other) {
                return placed(rule, RuleErrorKind::Runtime, explained.message, &other);
            }
            let mut message = strip_position(&other.to_string());
            if message.contains("Data race detected") {
                // Rhai's wording does not say what the rule author should change.
                message.push_str(DATA_RACE_HINT);
            }
            placed(rule, RuleErrorKind::Runtime, message, &other)
        }
    }
}

const DATA_RACE_HINT: &str = " (a closure that uses `patient` or `context` ran inside a call on that same \
     variable: bind the list first, e.g. `let orders = patient.resources(\"MedicationRequest\"); \
     orders.filter(|o| ...)`)";

/// A stop imposed by the sandbox (deadline, limits, `require`), possibly inside nested function calls.
fn is_system(err: &EvalAltResult) -> bool {
    match err {
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => is_system(inner),
        EvalAltResult::ErrorTerminated(..)
        | EvalAltResult::ErrorTooManyOperations(..)
        | EvalAltResult::ErrorDataTooLarge(..)
        | EvalAltResult::ErrorStackOverflow(..) => true,
        _ => false,
    }
}

/// Rhai appends ` (line 3, position 7)`; the location travels in its own fields.
fn strip_position(message: &str) -> String {
    match message.rfind(" (line ") {
        Some(i) if message.ends_with(')') => message.get(..i).unwrap_or(message).to_owned(),
        _ => message.to_owned(),
    }
}
