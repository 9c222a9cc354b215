//! `compare(left, op, right)`: a comparison that remembers what it compared, so the explain report
//! can say `eGFR below 45 was false: 52 mL/min/{1.73_m2} < 45` instead of only naming the
//! condition. `require(name, compare(...))` records both sides with the condition;
//! `compare(...).holds` is the plain result.
//!
//! Sides may be numbers, strings (ISO dates compare as text), `()` (no value: the comparison does
//! not hold), a Quantity-like map (`#{value: 45, unit: "days"}`) or an Observation (its
//! `valueQuantity` or `valueInteger`, with its unit). `compare(left, op, right, unit)` puts `unit`
//! after any plain number: `compare(days, ">", 30, "days")` shows `45 days > 30 days`.

use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext};
use serde_json::Value;

use super::super::outcome::Compared;
use super::dosage::display_number;
use super::resource::ResourceHandle;

/// A comparison and its two sides as shown.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    pub holds: bool,
    pub shown: Compared,
}

/// One side: its number or text, and how it is shown.
enum Side {
    Number(f64, String),
    Text(String),
    Missing,
}

impl Side {
    fn shown(&self) -> String {
        match self {
            Self::Number(_, shown) | Self::Text(shown) => shown.clone(),
            Self::Missing => "(no value)".to_owned(),
        }
    }
}

fn number_of(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn show_number(n: f64, unit: Option<&str>) -> String {
    let shown = display_number(n);
    match unit {
        Some(unit) if !unit.is_empty() => format!("{shown} {unit}"),
        _ => shown,
    }
}

/// A Quantity (`value` and `unit` or `code`) as a side.
fn quantity(q: &Value) -> Option<Side> {
    let n = number_of(q.get("value")?)?;
    let unit = q
        .get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str);
    Some(Side::Number(n, show_number(n, unit)))
}

fn side_of(value: &Dynamic, unit: Option<&str>) -> Side {
    if value.is_unit() {
        return Side::Missing;
    }
    if let Some(handle) = value.read_lock::<ResourceHandle>() {
        let r = &handle.0;
        if let Some(side) = r.get("valueQuantity").and_then(quantity) {
            return side;
        }
        return match r.get("valueInteger").and_then(number_of) {
            Some(n) => Side::Number(n, show_number(n, unit)),
            None => Side::Missing,
        };
    }
    if let Ok(n) = value.as_int() {
        #[allow(clippy::cast_precision_loss)] // Rule integers are counts and thresholds.
        let n = n as f64;
        return Side::Number(n, show_number(n, unit));
    }
    if let Ok(n) = value.as_float() {
        return Side::Number(n, show_number(n, unit));
    }
    if let Ok(text) = value.as_immutable_string_ref() {
        return Side::Text(text.to_string());
    }
    if let Ok(b) = value.as_bool() {
        return Side::Text(b.to_string());
    }
    if let Some(map) = value.read_lock::<rhai::Map>() {
        let number = map.get("value").and_then(|v| {
            v.as_float()
                .ok()
                .or_else(|| v.as_int().ok().map(|i| i as f64))
        });
        if let Some(n) = number {
            let own_unit = map
                .get("unit")
                .or_else(|| map.get("code"))
                .and_then(|u| u.clone().into_immutable_string().ok())
                .map(|u| u.to_string());
            return Side::Number(n, show_number(n, own_unit.as_deref().or(unit)));
        }
    }
    Side::Text(value.type_name().to_owned())
}

const OPERATORS: [&str; 6] = ["<", "<=", ">", ">=", "==", "!="];

fn compare(
    ctx: &NativeCallContext,
    left: &Dynamic,
    op: &str,
    right: &Dynamic,
    unit: Option<&str>,
) -> Result<Comparison, Box<EvalAltResult>> {
    if !OPERATORS.contains(&op) {
        return Err(EvalAltResult::ErrorRuntime(
            Dynamic::from(format!(
                "compare: `{op}` is not an operator (use one of {})",
                OPERATORS.join(" ")
            )),
            ctx.call_position(),
        )
        .into());
    }
    let (l, r) = (side_of(left, unit), side_of(right, unit));
    let ordering = match (&l, &r) {
        (Side::Number(a, _), Side::Number(b, _)) => a.partial_cmp(b),
        (Side::Text(a), Side::Text(b)) => Some(a.cmp(b)),
        _ => None,
    };
    use std::cmp::Ordering::{Equal, Greater, Less};
    let holds = match (op, ordering) {
        (_, None) => false,
        ("<", Some(o)) => o == Less,
        ("<=", Some(o)) => o != Greater,
        (">", Some(o)) => o == Greater,
        (">=", Some(o)) => o != Less,
        ("==", Some(o)) => o == Equal,
        (_, Some(o)) => o != Equal,
    };
    Ok(Comparison {
        holds,
        shown: Compared {
            left: l.shown(),
            op: op.to_owned(),
            right: r.shown(),
        },
    })
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<Comparison>("Comparison");
    engine.register_fn(
        "compare",
        |ctx: NativeCallContext, left: Dynamic, op: &str, right: Dynamic| {
            compare(&ctx, &left, op, &right, None)
        },
    );
    engine.register_fn(
        "compare",
        |ctx: NativeCallContext, left: Dynamic, op: &str, right: Dynamic, unit: &str| {
            compare(&ctx, &left, op, &right, Some(unit))
        },
    );
    engine.register_get("holds", |c: &mut Comparison| c.holds);
    engine.register_fn("to_string", |c: &mut Comparison| c.shown.to_string());
    engine.register_fn("to_debug", |c: &mut Comparison| {
        format!("compare({}: {})", c.shown, c.holds)
    });
}
