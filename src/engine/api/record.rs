//! `patient` (the indexed record) and `context` (the hook context) as seen by rules. Every list
//! helper charges one operation per resource it returns or searches.

use rhai::{Array, Dynamic, Engine, EvalAltResult};
use serde_json::Value;

use crate::fhir::{Resource, parse_fhir_date};
use crate::patient::PatientContext;

use super::super::run_state::charge;
use super::json::{Converted, json_or_unit};
use super::resource::{ResourceHandle, is_active};
use super::{codes_of, time};

/// The patient record: resources from prefetch, indexed by type and code.
#[derive(Clone)]
pub(crate) struct Record(pub PatientContext);

/// The hook context (`context.patientId`, `context.draftOrders`, ...).
#[derive(Clone)]
pub(crate) struct HookContext(pub PatientContext);

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Resources as rule values, charged one operation each.
fn handles<'a>(items: impl IntoIterator<Item = &'a Resource>) -> Fallible<Array> {
    let items: Vec<&Resource> = items.into_iter().collect();
    charge(items.len())?;
    Ok(items
        .into_iter()
        .map(|r| Dynamic::from(ResourceHandle(r.clone())))
        .collect())
}

/// Resources of a type with one of `codes`, newest first; charged per code and per hit.
fn find(record: &Record, resource_type: &str, codes: &Dynamic) -> Fallible<Vec<Resource>> {
    let codes = codes_of(codes)?;
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let hits = record.0.newest_first(resource_type, &refs);
    charge(hits.len())?;
    Ok(hits.into_iter().cloned().collect())
}

fn medications(record: &Record, codes: &Dynamic) -> Fallible<Vec<Resource>> {
    let codes = codes_of(codes)?;
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut all: Vec<Resource> = ["MedicationRequest", "MedicationStatement"]
        .iter()
        .flat_map(|ty| record.0.with_codes(ty, &refs))
        .cloned()
        .collect();
    charge(all.len())?;
    all.sort_by_key(|r| std::cmp::Reverse(r.instant()));
    Ok(all)
}

fn patient_field(record: &Record, field: &str) -> Converted {
    json_or_unit(record.0.patient().and_then(|p| p.get(field)))
}

fn active(items: Vec<Resource>) -> Vec<Resource> {
    items.into_iter().filter(is_active).collect()
}

/// The medication of an order, dispense or statement as a CodeableConcept: `medicationCodeableConcept`,
/// or the `code` of the Medication its `medicationReference` points to (contained `#id`, or a
/// Medication in the record whose id is the reference's last segment). Charged per resource searched.
pub(super) fn medication_concept<'a>(
    record: &'a Record,
    item: &'a Resource,
) -> Fallible<Option<&'a Value>> {
    if let Some(concept) = item.get("medicationCodeableConcept") {
        return Ok(Some(concept));
    }
    let Some(reference) = item
        .get("medicationReference")
        .and_then(|r| r.get("reference"))
        .and_then(Value::as_str)
    else {
        return Ok(None);
    };
    if let Some(local) = reference.strip_prefix('#') {
        let contained = item
            .get("contained")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        charge(contained.len())?;
        return Ok(contained
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(local))
            .and_then(|c| c.get("code")));
    }
    let Some(id) = reference.rsplit('/').next() else {
        return Ok(None);
    };
    let medications: Vec<&Resource> = record.0.of_type("Medication").collect();
    charge(medications.len())?;
    Ok(medications
        .into_iter()
        .find(|m| m.id() == Some(id))
        .and_then(|m| m.get("code")))
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("medication", |r: &mut Record, item: ResourceHandle| {
        json_or_unit(medication_concept(r, &item.0)?)
    });
    engine.register_type_with_name::<Record>("PatientRecord");
    engine.register_type_with_name::<HookContext>("HookContext");

    engine.register_get("resource", |r: &mut Record| {
        r.0.patient()
            .map(|p| Dynamic::from(ResourceHandle(p.clone())))
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_get("id", |r: &mut Record| patient_field(r, "id"));
    engine.register_get("gender", |r: &mut Record| patient_field(r, "gender"));
    engine.register_get("birth_date", |r: &mut Record| patient_field(r, "birthDate"));
    engine.register_get("age", |r: &mut Record| {
        r.0.patient()
            .and_then(|p| p.get("birthDate"))
            .and_then(Value::as_str)
            .and_then(parse_fhir_date)
            .map(|birth| Dynamic::from_int(time::whole_years(birth, time::today())))
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("resources", |r: &mut Record, ty: &str| {
        handles(r.0.of_type(ty))
    });
    engine.register_fn("find", |r: &mut Record, ty: &str, codes: Dynamic| {
        handles(&find(r, ty, &codes)?)
    });
    engine.register_fn("observations", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Observation", &codes)?)
    });
    engine.register_fn("latest_observation", |r: &mut Record, codes: Dynamic| {
        Ok::<_, Box<EvalAltResult>>(
            find(r, "Observation", &codes)?
                .into_iter()
                .next()
                .map(|o| Dynamic::from(ResourceHandle(o)))
                .unwrap_or(Dynamic::UNIT),
        )
    });
    engine.register_fn("conditions", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Condition", &codes)?)
    });
    engine.register_fn("active_conditions", |r: &mut Record, codes: Dynamic| {
        handles(&active(find(r, "Condition", &codes)?))
    });
    engine.register_fn("has_active_condition", |r: &mut Record, codes: Dynamic| {
        Ok::<_, Box<EvalAltResult>>(find(r, "Condition", &codes)?.iter().any(is_active))
    });
    engine.register_fn("medications", |r: &mut Record, codes: Dynamic| {
        handles(&medications(r, &codes)?)
    });
    engine.register_fn("medications", |r: &mut Record| {
        handles(&medications(r, &Dynamic::from_array(Array::new()))?)
    });
    engine.register_fn("active_medications", |r: &mut Record, codes: Dynamic| {
        handles(&active(medications(r, &codes)?))
    });
    engine.register_fn("active_medications", |r: &mut Record| {
        handles(&active(medications(r, &Dynamic::from_array(Array::new()))?))
    });

    // The context: any field by name, plus the draft orders as resources.
    engine.register_indexer_get(|c: &mut HookContext, field: &str| {
        json_or_unit(c.0.context().get(field))
    });
    engine.register_get("draft_orders", |c: &mut HookContext| {
        handles(c.0.draft_orders())
    });
    engine.register_fn(
        "draft_medications",
        |c: &mut HookContext, codes: Dynamic| {
            let codes = codes_of(&codes)?;
            let drafts = c.0.draft_orders();
            charge(drafts.len().saturating_mul(codes.len().max(1)))?;
            let hits: Vec<&Resource> = drafts
                .iter()
                .filter(|r| r.resource_type() == "MedicationRequest")
                .filter(|r| codes.is_empty() || codes.iter().any(|code| r.has_code(code)))
                .collect();
            handles(hits)
        },
    );
}
