//! The Rhai engine's sandbox: limits, disabled features, and where `print`/`debug` go.

use std::time::Duration;

use rhai::{Dynamic, Engine};
use serde::{Deserialize, Serialize};

use super::run_state;

/// Limits every rule runs under. A rule that exceeds one is stopped and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// Wall-clock budget of one rule run, in milliseconds.
    pub rule_timeout_ms: u64,
    /// Wall-clock budget of all the rules of one call, in milliseconds. Rules still waiting when it is
    /// spent are not run and are reported.
    pub call_budget_ms: u64,
    /// Rhai operations one rule run may perform.
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_function_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            rule_timeout_ms: 100,
            call_budget_ms: 400,
            max_operations: 5_000_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_function_expr_depth: 32,
            max_string_size: 64 * 1024,
            max_array_size: 100_000,
            max_map_size: 10_000,
        }
    }
}

impl SandboxLimits {
    pub fn rule_timeout(&self) -> Duration {
        Duration::from_millis(self.rule_timeout_ms)
    }

    pub fn call_budget(&self) -> Duration {
        Duration::from_millis(self.call_budget_ms)
    }
}

/// Operations between two wall-clock checks: checking the clock on every operation would cost more
/// than the rules themselves.
const CLOCK_CHECK_EVERY: u64 = 1024;

pub(crate) fn build(limits: &SandboxLimits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false);
    // `eval` would let a rule compile code at run time, outside `cardinal check`.
    engine.disable_symbol("eval");
    engine.on_progress(|ops| {
        run_state::note_operations(ops);
        if ops % CLOCK_CHECK_EVERY == 0 && run_state::deadline_passed(ops) {
            Some(Dynamic::from(run_state::TIMEOUT_TOKEN))
        } else {
            None
        }
    });
    // Rule output may contain patient data: it goes to a dedicated target at TRACE level (off by
    // default) and into the run's own record, which `cardinal explain` shows.
    engine.on_print(|text| {
        tracing::trace!(target: "cardinal::rule_print", "{text}");
        run_state::record_print(text);
    });
    engine.on_debug(|text, _source, pos| {
        tracing::trace!(target: "cardinal::rule_print", line = pos.line(), "{text}");
        run_state::record_print(text);
    });
    engine
}
