//! What a rule says: `card(...)`, `system_action(...)`, `because(...)`, `require(...)`. A card or
//! action is charged by the size of its spec, a fact by the size of its value.
//!
//! `require` tells a *false* condition from an *unknown* one: a rule that could not decide because
//! an element was absent (no `category`, no supply duration) says so, with the element's name, and
//! "why not" reports it instead of calling the condition false.

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use crate::cards;
use crate::cds_hooks::Fact;

use super::super::outcome::ConditionCheck;
use super::super::run_state::{self, NOT_MET_TOKEN, charge};
use super::compare::Comparison;
use super::json::{dynamic_to_json, units_of};
use super::resource::{ResourceHandle, code_text};

fn runtime_error(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message), ctx.call_position()).into()
}

/// `system_action(#{type, description, resource | resourceId})`: an action the EHR takes without a
/// clinician's choice (CDS Hooks `systemActions`), validated like a card's actions.
fn emit_system_action(ctx: NativeCallContext, spec: rhai::Map) -> Result<(), Box<EvalAltResult>> {
    let json = dynamic_to_json(&Dynamic::from_map(spec))
        .map_err(|e| runtime_error(&ctx, format!("invalid system action: {e}")))?;
    let action = cards::system_action_from_spec(json)
        .map_err(|e| runtime_error(&ctx, format!("invalid system action: {e}")))?;
    run_state::with_run(|run| {
        // Bounded, like everything a rule can grow.
        if run.system_actions.len() < 50 {
            run.system_actions.push(action);
        }
    });
    Ok(())
}

/// A value meaning "could not be decided: these elements were absent". `require` given one records
/// the condition as unknown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unknown(pub Vec<String>);

/// Element names from a string or a list of strings (charged one operation each).
fn element_names(value: &Dynamic) -> Result<Vec<String>, Box<EvalAltResult>> {
    if let Some(unknown) = value.read_lock::<Unknown>() {
        return Ok(unknown.0.clone());
    }
    let mut names = super::codes_of(value)?;
    names.retain(|n| !n.trim().is_empty());
    names.sort();
    names.dedup();
    Ok(names)
}

fn emit_card(ctx: NativeCallContext, spec: rhai::Map) -> Result<(), Box<EvalAltResult>> {
    let json = dynamic_to_json(&Dynamic::from_map(spec))
        .map_err(|e| runtime_error(&ctx, format!("invalid card: {e}")))?;
    let source = run_state::with_run(|run| run.default_source.clone()).unwrap_or_default();
    let card = cards::from_rule_spec(json, &source)
        .map_err(|e| runtime_error(&ctx, format!("invalid card: {e}")))?;
    run_state::with_run(|run| run.cards.push(card));
    Ok(())
}

/// A fact from whatever the rule passes: a resource (value, unit, date and reference are read from
/// it) or a plain value.
fn fact_of(name: &str, value: &Dynamic, note: Option<&str>) -> Fact {
    let mut fact = Fact {
        name: name.to_owned(),
        note: non_blank(note),
        ..Fact::default()
    };
    if let Some(handle) = value.read_lock::<ResourceHandle>() {
        let r = &handle.0;
        let quantity = r.get("valueQuantity");
        fact.value = quantity
            .and_then(|q| q.get("value"))
            .or_else(|| r.get("valueInteger"))
            .map(|v| match v.as_f64() {
                // A device's 14 decimals are not what a clinician reads.
                Some(n) if v.is_f64() => super::dosage::display_number(n),
                _ => v.to_string(),
            })
            .or_else(|| {
                r.get("valueString")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            })
            .or_else(|| code_text(r));
        fact.unit = quantity
            .and_then(|q| q.get("unit").or_else(|| q.get("code")))
            .and_then(|u| u.as_str())
            .map(str::to_owned);
        fact.date = r.date().map(str::to_owned);
        fact.reference = r.reference();
        fact.origin = Some(r.origin().as_str().to_owned());
    } else if !value.is_unit() {
        fact.value = non_blank(Some(&value.to_string()));
        fact.origin = Some("rule".to_owned());
    }
    fact
}

fn non_blank(text: Option<&str>) -> Option<String> {
    text.filter(|t| !t.trim().is_empty()).map(str::to_owned)
}

fn record_fact(
    ctx: &NativeCallContext,
    name: &str,
    value: &Dynamic,
    note: Option<&str>,
) -> Result<(), Box<EvalAltResult>> {
    // Rendering the value (and a resource's code text) reads all of it.
    let units = match value.read_lock::<ResourceHandle>() {
        Some(handle) => handle.0.codings().count(),
        None => units_of(value),
    };
    charge(units)?;
    let fact = fact_of(name, value, note);
    if fact.name.trim().is_empty() {
        return Err(runtime_error(ctx, "`because` needs a fact name".into()));
    }
    run_state::with_run(|run| {
        // Bounded, like everything a rule can grow.
        if run.facts.len() < 200 {
            run.facts.push(fact);
        }
    });
    Ok(())
}

/// `require(name, condition)`: stops the rule (not fired) when the condition is false or `()`;
/// otherwise returns the condition's value so it can be bound: `let egfr = require("eGFR", ...)`.
/// An `unknown(...)` condition stops it as undecided.
///
/// `require(name, condition, absent)`: the same, but when the condition does not hold and `absent`
/// names elements (`"MedicationRequest.category"`, or a list), the condition is recorded as
/// *unknown* (undecidable for lack of data) rather than false.
///
/// A `compare(left, op, right)` condition holds when the comparison does, and its two sides are
/// recorded with the condition for the explain report; when met, `require` returns `true`.
fn require(
    name: &str,
    condition: Dynamic,
    absent: &Dynamic,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let compared = condition.read_lock::<Comparison>().map(|c| c.clone());
    let condition = match &compared {
        Some(c) => Dynamic::from_bool(c.holds),
        None => condition,
    };
    let (met, unknown) = if let Some(u) = condition.read_lock::<Unknown>() {
        let mut elements = u.0.clone();
        if elements.is_empty() {
            elements.push("(unspecified)".to_owned());
        }
        (false, elements)
    } else {
        let met = match condition.as_bool() {
            Ok(b) => b,
            Err(_) => !condition.is_unit() && !is_empty_array(&condition),
        };
        let unknown = if met {
            Vec::new()
        } else {
            element_names(absent)?
        };
        (met, unknown)
    };
    run_state::with_run(|run| {
        run.conditions.push(ConditionCheck {
            name: name.to_owned(),
            met,
            unknown,
            compared: compared.map(|c| c.shown),
        })
    });
    if met {
        Ok(condition)
    } else {
        Err(
            EvalAltResult::ErrorTerminated(Dynamic::from(NOT_MET_TOKEN), rhai::Position::NONE)
                .into(),
        )
    }
}

fn is_empty_array(d: &Dynamic) -> bool {
    d.as_array_ref().is_ok_and(|a| a.is_empty())
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("card", emit_card);
    engine.register_fn(
        "because",
        |ctx: NativeCallContext, name: &str, value: Dynamic| record_fact(&ctx, name, &value, None),
    );
    engine.register_fn(
        "because",
        |ctx: NativeCallContext, name: &str, value: Dynamic, note: &str| {
            record_fact(&ctx, name, &value, Some(note))
        },
    );
    engine.register_fn("system_action", emit_system_action);
    engine.register_fn("require", |name: &str, condition: Dynamic| {
        require(name, condition, &Dynamic::UNIT)
    });
    engine.register_fn(
        "require",
        |name: &str, condition: Dynamic, absent: Dynamic| require(name, condition, &absent),
    );
    engine.register_type_with_name::<Unknown>("Unknown");
    engine.register_fn("unknown", |elements: Dynamic| {
        Ok::<_, Box<EvalAltResult>>(Unknown(element_names(&elements)?))
    });
    engine.register_fn("is_unknown", |value: Dynamic| value.is::<Unknown>());
    engine.register_fn("unknown_elements", |value: Dynamic| {
        value
            .read_lock::<Unknown>()
            .map(|u| {
                u.0.iter()
                    .cloned()
                    .map(Dynamic::from)
                    .collect::<rhai::Array>()
            })
            .unwrap_or_default()
    });
    engine.register_fn("to_string", |u: &mut Unknown| {
        format!("unknown (absent: {})", u.0.join(", "))
    });
    engine.register_fn("to_debug", |u: &mut Unknown| {
        format!("unknown (absent: {})", u.0.join(", "))
    });
}
