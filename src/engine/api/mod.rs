//! The functions and types rules call. Everything here is read-only over the patient context; the
//! only way a rule affects the outside is by emitting cards, facts and conditions for its own run.
//!
//! Documented for rule authors in `docs/rules.md`.
//!
//! Every helper whose work grows with its input charges it to the rule's operation budget
//! (`run_state::charge`, one operation per item visited) before doing it: a native call is one Rhai
//! operation, so without the charge a loop over a large list would run unmetered.

mod builtins;
mod compare;
mod data;
mod dosage;
mod emit;
mod json;
mod record;
mod resource;
mod status;
mod terminology;
mod time;

pub use data::DataTable;
pub(crate) use record::{HookContext, Record};
pub(crate) use resource::ResourceHandle;

use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult};

use crate::terminology::Terminology;

use super::run_state::charge;

pub(crate) fn register(engine: &mut Engine, terminology: Arc<Terminology>) {
    builtins::register(engine);
    compare::register(engine);
    terminology::register(engine, terminology);
    data::register(engine);
    dosage::register(engine);
    record::register(engine);
    resource::register(engine);
    emit::register(engine);
    time::register(engine);
}

/// Codes given as one string or an array of strings (`code` or `system|code`), charged one
/// operation per code.
pub(crate) fn codes_of(codes: &Dynamic) -> Result<Vec<String>, Box<EvalAltResult>> {
    if let Ok(s) = codes.as_immutable_string_ref() {
        return Ok(vec![s.to_string()]);
    }
    if let Ok(items) = codes.as_array_ref() {
        charge(items.len())?;
        return Ok(items
            .iter()
            .filter_map(|d| d.as_immutable_string_ref().ok().map(|s| s.to_string()))
            .collect());
    }
    Ok(Vec::new())
}
