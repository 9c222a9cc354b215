//! Builds the per-request index: resources by type and by code, the Patient, the draft orders.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::fhir::{Origin, Prefetch, PrefetchValue, Resource, split_code};

#[derive(Debug, Default)]
struct Inner {
    record: Vec<Resource>,
    by_type: HashMap<String, Vec<u32>>,
    by_code: HashMap<String, Vec<u32>>,
    patient: Option<Resource>,
    draft_orders: Vec<Resource>,
    context: Map<String, Value>,
    /// Prefetch keys the EHR (or the fetcher) answered with `null`: "no such resource".
    null_keys: Vec<String>,
}

/// Everything a rule may read about the patient and the hook call. Cheap to clone; immutable.
#[derive(Debug, Clone, Default)]
pub struct PatientContext(Arc<Inner>);

impl PatientContext {
    /// Indexes the prefetch (resources or searchset Bundles) and the hook context. Takes ownership so
    /// nothing is copied.
    pub fn build(context: Map<String, Value>, prefetch: Prefetch) -> Self {
        let mut inner = Inner::default();
        for (key, value) in prefetch {
            match value {
                PrefetchValue::Null => inner.null_keys.push(key),
                PrefetchValue::Resource(resource) => add_resource(&mut inner.record, resource),
                PrefetchValue::Bundle(resources) => {
                    for resource in resources {
                        add_resource(&mut inner.record, resource);
                    }
                }
            }
        }
        // Draft orders stay in the context too (rules may read it raw) and are indexed apart.
        if let Some(bundle) = context.get("draftOrders") {
            inner.draft_orders = bundle_resources(bundle)
                .map(|r| Resource::new(r.clone(), Origin::Context))
                .collect();
        }
        for (i, resource) in inner.record.iter().enumerate() {
            let i = i as u32;
            push_index(&mut inner.by_type, resource.resource_type(), i);
            for (_, code) in resource.codings() {
                push_index(&mut inner.by_code, code, i);
            }
        }
        inner.patient = inner
            .by_type
            .get("Patient")
            .and_then(|ids| ids.first())
            .and_then(|&i| inner.record.get(i as usize).cloned());
        inner.context = context;
        Self(Arc::new(inner))
    }

    pub fn context(&self) -> &Map<String, Value> {
        &self.0.context
    }

    pub fn patient(&self) -> Option<&Resource> {
        self.0.patient.as_ref()
    }

    pub fn record(&self) -> &[Resource] {
        &self.0.record
    }

    pub fn draft_orders(&self) -> &[Resource] {
        &self.0.draft_orders
    }

    pub fn null_keys(&self) -> &[String] {
        &self.0.null_keys
    }

    /// All record resources of one type, in arrival order.
    pub fn of_type(&self, resource_type: &str) -> impl Iterator<Item = &Resource> {
        self.0
            .by_type
            .get(resource_type)
            .into_iter()
            .flatten()
            .filter_map(|&i| self.0.record.get(i as usize))
    }

    /// Record resources of one type whose main code is any of `codes` (`code` or `system|code`).
    /// With no codes, every resource of the type.
    pub fn with_codes<'a>(&'a self, resource_type: &'a str, codes: &[&str]) -> Vec<&'a Resource> {
        if codes.is_empty() {
            return self.of_type(resource_type).collect();
        }
        let mut hits: Vec<u32> = Vec::new();
        for wanted in codes {
            let (_, code) = split_code(wanted);
            if let Some(ids) = self.0.by_code.get(code) {
                hits.extend(ids.iter().copied().filter(|&i| {
                    self.0
                        .record
                        .get(i as usize)
                        .is_some_and(|r| r.resource_type() == resource_type && r.has_code(wanted))
                }));
            }
        }
        hits.sort_unstable();
        hits.dedup();
        hits.into_iter()
            .filter_map(|i| self.0.record.get(i as usize))
            .collect()
    }

    /// Like [`with_codes`](Self::with_codes), newest first (undated last).
    pub fn newest_first<'a>(&'a self, resource_type: &'a str, codes: &[&str]) -> Vec<&'a Resource> {
        let mut hits = self.with_codes(resource_type, codes);
        hits.sort_by_key(|r| std::cmp::Reverse(r.instant()));
        hits
    }
}

/// Adds resource `i` under `key`, allocating the key only the first time it is seen. One resource can
/// list the same code under two systems; it is indexed once.
fn push_index(index: &mut HashMap<String, Vec<u32>>, key: &str, i: u32) {
    match index.get_mut(key) {
        Some(slot) if slot.last() == Some(&i) => {}
        Some(slot) => slot.push(i),
        None => {
            index.insert(key.to_owned(), vec![i]);
        }
    }
}

fn bundle_resources(bundle: &Value) -> impl Iterator<Item = &Value> {
    bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.get("resource"))
        .filter(|r| r.is_object())
}

/// Adds a resource to the record. OperationOutcomes (a failed prefetch, or a search's warnings) are
/// not patient data.
fn add_resource(record: &mut Vec<Resource>, resource: Resource) {
    if resource.resource_type() != "OperationOutcome" {
        record.push(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> PatientContext {
        let prefetch = json!({
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1950-02-03"},
            "labs": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Observation", "id": "o1", "effectiveDateTime": "2026-01-02",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]}, "valueQuantity": {"value": 40}}},
                {"resource": {"resourceType": "Observation", "id": "o2", "effectiveDateTime": "2026-03-02",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "62238-1"}]}, "valueQuantity": {"value": 25}}},
                {"resource": {"resourceType": "Observation", "id": "o3",
                    "code": {"coding": [{"system": "urn:other", "code": "33914-3"}]}}}
            ]},
            "missing": null
        });
        let context = json!({"patientId": "p1", "draftOrders": {"resourceType": "Bundle", "entry": [
            {"resource": {"resourceType": "MedicationRequest", "id": "m1"}}]}});
        let prefetch: Prefetch = prefetch
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    PrefetchValue::from_json(&v.to_string(), Origin::Prefetch)
                        .unwrap_or(PrefetchValue::Null),
                )
            })
            .collect();
        PatientContext::build(context.as_object().cloned().unwrap_or_default(), prefetch)
    }

    #[test]
    fn indexes_by_type_and_code() {
        let ctx = ctx();
        assert_eq!(ctx.patient().and_then(|p| p.id()), Some("p1"));
        assert_eq!(ctx.of_type("Observation").count(), 3);
        assert_eq!(ctx.with_codes("Observation", &["33914-3"]).len(), 2);
        assert_eq!(
            ctx.with_codes("Observation", &["http://loinc.org|33914-3"])
                .len(),
            1
        );
        assert_eq!(ctx.with_codes("Condition", &["33914-3"]).len(), 0);
        let newest = ctx.newest_first("Observation", &["http://loinc.org|33914-3", "62238-1"]);
        assert_eq!(
            newest.iter().filter_map(|r| r.id()).collect::<Vec<_>>(),
            ["o2", "o1"]
        );
        assert_eq!(ctx.draft_orders().len(), 1);
        assert_eq!(ctx.null_keys(), ["missing"]);
    }
}
