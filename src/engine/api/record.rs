//! `patient` (the indexed record) and `context` (the hook context) as seen by rules. Every list
//! helper charges one operation per resource it returns or searches.
//!
//! Helpers that return clinical facts apply the status rules of [`super::status`]: nothing entered
//! in error, results only when final (unless the rule asks for other statuses), nothing that was
//! never in force. `patient.resources(type)` only drops what was entered in error, and
//! `patient.all_resources(type)` returns the record as sent.

use rhai::{Array, Dynamic, Engine, EvalAltResult};
use serde_json::Value;

use crate::fhir::{Resource, parse_fhir_date};
use crate::patient::PatientContext;

use super::super::run_state::charge;
use super::json::{Converted, json_or_unit};
use super::resource::{ResourceHandle, is_active};
use super::status::{self, is_fact};
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

/// Resources of a type with one of `codes` that count as facts (results: final, or one of
/// `statuses` when given), newest first; charged per code and per hit.
fn find(
    record: &Record,
    resource_type: &str,
    codes: &Dynamic,
    statuses: Option<&Dynamic>,
) -> Fallible<Vec<Resource>> {
    let codes = codes_of(codes)?;
    let statuses = statuses.map(status::statuses_of).transpose()?;
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let hits = record.0.newest_first(resource_type, &refs);
    charge(hits.len())?;
    Ok(hits
        .into_iter()
        .filter(|r| is_fact(r, statuses.as_deref()))
        .cloned()
        .collect())
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
    all.retain(|r| is_fact(r, None));
    all.sort_by_key(|r| std::cmp::Reverse(r.instant()));
    Ok(all)
}

/// The Patient's `deceased[x]`: `Some(date)` when a death date is recorded, `Some(None)` when only
/// `deceasedBoolean: true`, `None` when not recorded as deceased.
fn deceased(record: &Record) -> Option<Option<chrono::NaiveDate>> {
    let p = record.0.patient()?;
    if let Some(when) = p.get("deceasedDateTime").and_then(Value::as_str) {
        return Some(parse_fhir_date(when));
    }
    (p.get("deceasedBoolean").and_then(Value::as_bool) == Some(true)).then_some(None)
}

/// Age in completed years at the evaluation date, or at death for a deceased patient (`None` when
/// the birth date, or a deceased patient's date of death, is unknown).
fn age(record: &Record) -> Option<i64> {
    let birth = record
        .0
        .patient()?
        .get("birthDate")
        .and_then(Value::as_str)
        .and_then(parse_fhir_date)?;
    let at = match deceased(record) {
        Some(Some(death)) => death.min(time::today()),
        Some(None) => return None,
        None => time::today(),
    };
    Some(time::whole_years(birth, at))
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
        age(r).map(Dynamic::from_int).unwrap_or(Dynamic::UNIT)
    });
    engine.register_get("deceased", |r: &mut Record| deceased(r).is_some());
    engine.register_get("deceased_date", |r: &mut Record| {
        deceased(r)
            .flatten()
            .map(|d| Dynamic::from(d.to_string()))
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn("resources", |r: &mut Record, ty: &str| {
        handles(r.0.of_type(ty).filter(|x| !status::entered_in_error(x)))
    });
    engine.register_fn("all_resources", |r: &mut Record, ty: &str| {
        handles(r.0.of_type(ty))
    });
    engine.register_fn("find", |r: &mut Record, ty: &str, codes: Dynamic| {
        handles(&find(r, ty, &codes, None)?)
    });
    engine.register_fn(
        "find",
        |r: &mut Record, ty: &str, codes: Dynamic, statuses: Dynamic| {
            handles(&find(r, ty, &codes, Some(&statuses))?)
        },
    );
    engine.register_fn("observations", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Observation", &codes, None)?)
    });
    engine.register_fn(
        "observations",
        |r: &mut Record, codes: Dynamic, statuses: Dynamic| {
            handles(&find(r, "Observation", &codes, Some(&statuses))?)
        },
    );
    let latest = |r: &Record, codes: Dynamic, statuses: Option<&Dynamic>| {
        Ok::<_, Box<EvalAltResult>>(
            find(r, "Observation", &codes, statuses)?
                .into_iter()
                .next()
                .map(|o| Dynamic::from(ResourceHandle(o)))
                .unwrap_or(Dynamic::UNIT),
        )
    };
    engine.register_fn(
        "latest_observation",
        move |r: &mut Record, codes: Dynamic| latest(r, codes, None),
    );
    engine.register_fn(
        "latest_observation",
        move |r: &mut Record, codes: Dynamic, statuses: Dynamic| latest(r, codes, Some(&statuses)),
    );
    engine.register_fn("conditions", |r: &mut Record, codes: Dynamic| {
        handles(&find(r, "Condition", &codes, None)?)
    });
    engine.register_fn("active_conditions", |r: &mut Record, codes: Dynamic| {
        handles(&active(find(r, "Condition", &codes, None)?))
    });
    engine.register_fn("has_active_condition", |r: &mut Record, codes: Dynamic| {
        Ok::<_, Box<EvalAltResult>>(find(r, "Condition", &codes, None)?.iter().any(is_active))
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
