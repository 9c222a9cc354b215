//! `data("name")`: the read-only JSON tables a service declares under `[data]` in `service.toml`
//! (e.g. a drug conversion table the reader can audit), and look-ups over their rows in native code,
//! charged one operation per row searched plus the size of what is returned.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext};
use serde_json::Value;

use super::super::run_state::{self, charge};
use super::json::{Converted, json_to_dynamic};

/// A place inside a data table. Objects stay native until a field is read.
#[derive(Clone)]
pub(crate) struct DataHandle {
    root: Arc<Value>,
    pointer: String,
}

impl DataHandle {
    fn value(&self) -> &Value {
        self.root.pointer(&self.pointer).unwrap_or(&Value::Null)
    }

    fn child(&self, key: &str) -> Converted {
        let escaped = key.replace('~', "~0").replace('/', "~1");
        let pointer = format!("{}/{escaped}", self.pointer);
        // Following the pointer costs one step per level.
        charge(pointer.matches('/').count())?;
        Ok(match self.root.pointer(&pointer) {
            Some(Value::Object(_)) => Dynamic::from(DataHandle {
                root: self.root.clone(),
                pointer,
            }),
            Some(other) => json_to_dynamic(other)?,
            None => Dynamic::UNIT,
        })
    }
}

fn table(ctx: &NativeCallContext, name: &str) -> Result<DataHandle, Box<EvalAltResult>> {
    let root = run_state::with_run(|run| run.data.get(name).cloned()).flatten();
    root.map(|root| DataHandle {
        root,
        pointer: String::new(),
    })
    .ok_or_else(|| {
        EvalAltResult::ErrorRuntime(
            Dynamic::from(format!(
                "no data table `{name}`: declare it under [data] in service.toml"
            )),
            ctx.call_position(),
        )
        .into()
    })
}

/// Rows of the array `list` whose `field` equals `wanted` (as a string).
fn rows_where(
    handle: &DataHandle,
    list: &str,
    field: &str,
    wanted: &str,
) -> Result<Array, Box<EvalAltResult>> {
    let rows = handle
        .value()
        .get(list)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    charge(rows.len())?;
    rows.iter()
        .filter(|row| match row.get(field) {
            Some(Value::String(s)) => s == wanted,
            Some(Value::Number(n)) => n.to_string() == wanted,
            _ => false,
        })
        .map(json_to_dynamic)
        .collect()
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<DataHandle>("DataTable");
    engine.register_fn("data", |ctx: NativeCallContext, name: &str| {
        table(&ctx, name)
    });
    engine.register_indexer_get(|h: &mut DataHandle, key: &str| h.child(key));
    engine.register_fn(
        "rows_where",
        |h: &mut DataHandle, list: &str, field: &str, wanted: &str| {
            rows_where(h, list, field, wanted)
        },
    );
}
