//! What `cardinal check` needs to know about the engine rules run on: the functions and properties
//! it registers, read from Rhai's own function table so the checks can never drift from the API,
//! and rule files parsed exactly as the loader parses them but without optimisation, so the syntax
//! tree keeps every call and literal where the author wrote it.

use std::any::TypeId;
use std::collections::BTreeSet;
use std::sync::Arc;

use rhai::{AST, Engine, OptimizationLevel, ParseError};

use crate::terminology::Terminology;

use super::api::{self, HookContext, Record, ResourceHandle};
use super::compile::declared_scope;
use super::sandbox::{self, SandboxLimits};

/// Which registered value a property is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    /// `patient`.
    Patient,
    /// `context`.
    Context,
    /// A FHIR resource handed out by a helper (`patient.latest_observation(...)`).
    Resource,
}

/// The rule engine as `cardinal check` reads it.
pub struct ScriptChecker {
    engine: Engine,
    functions: BTreeSet<String>,
}

impl Default for ScriptChecker {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptChecker {
    pub fn new() -> Self {
        let mut engine = sandbox::build(&SandboxLimits::default());
        api::register(&mut engine, Arc::new(Terminology::default()));
        engine.set_optimization_level(OptimizationLevel::None);
        let functions = engine
            .collect_fn_metadata(None, |f| Some(f.metadata.name.to_string()), true)
            .into_iter()
            .collect();
        Self { engine, functions }
    }

    /// Parses a rule or library file with the variables every rule can read declared.
    pub fn parse(&self, source: &str) -> Result<AST, ParseError> {
        self.engine.compile_with_scope(&declared_scope(), source)
    }

    /// Every function name a rule can call: Cardinal's helpers and Rhai's standard library
    /// (operators and property getters included, as Rhai names them: `get$value`).
    pub fn functions(&self) -> &BTreeSet<String> {
        &self.functions
    }

    /// The properties the engine defines on a registered type (`patient.age`, `obs.days_ago`).
    pub fn properties(&self, of: ApiType) -> BTreeSet<String> {
        let type_id = match of {
            ApiType::Patient => TypeId::of::<Record>(),
            ApiType::Context => TypeId::of::<HookContext>(),
            ApiType::Resource => TypeId::of::<ResourceHandle>(),
        };
        self.engine
            .collect_fn_metadata(
                None,
                |f| {
                    let name = f.metadata.name.strip_prefix("get$")?;
                    (f.metadata.param_types.first() == Some(&type_id)).then(|| name.to_owned())
                },
                false,
            )
            .into_iter()
            .collect()
    }
}
