//! Terminology for rules: `in_valueset(x, url)`, `lookup_display(system, code)`,
//! `subsumes(system, ancestor, code)`. A positive value-set match is recorded in the rule's
//! explanation (which value set, which code). A failed look-up stops the rule with a terminology
//! error; it never hangs the call (remote sources obey the rule's deadline).

use std::sync::Arc;

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use crate::cds_hooks::Fact;
use crate::fhir::{Resource, split_code};
use crate::terminology::{Terminology, TerminologyError};

use super::super::run_state;
use super::record::{Record, medication_concept};
use super::resource::ResourceHandle;

/// At most this many value-set matches are recorded per rule run.
const MAX_TERMINOLOGY_FACTS: usize = 20;

fn failure(ctx: &NativeCallContext, err: TerminologyError) -> Box<EvalAltResult> {
    run_state::with_run(|run| run.terminology_failed = true);
    EvalAltResult::ErrorRuntime(Dynamic::from(err.to_string()), ctx.call_position()).into()
}

/// The (system, code) pairs of whatever a rule passes: a resource (its main code), a
/// CodeableConcept or Coding map, an array of those, or a `system|code` string.
fn codings_of(value: &Dynamic, out: &mut Vec<(String, String)>, first: &mut Option<Resource>) {
    if let Some(ResourceHandle(r)) = value.clone().try_cast::<ResourceHandle>() {
        out.extend(r.codings().map(|(s, c)| (s.to_owned(), c.to_owned())));
        if first.is_none() {
            *first = Some(r);
        }
    } else if let Some(map) = value.clone().try_cast::<Map>() {
        if let Some(codings) = map.get("coding") {
            codings_of(codings, out, first);
        } else if let Some(code) = map.get("code").and_then(|c| c.clone().into_string().ok()) {
            let system = map
                .get("system")
                .and_then(|s| s.clone().into_string().ok())
                .unwrap_or_default();
            out.push((system, code));
        }
    } else if let Some(items) = value.clone().try_cast::<Array>() {
        for item in &items {
            codings_of(item, out, first);
        }
    } else if let Some(text) = value.clone().try_cast::<rhai::ImmutableString>() {
        let (system, code) = split_code(&text);
        out.push((system.unwrap_or_default().to_owned(), code.to_owned()));
    }
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
    let mut value = Some(resource.json());
    for part in path.split('.') {
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
            for resource in patient.0.of_type(ty) {
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
                return check_membership(&ctx, &t, url, item.0.codings(), Some(&item.0));
            }
            let concept = medication_concept(patient, &item.0).unwrap_or_default();
            let codings = crate::fhir::concept_codings(&concept);
            check_membership(&ctx, &t, url, codings, Some(&item.0))
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
            if let Some(ResourceHandle(r)) = value.clone().try_cast::<ResourceHandle>() {
                return check_membership(&ctx, &t, url, r.codings(), Some(&r));
            }
            let mut codings = Vec::new();
            let mut resource = None;
            codings_of(&value, &mut codings, &mut resource);
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
