//! `patient` (the indexed record) and `context` (the hook context) as seen by rules.

use rhai::{Array, Dynamic, Engine};
use serde_json::Value;

use crate::fhir::{Resource, parse_fhir_date};
use crate::patient::PatientContext;

use super::json::json_to_dynamic;
use super::resource::{ResourceHandle, is_active};
use super::{codes_of, time};

/// The patient record: resources from prefetch, indexed by type and code.
#[derive(Clone)]
pub(crate) struct Record(pub PatientContext);

/// The hook context (`context.patientId`, `context.draftOrders`, ...).
#[derive(Clone)]
pub(crate) struct HookContext(pub PatientContext);

fn handles<'a>(items: impl IntoIterator<Item = &'a Resource>) -> Array {
    items
        .into_iter()
        .map(|r| Dynamic::from(ResourceHandle(r.clone())))
        .collect()
}

fn find(record: &Record, resource_type: &str, codes: &Dynamic) -> Vec<Resource> {
    let codes = codes_of(codes);
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    record
        .0
        .newest_first(resource_type, &refs)
        .into_iter()
        .cloned()
        .collect()
}

fn medications(record: &Record, codes: &Dynamic) -> Vec<Resource> {
    let codes = codes_of(codes);
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut all: Vec<Resource> = ["MedicationRequest", "MedicationStatement"]
        .iter()
        .flat_map(|ty| record.0.with_codes(ty, &refs))
        .cloned()
        .collect();
    all.sort_by_key(|r| std::cmp::Reverse(r.instant()));
    all
}

fn patient_field(record: &Record, field: &str) -> Dynamic {
    record
        .0
        .patient()
        .and_then(|p| p.get(field))
        .map(json_to_dynamic)
        .unwrap_or(Dynamic::UNIT)
}

/// The medication of an order, dispense or statement as a CodeableConcept: `medicationCodeableConcept`,
/// or the `code` of the Medication its `medicationReference` points to (contained `#id`, or a
/// Medication in the record whose id is the reference's last segment).
pub(super) fn medication_concept(record: &Record, item: &Resource) -> Option<Value> {
    if let Some(concept) = item.get("medicationCodeableConcept") {
        return Some(concept.clone());
    }
    let reference = item
        .get("medicationReference")?
        .get("reference")?
        .as_str()?;
    if let Some(local) = reference.strip_prefix('#') {
        return item
            .get("contained")?
            .as_array()?
            .iter()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(local))?
            .get("code")
            .cloned();
    }
    let id = reference.rsplit('/').next()?;
    record
        .0
        .of_type("Medication")
        .find(|m| m.id() == Some(id))?
        .get("code")
        .cloned()
}

pub(super) fn register(engine: &mut Engine) {
    engine.register_fn("medication", |r: &mut Record, item: ResourceHandle| {
        medication_concept(r, &item.0)
            .as_ref()
            .map(json_to_dynamic)
            .unwrap_or(Dynamic::UNIT)
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
        handles(&find(r, ty, &codes))
    });
    engine.register_fn("observations", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Observation", &codes))
    });
    engine.register_fn("latest_observation", |r: &mut Record, codes: Dynamic| {
        find(r, "Observation", &codes)
            .into_iter()
            .next()
            .map(|o| Dynamic::from(ResourceHandle(o)))
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("conditions", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Condition", &codes))
    });
    engine.register_fn("active_conditions", |r: &mut Record, codes: Dynamic| {
        let hits: Vec<Resource> = find(r, "Condition", &codes)
            .into_iter()
            .filter(is_active)
            .collect();
        handles(&hits)
    });
    engine.register_fn("has_active_condition", |r: &mut Record, codes: Dynamic| {
        find(r, "Condition", &codes).iter().any(is_active)
    });
    engine.register_fn("medications", |r: &mut Record, codes: Dynamic| {
        handles(&medications(r, &codes))
    });
    engine.register_fn("medications", |r: &mut Record| {
        handles(&medications(r, &Dynamic::from_array(Array::new())))
    });
    engine.register_fn("active_medications", |r: &mut Record, codes: Dynamic| {
        let hits: Vec<Resource> = medications(r, &codes)
            .into_iter()
            .filter(is_active)
            .collect();
        handles(&hits)
    });
    engine.register_fn("active_medications", |r: &mut Record| {
        let all = medications(r, &Dynamic::from_array(Array::new()));
        let hits: Vec<Resource> = all.into_iter().filter(is_active).collect();
        handles(&hits)
    });

    // The context: any field by name, plus the draft orders as resources.
    engine.register_indexer_get(|c: &mut HookContext, field: &str| {
        c.0.context()
            .get(field)
            .map(json_to_dynamic)
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_get("draft_orders", |c: &mut HookContext| {
        handles(c.0.draft_orders())
    });
    engine.register_fn(
        "draft_medications",
        |c: &mut HookContext, codes: Dynamic| {
            let codes = codes_of(&codes);
            let hits: Vec<Resource> =
                c.0.draft_orders()
                    .iter()
                    .filter(|r| r.resource_type() == "MedicationRequest")
                    .filter(|r| codes.is_empty() || codes.iter().any(|code| r.has_code(code)))
                    .cloned()
                    .collect();
            handles(&hits)
        },
    );
}
