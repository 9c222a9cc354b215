//! The functions and types rules call. Everything here is read-only over the patient context; the
//! only way a rule affects the outside is by emitting cards, facts and conditions for its own run.
//!
//! Documented for rule authors in `docs/rules.md`.

mod data;
mod dosage;
mod emit;
mod json;
mod record;
mod resource;
mod terminology;
mod time;

pub(crate) use record::{HookContext, Record};

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine};

use crate::terminology::Terminology;

pub(crate) fn register(engine: &mut Engine, terminology: Arc<Terminology>) {
    terminology::register(engine, terminology);
    data::register(engine);
    dosage::register(engine);
    record::register(engine);
    resource::register(engine);
    emit::register(engine);
    time::register(engine);
}

/// Codes given as one string or an array of strings (`code` or `system|code`).
pub(crate) fn codes_of(codes: &Dynamic) -> Vec<String> {
    if let Some(s) = codes.clone().try_cast::<rhai::ImmutableString>() {
        return vec![s.to_string()];
    }
    if let Some(items) = codes.clone().try_cast::<Array>() {
        return items
            .into_iter()
            .filter_map(|d| d.try_cast::<rhai::ImmutableString>().map(|s| s.to_string()))
            .collect();
    }
    Vec::new()
}
