//! Answers a service's prefetch templates from one patient's record, as the EHR's FHIR server would:
//! the rules see the resources the EHR would send, not the whole record. Read (`Patient/{id}`) and
//! the search parameters the shipped packs use are emulated — `patient`/`subject`, `_id`, `code`,
//! `category`, `status`, `_sort` by date, `_count`, `_include=…:medication`; any other parameter is
//! reported (the search then answers as if it were absent) so a blind spot it causes is visible.

use crate::fhir::{PrefetchValue, Resource, concept_codings, split_code};

/// A search answered from the record, and the parameters that could not be emulated.
pub struct Answer {
    pub value: PrefetchValue,
    pub unsupported: Vec<String>,
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(v) = u8::from_str_radix(hex, 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a token (`code` or `system|code`) matches any of `codings`.
fn token_matches<'a>(token: &str, mut codings: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    let (system, code) = split_code(token);
    codings.any(|(s, c)| c == code && system.is_none_or(|sys| sys.is_empty() || sys == s))
}

fn category_codings(resource: &Resource) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match resource.get("category") {
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                out.extend(concept_codings(item).map(|(s, c)| (s.to_owned(), c.to_owned())));
            }
        }
        Some(concept) => {
            out.extend(concept_codings(concept).map(|(s, c)| (s.to_owned(), c.to_owned())));
        }
        None => {}
    }
    out
}

/// Answers one rendered prefetch URL (`Patient/p1`, `Observation?patient=p1&code=…`) from
/// `patient` and `resources`.
pub fn answer(url: &str, patient: &Resource, resources: &[Resource]) -> Answer {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let path = path.trim_matches('/');
    if let Some((ty, id)) = path.split_once('/') {
        let id = decode(id);
        let found = std::iter::once(patient)
            .chain(resources)
            .find(|r| r.resource_type() == ty && r.id() == Some(id.as_str()));
        return Answer {
            value: found.map_or(PrefetchValue::Null, |r| PrefetchValue::Resource(r.clone())),
            unsupported: Vec::new(),
        };
    }
    let ty = path;
    let mut unsupported = Vec::new();
    let mut matches: Vec<Resource> = std::iter::once(patient)
        .chain(resources)
        .filter(|r| r.resource_type() == ty)
        .cloned()
        .collect();
    let mut sort_by_date = None;
    let mut count = None;
    let mut include_medication = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value);
        let tokens: Vec<&str> = value.split(',').collect();
        match name {
            // The record is this patient's: every resource is theirs.
            "patient" | "subject" | "beneficiary" => {}
            "_id" => matches.retain(|r| r.id().is_some_and(|id| tokens.contains(&id))),
            "code" => matches.retain(|r| tokens.iter().any(|t| token_matches(t, r.codings()))),
            "category" => matches.retain(|r| {
                let codings = category_codings(r);
                tokens.iter().any(|t| {
                    token_matches(t, codings.iter().map(|(s, c)| (s.as_str(), c.as_str())))
                })
            }),
            "status" => matches.retain(|r| r.status().is_some_and(|s| tokens.contains(&s))),
            "_sort" => match value.as_str() {
                "-date" => sort_by_date = Some(true),
                "date" => sort_by_date = Some(false),
                _ => unsupported.push(format!("{ty}?_sort={value}")),
            },
            "_count" => count = value.parse::<usize>().ok(),
            "_include" if value.ends_with(":medication") => include_medication = true,
            _ => unsupported.push(format!("{ty}?{name}")),
        }
    }
    if let Some(newest_first) = sort_by_date {
        matches.sort_by_key(|r| r.instant());
        if newest_first {
            matches.reverse();
        }
    }
    if let Some(n) = count {
        matches.truncate(n);
    }
    if include_medication {
        let wanted: Vec<String> = matches
            .iter()
            .filter_map(|r| {
                r.get("medicationReference")
                    .and_then(|m| m.get("reference"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        for medication in resources.iter().filter(|r| {
            r.resource_type() == "Medication" && r.reference().is_some_and(|x| wanted.contains(&x))
        }) {
            matches.push(medication.clone());
        }
    }
    Answer {
        value: PrefetchValue::Bundle(matches),
        unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::Origin;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        // Any rendered URL (a template filled with any context value) is answered, never a panic.
        #[test]
        fn any_url_is_answered(url in ".{0,80}") {
            let patient = Resource::new(json!({"resourceType": "Patient", "id": "p1"}), Origin::Prefetch);
            let _ = answer(&url, &patient, &[]);
            let _ = decode(&url);
        }
    }

    fn resource(value: serde_json::Value) -> Resource {
        Resource::new(value, Origin::Prefetch)
    }

    fn ids(answer: &Answer) -> Vec<String> {
        match &answer.value {
            PrefetchValue::Bundle(items) => items
                .iter()
                .map(|r| r.id().unwrap_or_default().to_owned())
                .collect(),
            PrefetchValue::Resource(r) => vec![r.id().unwrap_or_default().to_owned()],
            PrefetchValue::Null => Vec::new(),
        }
    }

    #[test]
    fn searches_by_code_category_status_date_and_count() {
        let patient = resource(json!({"resourceType": "Patient", "id": "p1"}));
        let egfr = |id: &str, date: &str| {
            resource(
                json!({"resourceType": "Observation", "id": id, "status": "final",
                "effectiveDateTime": date,
                "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]}}),
            )
        };
        let record = vec![
            egfr("old", "2020-01-01"),
            egfr("new", "2026-01-01"),
            resource(
                json!({"resourceType": "Observation", "id": "bp", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]}}),
            ),
            resource(json!({"resourceType": "Condition", "id": "c1",
                "category": [{"coding": [{"code": "problem-list-item"}]}]})),
            resource(json!({"resourceType": "Condition", "id": "c2",
                "category": [{"coding": [{"code": "encounter-diagnosis"}]}]})),
            resource(json!({"resourceType": "MedicationRequest", "id": "r1", "status": "stopped"})),
        ];
        let a = answer(
            "Observation?patient=p1&code=http://loinc.org|33914-3,http://loinc.org|62238-1&_sort=-date&_count=1",
            &patient,
            &record,
        );
        assert_eq!(ids(&a), ["new"]);
        assert!(a.unsupported.is_empty());
        let a = answer(
            "Condition?patient=p1&category=problem-list-item",
            &patient,
            &record,
        );
        assert_eq!(ids(&a), ["c1"]);
        let a = answer(
            "MedicationRequest?patient=p1&status=active",
            &patient,
            &record,
        );
        assert!(ids(&a).is_empty());
        assert_eq!(ids(&answer("Patient/p1", &patient, &record)), ["p1"]);
        let a = answer("Observation?patient=p1&date=ge2025", &patient, &record);
        assert_eq!(a.unsupported, ["Observation?date"]);
        assert_eq!(ids(&a).len(), 3);
    }
}
