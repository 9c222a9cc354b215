//! The Rhai engine's sandbox: limits, disabled features, and where `print`/`debug` go.
//!
//! Work is limited in operations (see `run_state`), so the same request gets the same cards on an
//! idle and on a saturated machine; only the wall-clock backstop depends on time, and it is set far
//! above any normal call.

use std::time::Duration;

use rhai::Engine;
use serde::{Deserialize, Serialize};

use super::run_state;

/// Limits every rule runs under. A rule that exceeds one is stopped and reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxLimits {
    /// Operations one rule run may use: Rhai's own plus those native helpers charge for their work.
    pub max_operations: u64,
    /// Operations all the rules of one call may use together. A rule runs with the smaller of
    /// `max_operations` and what earlier rules left; rules left with nothing are not run.
    pub call_max_operations: u64,
    /// Wall-clock backstop of one call, in milliseconds: stops work no operation count covers (and
    /// bounds remote terminology calls). Far above normal, so load never decides a rule's outcome.
    pub backstop_ms: u64,
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
            // The heaviest shipped rule uses 9,040 operations (opioid rec07 on the largest Synthea
            // patient of the shared corpus): 100 times that, and at the slowest kind of operation
            // (~0.5 µs) still well inside the backstop.
            max_operations: 1_000_000,
            // Two rules' worth: a call of many normal rules never comes near it.
            call_max_operations: 2_000_000,
            backstop_ms: 1_000,
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
    pub fn backstop(&self) -> Duration {
        Duration::from_millis(self.backstop_ms)
    }
}

pub(crate) fn build(limits: &SandboxLimits) -> Engine {
    let mut engine = Engine::new();
    // No `set_max_operations`: Rhai's count misses operations run inside native calls (closures,
    // element comparisons); the progress hook counts them all and enforces the limits.
    engine
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_function_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(false);
    // `eval` would let a rule compile code at run time, outside `cardinal check`.
    engine.disable_symbol("eval");
    // Rhai's string interner is one lock for the whole engine, taken at run time by string and
    // array functions; a thread that finds it held sleeps 10 ms. With rules evaluated on every
    // worker at once that was the p99 of the whole service (a 10 ms step at any load). Without the
    // interner a few short strings are allocated instead.
    engine.set_max_strings_interned(0);
    engine.on_progress(|_| run_state::tick());
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_engine_has_no_string_interner() {
        // Its lock sleeps 10 ms when contended: two rules running at once must never share it.
        let engine = super::build(&super::SandboxLimits::default());
        assert_eq!(engine.max_strings_interned(), 0);
    }
}
