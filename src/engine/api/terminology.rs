//! Terminology for rules: `in_valueset(x, url)`, `lookup_display(system, code)`,
//! `subsumes(system, ancestor, code)`. A positive value-set match is recorded in the rule's
//! explanation (which value set, which code). A failed look-up stops the rule with a terminology
//! error; it never hangs the call (remote sources obey the call's backstop). Checks charge one
//! operation per resource and per coding examined.

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, NativeCallContext};

use crate::cds_hooks::Fact;
use crate::fhir::{Resource, split_code};
use crate::terminology::{Terminology, TerminologyError};

use super::super::run_state::{self, charge};
use super::record::{HookContext, Record, medication_concept};
use super::resource::{ResourceHandle, is_active};
use super::status::{entered_in_error, is_fact};

/// At most this many value-set matches are recorded per rule run.
const MAX_TERMINOLOGY_FACTS: usize = 20;

fn failure(ctx: &NativeCallContext, err: TerminologyError) -> Box<EvalAltResult> {
    run_state::with_run(|run| run.terminology_failed = true);
    EvalAltResult::ErrorRuntime(Dynamic::from(err.to_string()), ctx.call_position()).into()
}

/// The (system, code) pairs of whatever a rule passes: a resource (its main code), a
/// CodeableConcept or Coding map, an array of those, or a `system|code` string. Read in place (no
/// copy of the rule's lists), charged one operation per value and coding visited.
fn codings_of(
    value: &Dynamic,
    out: &mut Vec<(String, String)>,
    first: &mut Option<Resource>,
) -> Result<(), Box<EvalAltResult>> {
    charge(1)?;
    if let Some(handle) = value.read_lock::<ResourceHandle>() {
        let r = &handle.0;
        charge(r.codings().count())?;
        out.extend(r.codings().map(|(s, c)| (s.to_owned(), c.to_owned())));
        if first.is_none() {
            *first = Some(r.clone());
        }
    } else if let Ok(map) = value.as_map_ref() {
        let text = |key: &str| {
            map.get(key)
                .and_then(|v| v.as_immutable_string_ref().ok().map(|s| s.to_string()))
        };
        if let Some(codings) = map.get("coding") {
            codings_of(codings, out, first)?;
        } else if let Some(code) = text("code") {
            out.push((text("system").unwrap_or_default(), code));
        }
    } else if let Ok(items) = value.as_array_ref() {
        for item in items.iter() {
            codings_of(item, out, first)?;
        }
    } else if let Ok(text) = value.as_immutable_string_ref() {
        let (system, code) = split_code(&text);
        out.push((system.unwrap_or_default().to_owned(), code.to_owned()));
    }
    Ok(())
}

/// Last path segment of a canonical URL: a readable name for the explanation.
fn short_name(url: &str) -> &str {
    let url = url.split('|').next().unwrap_or(url);
    url.rsplit('/').next().unwrap_or(url)
}

fn record_match(url: &str, system: &str, code: &str, source: &str, resource: Option<&Resource>) {
    run_state::with_run(|run| {
        let recorded = run
            .facts
            .iter()
            .filter(|f| f.origin.as_deref() == Some("terminology"))
            .count();
        if recorded >= MAX_TERMINOLOGY_FACTS || run.facts.len() >= 200 {
            return;
        }
        let name = format!("in value set {}", short_name(url));
        let value = format!("{system}|{code}");
        let duplicate = run
            .facts
            .iter()
            .any(|f| f.name == name && f.value.as_deref() == Some(value.as_str()));
        if !duplicate {
            run.facts.push(Fact {
                name,
                value: Some(value),
                note: Some(format!("{url} ({source})")),
                reference: resource.and_then(Resource::reference),
                origin: Some("terminology".into()),
                ..Fact::default()
            });
        }
    });
}

/// The concepts in a field of a resource holding a CodeableConcept, a Coding, or a list of them
/// (`category`, `clinicalStatus`, `type`...), read from the JSON without converting it.
fn field_concepts<'r>(resource: &'r Resource, path: &str) -> Vec<&'r serde_json::Value> {
    // The first step reads one top-level field (parsed alone), not the whole resource.
    let mut parts = path.split('.');
    let mut value = parts.next().and_then(|first| resource.get(first));
    for part in parts {
        value = value.and_then(|v| v.get(part));
    }
    match value {
        Some(serde_json::Value::Array(items)) => items.iter().collect(),
        Some(v) => vec![v],
        None => Vec::new(),
    }
}

/// Whether any of `codings` is in the value set; a match is recorded in the explanation.
fn check_membership<'c>(
    ctx: &NativeCallContext,
    t: &Terminology,
    url: &str,
    codings: impl IntoIterator<Item = (&'c str, &'c str)>,
    resource: Option<&Resource>,
) -> Result<bool, Box<EvalAltResult>> {
    let url = t.resolve(url).map_err(|e| failure(ctx, e))?;
    match t.first_member(url, codings, run_state::deadline()) {
        Ok(Some(m)) => {
            record_match(url, m.system, m.code, m.source, resource);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(e) => Err(failure(ctx, e)),
    }
}

/// The record's MedicationRequests and MedicationStatements that count as facts (only active ones
/// when `active`), newest first.
fn record_medications(patient: &Record, active: bool) -> Vec<Resource> {
    let mut items: Vec<Resource> = ["MedicationRequest", "MedicationStatement"]
        .iter()
        .flat_map(|ty| patient.0.of_type(ty))
        .filter(|r| is_fact(r, None) && (!active || is_active(r)))
        .cloned()
        .collect();
    items.sort_by_key(|r| std::cmp::Reverse(r.instant()));
    items
}

/// The `items` whose medication is in the value set, as rule values.
fn medications_matching(
    ctx: &NativeCallContext,
    t: &Terminology,
    patient: &Record,
    items: Vec<Resource>,
    url: &str,
) -> Result<Array, Box<EvalAltResult>> {
    charge(items.len())?;
    let mut found = Array::new();
    for item in items {
        let member = if item.codings().next().is_some() {
            charge(item.codings().count())?;
            check_membership(ctx, t, url, item.codings(), Some(&item))?
        } else if let Some(concept) = medication_concept(patient, &item)? {
            charge(crate::fhir::concept_codings(concept).count())?;
            check_membership(
                ctx,
                t,
                url,
                crate::fhir::concept_codings(concept),
                Some(&item),
            )?
        } else {
            false
        };
        if member {
            found.push(Dynamic::from(ResourceHandle(item)));
        }
    }
    Ok(found)
}

pub(super) fn register(engine: &mut Engine, terminology: Arc<Terminology>) {
    let t = terminology.clone();
    // `patient.resources_in("Observation", url)`: the resources of a type whose main code is in the
    // value set, checked in native code (no closure call per resource).
    engine.register_fn(
        "resources_in",
        move |ctx: NativeCallContext,
              patient: &mut Record,
              ty: &str,
              url: &str|
              -> Result<Array, Box<EvalAltResult>> {
            let mut found = Array::new();
            for resource in patient.0.of_type(ty).filter(|r| !entered_in_error(r)) {
                charge(1 + resource.codings().count())?;
                if check_membership(&ctx, &t, url, resource.codings(), Some(resource))? {
                    found.push(Dynamic::from(ResourceHandle(resource.clone())));
                }
            }
            Ok(found)
        },
    );
    let t = terminology.clone();
    // `patient.medication_in(order, url)`: the order's medication (its CodeableConcept, or the
    // Medication it references) is in the value set.
    engine.register_fn(
        "medication_in",
        move |ctx: NativeCallContext,
              patient: &mut Record,
              item: ResourceHandle,
              url: &str|
              -> Result<bool, Box<EvalAltResult>> {
            // The order's own code when it has one; else the Medication it references.
            if item.0.codings().next().is_some() {
                charge(item.0.codings().count())?;
                return check_membership(&ctx, &t, url, item.0.codings(), Some(&item.0));
            }
            let Some(concept) = medication_concept(patient, &item.0)? else {
                return Ok(false);
            };
            charge(crate::fhir::concept_codings(concept).count())?;
            let codings = crate::fhir::concept_codings(concept);
            check_membership(&ctx, &t, url, codings, Some(&item.0))
        },
    );
    // Product-level medication matching: orders whose medication (its code, or the Medication it
    // references) is in a value set listing products (SCD/SBD) by ingredient, e.g. every product
    // containing naproxen. Record orders follow the status rules of `status`.
    let t = terminology.clone();
    engine.register_fn(
        "draft_medications_in",
        move |ctx: NativeCallContext, c: &mut HookContext, url: &str| {
            let record = Record(c.0.clone());
            let drafts: Vec<Resource> =
                c.0.draft_orders()
                    .iter()
                    .filter(|r| r.resource_type() == "MedicationRequest")
                    .cloned()
                    .collect();
            medications_matching(&ctx, &t, &record, drafts, url)
        },
    );
    let t = terminology.clone();
    engine.register_fn(
        "medications_in",
        move |ctx: NativeCallContext, patient: &mut Record, url: &str| {
            let items = record_medications(patient, false);
            medications_matching(&ctx, &t, patient, items, url)
        },
    );
    let t = terminology.clone();
    engine.register_fn(
        "active_medications_in",
        move |ctx: NativeCallContext, patient: &mut Record, url: &str| {
            let items = record_medications(patient, true);
            medications_matching(&ctx, &t, patient, items, url)
        },
    );
    let t = terminology.clone();
    // `in_valueset(condition, "category", url)`: a field of a resource, read without conversion.
    engine.register_fn(
        "in_valueset",
        move |ctx: NativeCallContext,
              resource: ResourceHandle,
              field: &str,
              url: &str|
              -> Result<bool, Box<EvalAltResult>> {
            let concepts = field_concepts(&resource.0, field);
            charge(
                concepts
                    .iter()
                    .map(|c| 1 + crate::fhir::concept_codings(c).count())
                    .sum(),
            )?;
            let codings = concepts.into_iter().flat_map(crate::fhir::concept_codings);
            check_membership(&ctx, &t, url, codings, Some(&resource.0))
        },
    );
    let t = terminology.clone();
    engine.register_fn(
        "in_valueset",
        move |ctx: NativeCallContext,
              value: Dynamic,
              url: &str|
              -> Result<bool, Box<EvalAltResult>> {
            // A resource's indexed codes are read in place; anything else is collected first.
            if let Some(handle) = value.read_lock::<ResourceHandle>() {
                let r = &handle.0;
                charge(r.codings().count())?;
                return check_membership(&ctx, &t, url, r.codings(), Some(r));
            }
            let mut codings = Vec::new();
            let mut resource = None;
            codings_of(&value, &mut codings, &mut resource)?;
            let pairs = codings.iter().map(|(s, c)| (s.as_str(), c.as_str()));
            check_membership(&ctx, &t, url, pairs, resource.as_ref())
        },
    );
    let t = terminology.clone();
    engine.register_fn(
        "lookup_display",
        move |ctx: NativeCallContext, system: &str, code: &str| match t.lookup_display(
            system,
            code,
            run_state::deadline(),
        ) {
            Ok(Some(display)) => Ok(Dynamic::from(display)),
            Ok(None) => Ok(Dynamic::UNIT),
            Err(e) => Err(failure(&ctx, e)),
        },
    );
    let t = terminology;
    engine.register_fn(
        "subsumes",
        move |ctx: NativeCallContext, system: &str, ancestor: &str, code: &str| {
            use crate::terminology::Subsumption::{Equivalent, Subsumes};
            match t.subsumes(system, ancestor, code, run_state::deadline()) {
                Ok(relation) => Ok(matches!(relation, Equivalent | Subsumes)),
                Err(e) => Err(failure(&ctx, e)),
            }
        },
    );
}
