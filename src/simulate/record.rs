//! One patient's record as the simulation sees it on the day it simulates: every resource dated on
//! or before `--at`, references rewritten to `Type/id` (bulk exports and Synthea bundles link with
//! `urn:uuid:` full URLs, which rules resolving a `medicationReference` would not find), and the
//! demographics the report breaks firing rates down by.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde_json::Value;

use crate::fhir::{Origin, Resource};

/// Demographic groups of one patient (as recorded; `unknown` when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demographics {
    pub sex: String,
    pub age_band: String,
    pub race: String,
    pub ethnicity: String,
}

impl Demographics {
    /// (dimension, group) pairs, in report order.
    pub fn groups(&self) -> [(&'static str, &str); 4] {
        [
            ("sex", &self.sex),
            ("age band", &self.age_band),
            ("race", &self.race),
            ("ethnicity", &self.ethnicity),
        ]
    }
}

/// A patient ready to simulate.
#[derive(Debug, Clone)]
pub struct PatientRecord {
    /// Where it came from (file, or file and line), for the error list.
    pub source: String,
    pub patient_id: String,
    pub patient: Resource,
    /// Every other resource dated on or before the simulated day.
    pub resources: Vec<Resource>,
    pub demographics: Demographics,
}

/// Why a patient could not be read. Names the defect, never the data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no Patient resource")]
    NoPatient,
    #[error("more than one Patient resource")]
    SeveralPatients,
    #[error("the Patient has no id")]
    NoPatientId,
}

const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
const US_CORE_ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";

/// The reference to use for every way a resource may be linked: its `fullUrl` (`urn:uuid:…`,
/// absolute URL) and its `Type/id`.
pub fn reference_map(resources: &[(Option<String>, Value)]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (full_url, resource) in resources {
        let (Some(ty), Some(id)) = (
            resource.get("resourceType").and_then(Value::as_str),
            resource.get("id").and_then(Value::as_str),
        ) else {
            continue;
        };
        let local = format!("{ty}/{id}");
        if let Some(url) = full_url {
            map.insert(url.clone(), local.clone());
        }
        map.insert(format!("urn:uuid:{id}"), local);
    }
    map
}

/// Rewrites every `reference` the map knows, in place.
pub fn rewrite_references(value: &mut Value, map: &HashMap<String, String>) {
    match value {
        Value::Object(object) => {
            for (key, item) in object.iter_mut() {
                if key == "reference"
                    && let Value::String(text) = item
                {
                    if let Some(local) = map.get(text.as_str()) {
                        *text = local.clone();
                    }
                } else {
                    rewrite_references(item, map);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_references(v, map)),
        _ => {}
    }
}

impl PatientRecord {
    /// A patient from their resources as JSON (references already rewritten), as of `at`.
    pub fn new(
        source: String,
        resources: Vec<Value>,
        at: DateTime<Utc>,
    ) -> Result<Self, RecordError> {
        let resources = resources
            .into_iter()
            .map(|json| Resource::new(json, Origin::Prefetch))
            .collect();
        Self::from_resources(source, resources, at)
    }

    /// A patient from resources already read, as of `at`.
    pub fn from_resources(
        source: String,
        resources: Vec<Resource>,
        at: DateTime<Utc>,
    ) -> Result<Self, RecordError> {
        let mut patient = None;
        let mut rest = Vec::new();
        for resource in resources {
            if resource.resource_type() == "Patient" {
                if patient.is_some() {
                    return Err(RecordError::SeveralPatients);
                }
                patient = Some(resource);
            } else if resource.instant().is_none_or(|t| t <= at) {
                // What happened after the simulated day is not in the record yet.
                rest.push(resource);
            }
        }
        let patient = patient.ok_or(RecordError::NoPatient)?;
        let patient_id = patient.id().ok_or(RecordError::NoPatientId)?.to_owned();
        let demographics = demographics(patient.json(), at);
        Ok(Self {
            source,
            patient_id,
            patient,
            resources: rest,
            demographics,
        })
    }
}

fn demographics(patient: &Value, at: DateTime<Utc>) -> Demographics {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let sex = text(patient.get("gender")).unwrap_or_else(|| "unknown".into());
    let age_band = patient
        .get("birthDate")
        .and_then(Value::as_str)
        .and_then(|d| NaiveDate::parse_from_str(d.get(..10).unwrap_or(d), "%Y-%m-%d").ok())
        .map(|born| {
            let today = at.date_naive();
            let mut age = today.year() - born.year();
            if (today.month(), today.day()) < (born.month(), born.day()) {
                age -= 1;
            }
            age_band(age)
        })
        .unwrap_or_else(|| "unknown".into());
    Demographics {
        sex,
        age_band,
        race: us_core_category(patient, US_CORE_RACE),
        ethnicity: us_core_category(patient, US_CORE_ETHNICITY),
    }
}

/// Bands used in alert-burden reporting: children, adults by decade group, older adults.
fn age_band(age: i32) -> String {
    match age {
        i32::MIN..=-1 => "unknown",
        0..=17 => "0-17",
        18..=44 => "18-44",
        45..=64 => "45-64",
        65..=74 => "65-74",
        _ => "75+",
    }
    .into()
}

/// The OMB category of a US Core race or ethnicity extension (its display, else its code), else
/// its `text`.
fn us_core_category(patient: &Value, url: &str) -> String {
    let extension = patient
        .get("extension")
        .and_then(Value::as_array)
        .and_then(|all| {
            all.iter()
                .find(|e| e.get("url").and_then(Value::as_str) == Some(url))
        });
    let Some(parts) = extension
        .and_then(|e| e.get("extension"))
        .and_then(Value::as_array)
    else {
        return "unknown".into();
    };
    let part = |name: &str| {
        parts
            .iter()
            .find(|p| p.get("url").and_then(Value::as_str) == Some(name))
    };
    part("ombCategory")
        .and_then(|p| p.get("valueCoding"))
        .and_then(|c| {
            c.get("display")
                .or_else(|| c.get("code"))
                .and_then(Value::as_str)
        })
        .or_else(|| {
            part("text")
                .and_then(|p| p.get("valueString"))
                .and_then(Value::as_str)
        })
        .map_or_else(|| "unknown".into(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_by_full_url_become_type_and_id() {
        let resources = vec![
            (
                Some("urn:uuid:m1".to_owned()),
                json!({"resourceType": "Medication", "id": "m1"}),
            ),
            (
                None,
                json!({"resourceType": "MedicationRequest", "id": "r1",
                    "medicationReference": {"reference": "urn:uuid:m1"},
                    "subject": {"reference": "Patient/p1"}}),
            ),
        ];
        let map = reference_map(&resources);
        let mut order = resources[1].1.clone();
        rewrite_references(&mut order, &map);
        assert_eq!(order["medicationReference"]["reference"], "Medication/m1");
        assert_eq!(order["subject"]["reference"], "Patient/p1");
    }

    #[test]
    fn demographics_from_us_core_extensions_and_age_at_the_simulated_day() {
        let patient = json!({"resourceType": "Patient", "id": "p", "gender": "female",
        "birthDate": "1960-12-01",
        "extension": [
            {"url": US_CORE_RACE, "extension": [
                {"url": "ombCategory", "valueCoding": {"code": "2106-3", "display": "White"}},
                {"url": "text", "valueString": "White"}]},
            {"url": US_CORE_ETHNICITY, "extension": [{"url": "text", "valueString": "Not Hispanic or Latino"}]}
        ]});
        let at = "2025-11-30T00:00:00Z".parse().unwrap();
        let d = demographics(&patient, at);
        assert_eq!(d.sex, "female");
        assert_eq!(d.age_band, "45-64", "64 years old until 1 December");
        assert_eq!(d.race, "White");
        assert_eq!(d.ethnicity, "Not Hispanic or Latino");
        let bare = demographics(&json!({"resourceType": "Patient"}), at);
        assert_eq!(
            (bare.sex.as_str(), bare.age_band.as_str()),
            ("unknown", "unknown")
        );
    }
}
