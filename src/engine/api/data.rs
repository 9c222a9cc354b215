//! `data("name")`: the read-only JSON tables a service declares under `[data]` in `service.toml`
//! (e.g. a drug conversion table the reader can audit), and look-ups over their rows in native code,
//! charged one operation per row found plus the size of what is returned.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext};
use serde_json::Value;

use super::super::run_state::{self, charge};
use super::json::{Converted, json_to_dynamic};

/// Row positions by the text of one field's value.
type RowIndex = HashMap<String, Vec<usize>>;

/// One data table: its JSON and the row indexes `rows_where` has needed so far. Every call of a
/// service reads its tables; searching a 900-row drug table row by row for each prescription cost
/// more than the rest of the rule, so each (list, field) searched is indexed once, on first use.
#[derive(Debug)]
pub struct DataTable {
    value: Value,
    /// (JSON pointer of the list, field) -> index.
    indexes: RwLock<HashMap<(String, String), Arc<RowIndex>>>,
}

impl DataTable {
    pub fn new(value: Value) -> Self {
        Self {
            value,
            indexes: RwLock::default(),
        }
    }

    /// The rows of the list at `pointer` by their `field`, built the first time it is asked for.
    fn index(&self, pointer: &str, field: &str) -> Arc<RowIndex> {
        let key = (pointer.to_owned(), field.to_owned());
        if let Some(index) = self
            .indexes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return index.clone();
        }
        let mut index = RowIndex::new();
        let rows = self
            .value
            .pointer(pointer)
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, row) in rows.iter().enumerate() {
            if let Some(text) = row.get(field).and_then(field_text) {
                index.entry(text).or_default().push(i);
            }
        }
        let index = Arc::new(index);
        // Two calls may build the same index at once; either copy is the same.
        self.indexes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, index.clone());
        index
    }
}

/// A field's value as `rows_where` compares it: strings as they are, numbers as written.
fn field_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A place inside a data table. Objects stay native until a field is read.
#[derive(Clone)]
pub(crate) struct DataHandle {
    root: Arc<DataTable>,
    pointer: String,
}

impl DataHandle {
    fn escaped(key: &str) -> String {
        key.replace('~', "~0").replace('/', "~1")
    }

    fn child(&self, key: &str) -> Converted {
        let pointer = format!("{}/{}", self.pointer, Self::escaped(key));
        // Following the pointer costs one step per level.
        charge(pointer.matches('/').count())?;
        Ok(match self.root.value.pointer(&pointer) {
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
    let pointer = format!("{}/{}", handle.pointer, DataHandle::escaped(list));
    let index = handle.root.index(&pointer, field);
    let found = index.get(wanted).map_or(&[][..], Vec::as_slice);
    charge(found.len().max(1))?;
    let rows = handle
        .root
        .value
        .pointer(&pointer)
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    found
        .iter()
        .filter_map(|&i| rows.get(i))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_row_index_finds_string_and_number_fields_and_is_built_once() {
        // Rows as in the opioid pack's MME table (RxNorm 1049502: 12 HR oxycodone 10 MG ER tablet).
        let table = DataTable::new(serde_json::json!({
            "drug_ingredients": [
                {"drug_rxcui": "1049502", "ingredient_rxcui": "7804", "strength": 10},
                {"drug_rxcui": "1049621", "ingredient_rxcui": "7804", "strength": 5},
                {"drug_rxcui": "1049502", "ingredient_rxcui": "7804", "strength": 10.5},
                {"drug_rxcui": null}
            ]
        }));
        let index = table.index("/drug_ingredients", "drug_rxcui");
        assert_eq!(index.get("1049502"), Some(&vec![0, 2]));
        assert_eq!(index.get("1049621"), Some(&vec![1]));
        assert_eq!(index.len(), 2, "a null field is not indexed");
        let by_number = table.index("/drug_ingredients", "strength");
        assert_eq!(by_number.get("10"), Some(&vec![0]));
        assert_eq!(by_number.get("10.5"), Some(&vec![2]));
        assert!(Arc::ptr_eq(
            &index,
            &table.index("/drug_ingredients", "drug_rxcui")
        ));
        assert!(table.index("/absent", "drug_rxcui").is_empty());
    }
}
