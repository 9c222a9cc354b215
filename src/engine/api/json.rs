//! JSON <-> Rhai values. FHIR fields become Rhai values only when a rule reads them.
//!
//! Conversions charge one operation per value converted (`run_state::charge`), before converting
//! each container's items, so reading a large field costs what it does and a limit stops it early.

use rhai::{Array, Dynamic, EvalAltResult, Map};
use serde_json::Value;

use super::super::run_state::charge;
use super::resource::ResourceHandle;

pub(crate) type Converted = Result<Dynamic, Box<EvalAltResult>>;

/// A JSON value as a Rhai value, charged by size (a scalar is part of the operation that read it).
pub(crate) fn json_to_dynamic(value: &Value) -> Converted {
    convert(value)
}

/// An optional JSON value (`()` when absent), charged by size.
pub(crate) fn json_or_unit(value: Option<&Value>) -> Converted {
    value.map_or(Ok(Dynamic::UNIT), json_to_dynamic)
}

/// Converts `value`, whose own unit was charged by the caller.
fn convert(value: &Value) -> Converted {
    Ok(match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => {
            // A string is copied: long ones cost in proportion (64 bytes a unit).
            charge(s.len() / 64)?;
            Dynamic::from(s.clone())
        }
        Value::Array(items) => {
            charge(items.len())?;
            Dynamic::from_array(items.iter().map(convert).collect::<Result<Array, _>>()?)
        }
        Value::Object(obj) => {
            charge(obj.len())?;
            let mut map = Map::new();
            for (k, v) in obj {
                map.insert(k.as_str().into(), convert(v)?);
            }
            Dynamic::from_map(map)
        }
    })
}

/// Converts what a rule built (maps, arrays, primitives, resources) to JSON, charging one operation
/// per value (and a resource's JSON by its size).
pub(crate) fn dynamic_to_json(value: &Dynamic) -> Result<Value, String> {
    if charge(1).is_err() {
        return Err(LIMIT.into());
    }
    if value.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = value.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = value.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(f) = value.as_float() {
        return serde_json::Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| "a number that is not finite".to_owned());
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(resource) = value.read_lock::<ResourceHandle>() {
        if charge(resource.0.text().len() / 64).is_err() {
            return Err(LIMIT.into());
        }
        return Ok(resource.0.json().clone());
    }
    if let Ok(items) = value.as_array_ref() {
        return items
            .iter()
            .map(dynamic_to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Ok(map) = value.as_map_ref() {
        let mut obj = serde_json::Map::new();
        for (k, v) in map.iter() {
            obj.insert(k.to_string(), dynamic_to_json(v)?);
        }
        return Ok(Value::Object(obj));
    }
    Err(format!(
        "a value of type `{}` cannot be put in a card",
        value.type_name()
    ))
}

/// The message of a conversion stopped by a limit; the meter reports the stop itself.
const LIMIT: &str = "operation limit reached";

/// Operations a rule value is worth when a helper must read all of it: one per value, strings by
/// length. Walks in place (no clone), so measuring costs far less than what it measures.
pub(crate) fn units_of(value: &Dynamic) -> usize {
    if let Ok(s) = value.as_immutable_string_ref() {
        return 1 + s.len() / 64;
    }
    if let Ok(items) = value.as_array_ref() {
        return 1 + items.iter().map(units_of).sum::<usize>();
    }
    if let Ok(map) = value.as_map_ref() {
        return 1 + map.values().map(units_of).sum::<usize>();
    }
    1
}
