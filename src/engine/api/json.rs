//! JSON <-> Rhai values. FHIR fields become Rhai values only when a rule reads them.

use rhai::{Array, Dynamic, Map};
use serde_json::Value;

use super::resource::ResourceHandle;

pub(crate) fn json_to_dynamic(value: &Value) -> Dynamic {
    match value {
        Value::Null => Dynamic::UNIT,
        Value::Bool(b) => Dynamic::from_bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Dynamic::from_int(i),
            None => Dynamic::from_float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Dynamic::from(s.clone()),
        Value::Array(items) => {
            Dynamic::from_array(items.iter().map(json_to_dynamic).collect::<Array>())
        }
        Value::Object(obj) => {
            let mut map = Map::new();
            for (k, v) in obj {
                map.insert(k.as_str().into(), json_to_dynamic(v));
            }
            Dynamic::from_map(map)
        }
    }
}

/// Converts what a rule built (maps, arrays, primitives, resources) to JSON.
pub(crate) fn dynamic_to_json(value: &Dynamic) -> Result<Value, String> {
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
    if let Ok(s) = value.clone().into_immutable_string() {
        return Ok(Value::String(s.to_string()));
    }
    if let Ok(c) = value.as_char() {
        return Ok(Value::String(c.to_string()));
    }
    if let Some(resource) = value.clone().try_cast::<ResourceHandle>() {
        return Ok(resource.0.json().clone());
    }
    if value.is_array() {
        let items = value.clone().into_array().unwrap_or_default();
        return items
            .iter()
            .map(dynamic_to_json)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if value.is_map() {
        let map = value.clone().try_cast::<Map>().unwrap_or_default();
        let mut obj = serde_json::Map::new();
        for (k, v) in &map {
            obj.insert(k.to_string(), dynamic_to_json(v)?);
        }
        return Ok(Value::Object(obj));
    }
    Err(format!(
        "a value of type `{}` cannot be put in a card",
        value.type_name()
    ))
}
