//! The rule engine: sandboxed Rhai, rules compiled once, run per request against a read-only patient
//! context. A rule that fails, loops or exceeds a limit yields an error outcome; it never takes the
//! call or the other rules down.

mod api;
mod backstop;
pub(crate) mod chain;
mod check;
mod compile;
mod messages;
mod outcome;
mod run;
mod run_state;
mod sandbox;

pub use check::{ApiType, ScriptChecker};
pub use compile::{CompileError, CompiledRule, RuleSource};

pub use api::DataTable;
pub use outcome::{
    Compared, ConditionCheck, RuleError, RuleErrorKind, RuleMode, RuleOutcome, Verdict,
};
pub use run::{CallBudget, RuleInput};
pub use sandbox::SandboxLimits;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::terminology::Terminology;

/// A service's data tables (`[data]` in `service.toml`), by name: read-only JSON shared by its rules.
pub type DataTables = BTreeMap<String, Arc<DataTable>>;

/// A configured Rhai engine plus everything rules may call. Shared by all requests.
#[derive(Clone)]
pub struct RuleEngine {
    engine: Arc<rhai::Engine>,
    limits: SandboxLimits,
    terminology: Arc<Terminology>,
}

impl RuleEngine {
    /// An engine whose rules see no value sets (tests, benchmarks of rules without terminology).
    pub fn new(limits: SandboxLimits) -> Self {
        Self::with_terminology(limits, Arc::new(Terminology::default()))
    }

    /// An engine whose rules consult `terminology` (`in_valueset`, `lookup_display`, `subsumes`).
    pub fn with_terminology(limits: SandboxLimits, terminology: Arc<Terminology>) -> Self {
        let mut engine = sandbox::build(&limits);
        api::register(&mut engine, terminology.clone());
        Self {
            engine: Arc::new(engine),
            limits,
            terminology,
        }
    }

    /// The terminology rules consult.
    pub fn terminology(&self) -> &Terminology {
        &self.terminology
    }

    /// The terminology, shared (for metrics that read its statistics).
    pub fn shared_terminology(&self) -> Arc<Terminology> {
        self.terminology.clone()
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Compiles one rule file (plus the shared library files it includes).
    pub fn compile(&self, source: &RuleSource) -> Result<CompiledRule, Vec<CompileError>> {
        compile::compile(&self.engine, source)
    }

    /// Runs one rule within what its call has left, and charges its operations to the call. Never
    /// panics, never returns early for another rule's sake.
    pub fn run(&self, rule: &CompiledRule, input: &RuleInput) -> RuleOutcome {
        run::run_in_budget(&self.engine, &self.limits, rule, input)
    }
}

impl RuleEngine {
    /// Compiles a pack's shared library file once, for its rules to include.
    pub fn compile_library(
        &self,
        path: &Path,
        source: &str,
    ) -> Result<Arc<rhai::AST>, CompileError> {
        compile::compile_library(&self.engine, path, source).map(Arc::new)
    }
}
