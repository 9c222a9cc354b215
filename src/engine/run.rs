//! Running one compiled rule against one request, and classifying how it ended.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rhai::{Dynamic, Engine, EvalAltResult, Position, Scope};

use crate::cds_hooks::Source;
use crate::patient::PatientContext;

use super::DataTables;
use super::api::{HookContext, Record};
use super::compile::CompiledRule;
use super::outcome::{RuleError, RuleErrorKind, RuleOutcome, Verdict};
use super::run_state::{self, NOT_MET_TOKEN, RunState, TIMEOUT_TOKEN};
use super::sandbox::SandboxLimits;

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
    /// When the call's rule budget runs out: no rule runs past it.
    pub call_deadline: Instant,
    /// The service's data tables, read by rules with `data("name")`.
    pub data: Arc<DataTables>,
}

pub(crate) fn run(
    engine: &Engine,
    limits: &SandboxLimits,
    rule: &CompiledRule,
    input: &RuleInput,
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
        deadline: (started + limits.rule_timeout()).min(input.call_deadline),
        default_source: input.default_source.clone(),
        cards: Vec::new(),
        facts: Vec::new(),
        conditions: Vec::new(),
        prints: Vec::new(),
        operations: 0,
        data: input.data.clone(),
        terminology_failed: false,
    };
    let (result, state) = run_state::with_state(state, || {
        catch_unwind(AssertUnwindSafe(|| {
            engine.eval_ast_with_scope::<Dynamic>(&mut scope, &rule.ast)
        }))
    });
    let verdict = match result {
        Ok(Ok(_)) if state.cards.is_empty() => Verdict::NotFired,
        Ok(Ok(_)) => Verdict::Fired,
        Ok(Err(err)) => match classify(*err) {
            Verdict::Error(mut e) if state.terminology_failed => {
                e.kind = RuleErrorKind::Terminology;
                Verdict::Error(e)
            }
            verdict => verdict,
        },
        Err(_) => Verdict::Error(RuleError {
            kind: RuleErrorKind::Runtime,
            message: "internal error while running the rule".into(),
            line: None,
            column: None,
        }),
    };
    // A rule stopped by an error or an unmet `require` returns no cards, even ones emitted before.
    let cards = if verdict == Verdict::Fired {
        state.cards
    } else {
        Vec::new()
    };
    RuleOutcome {
        rule_id: rule.id.clone(),
        rule_version: rule.version.clone(),
        verdict,
        cards,
        facts: state.facts,
        conditions: state.conditions,
        prints: state.prints,
        duration: started.elapsed(),
        operations: state.operations,
    }
}

/// The outcome of a rule that was not run because the call's budget was spent.
pub(crate) fn not_run(rule: &CompiledRule) -> RuleOutcome {
    RuleOutcome {
        rule_id: rule.id.clone(),
        rule_version: rule.version.clone(),
        verdict: Verdict::Error(RuleError {
            kind: RuleErrorKind::Budget,
            message: "rule not run: the call's time budget was spent by earlier rules".into(),
            line: None,
            column: None,
        }),
        cards: Vec::new(),
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
        line: pos.line().map(|l| l as u32),
        column: pos.position().map(|c| c as u32),
    })
}

fn classify(err: EvalAltResult) -> Verdict {
    let pos = err.position();
    match err {
        EvalAltResult::ErrorTerminated(token, pos) => {
            if token.clone().into_immutable_string().ok().as_deref() == Some(NOT_MET_TOKEN) {
                Verdict::NotFired
            } else if token.into_immutable_string().ok().as_deref() == Some(TIMEOUT_TOKEN) {
                located(
                    RuleErrorKind::Timeout,
                    "rule stopped: it ran past its time limit".into(),
                    pos,
                )
            } else {
                located(RuleErrorKind::Runtime, "rule stopped".into(), pos)
            }
        }
        EvalAltResult::ErrorTooManyOperations(pos) => located(
            RuleErrorKind::OperationLimit,
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
        EvalAltResult::ErrorInFunctionCall(_, _, inner, _) if is_system(&inner) => classify(*inner),
        EvalAltResult::ErrorRuntime(value, pos) => {
            located(RuleErrorKind::Runtime, value.to_string(), pos)
        }
        other => {
            let mut message = strip_position(&other.to_string());
            if message.contains("Data race detected") {
                // Rhai's wording does not say what the rule author should change.
                message.push_str(DATA_RACE_HINT);
            }
            located(RuleErrorKind::Runtime, message, pos)
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
