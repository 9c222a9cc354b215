//! A FHIR resource as seen by rules: any field by name (`obs.valueQuantity.value`), plus helpers.

use rhai::{Dynamic, Engine, EvalAltResult};
use serde_json::Value;

use crate::fhir::{Resource, parse_fhir_date};

use super::super::run_state::charge;
use super::json::{Converted, json_or_unit};
use super::{codes_of, time};

/// Read-only handle on a resource; fields are converted to Rhai values only when read.
#[derive(Clone)]
pub(crate) struct ResourceHandle(pub Resource);

/// Active in the clinical sense: a Condition whose clinicalStatus is active/recurrence/relapse, or a
/// medication order/statement whose status is active.
pub(crate) fn is_active(r: &Resource) -> bool {
    if r.resource_type() == "Condition" {
        return r
            .clinical_status()
            .any(|code| matches!(code, "active" | "recurrence" | "relapse"));
    }
    r.status() == Some("active")
}

/// Observation value as a number (valueQuantity.value, valueInteger): an integer when written as one.
fn numeric_value(r: &Resource) -> Converted {
    json_or_unit(
        r.get("valueQuantity")
            .and_then(|q| q.get("value"))
            .or_else(|| r.get("valueInteger"))
            .filter(|v| v.is_number()),
    )
}

fn unit(r: &Resource) -> Option<&str> {
    let q = r.get("valueQuantity")?;
    q.get("unit")
        .or_else(|| q.get("code"))
        .and_then(Value::as_str)
}

/// Human text of the main code: `text`, else the first coding's display.
pub(crate) fn code_text(r: &Resource) -> Option<String> {
    let concept = r.main_concept()?;
    let concept = match concept {
        Value::Array(items) => items.first()?,
        other => other,
    };
    concept
        .get("text")
        .and_then(Value::as_str)
        .or_else(|| {
            concept
                .get("coding")?
                .as_array()?
                .iter()
                .find_map(|c| c.get("display")?.as_str())
        })
        .map(str::to_owned)
}

fn opt<T: Into<Dynamic>>(v: Option<T>) -> Dynamic {
    v.map(Into::into).unwrap_or(Dynamic::UNIT)
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_type_with_name::<ResourceHandle>("Resource");
    // Property access (`obs.status`) falls back to this indexer for any field (charged by size).
    engine.register_indexer_get(|r: &mut ResourceHandle, field: &str| json_or_unit(r.0.get(field)));
    engine.register_get("resource_type", |r: &mut ResourceHandle| {
        r.0.resource_type().to_owned()
    });
    engine.register_get("reference", |r: &mut ResourceHandle| opt(r.0.reference()));
    engine.register_get("date", |r: &mut ResourceHandle| {
        opt(r.0.date().map(str::to_owned))
    });
    engine.register_get("value", |r: &mut ResourceHandle| numeric_value(&r.0));
    engine.register_get("unit", |r: &mut ResourceHandle| {
        opt(unit(&r.0).map(str::to_owned))
    });
    engine.register_get("code_text", |r: &mut ResourceHandle| {
        charge(r.0.codings().count())?;
        Ok::<_, Box<EvalAltResult>>(opt(code_text(&r.0)))
    });
    engine.register_get("is_active", |r: &mut ResourceHandle| is_active(&r.0));
    engine.register_get("days_ago", |r: &mut ResourceHandle| {
        opt(r
            .0
            .date()
            .and_then(parse_fhir_date)
            .map(|d| time::days_between(d, time::today())))
    });
    // `absent_elements(order, ["category", "dispenseRequest.expectedSupplyDuration"])`: the listed
    // elements the resource lacks, named `Type.path`, for `require(name, condition, absent)`.
    engine.register_fn(
        "absent_elements",
        |r: &mut ResourceHandle, paths: Dynamic| {
            let paths = codes_of(&paths)?;
            charge(paths.len())?;
            let json = r.0.json();
            Ok::<_, Box<EvalAltResult>>(
                paths
                    .iter()
                    .filter(|p| !super::status::has_value(json, p))
                    .map(|p| Dynamic::from(format!("{}.{p}", r.0.resource_type())))
                    .collect::<rhai::Array>(),
            )
        },
    );
    engine.register_fn("has_code", |r: &mut ResourceHandle, codes: Dynamic| {
        let codes = codes_of(&codes)?;
        charge(codes.len().saturating_mul(r.0.codings().count()))?;
        Ok::<_, Box<EvalAltResult>>(codes.iter().any(|c| r.0.has_code(c)))
    });
    engine.register_fn("to_string", |r: &mut ResourceHandle| {
        r.0.reference()
            .unwrap_or_else(|| r.0.resource_type().to_owned())
    });
    engine.register_fn("to_debug", |r: &mut ResourceHandle| {
        format!(
            "Resource({})",
            r.0.reference()
                .unwrap_or_else(|| r.0.resource_type().to_owned())
        )
    });
}
