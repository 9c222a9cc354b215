//! What a rule says: `card(...)`, `because(...)`, `require(...)`. A card is charged by the size of
//! its spec, a fact by the size of its value.

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};

use crate::cards;
use crate::cds_hooks::Fact;

use super::super::outcome::ConditionCheck;
use super::super::run_state::{self, NOT_MET_TOKEN, charge};
use super::json::{dynamic_to_json, units_of};
use super::resource::{ResourceHandle, code_text};

fn runtime_error(ctx: &NativeCallContext, message: String) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(Dynamic::from(message), ctx.call_position()).into()
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
            .map(|v| v.to_string())
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
fn require(name: &str, condition: Dynamic) -> Result<Dynamic, Box<EvalAltResult>> {
    let met = match condition.as_bool() {
        Ok(b) => b,
        Err(_) => !condition.is_unit() && !is_empty_array(&condition),
    };
    run_state::with_run(|run| {
        run.conditions.push(ConditionCheck {
            name: name.to_owned(),
            met,
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
    engine.register_fn("require", require);
}
