//! The few fields Cardinal indexes, read from a resource's raw fields without building its whole
//! tree: type, id, status, main code, clinical status and clinically relevant date. Every field is
//! read leniently (a field of an unexpected shape is simply absent) so odd data never fails a request.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::resource::code_field;

/// Fields of interest, still raw, borrowed from the input.
#[derive(Default)]
pub(super) struct Head<'a> {
    resource_type: Option<&'a str>,
    id: Option<&'a str>,
    status: Option<&'a str>,
    clinical_status: Option<&'a str>,
    code: Option<&'a str>,
    medication_codeable_concept: Option<&'a str>,
    vaccine_code: Option<&'a str>,
    kind: Option<&'a str>,
    effective_date_time: Option<&'a str>,
    effective_period: Option<&'a str>,
    effective_instant: Option<&'a str>,
    issued: Option<&'a str>,
    onset_date_time: Option<&'a str>,
    onset_period: Option<&'a str>,
    recorded_date: Option<&'a str>,
    authored_on: Option<&'a str>,
    date_asserted: Option<&'a str>,
    when_handed_over: Option<&'a str>,
    when_prepared: Option<&'a str>,
    performed_date_time: Option<&'a str>,
    performed_period: Option<&'a str>,
    occurrence_date_time: Option<&'a str>,
    recorded: Option<&'a str>,
    period: Option<&'a str>,
    start: Option<&'a str>,
    date: Option<&'a str>,
}

#[derive(Deserialize)]
struct CodingHead {
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct ConceptHead {
    #[serde(default)]
    coding: Vec<CodingHead>,
}

#[derive(Deserialize)]
struct PeriodHead {
    #[serde(default)]
    start: Option<String>,
}

fn text(raw: Option<&str>) -> Option<String> {
    serde_json::from_str(raw?).ok()
}

/// (system, code) pairs of a CodeableConcept, or of an array of them (Encounter.type).
fn codings(raw: Option<&str>) -> Vec<(Box<str>, Box<str>)> {
    let Some(raw) = raw else { return Vec::new() };
    let concepts: Vec<ConceptHead> = if raw.starts_with('[') {
        serde_json::from_str(raw).unwrap_or_default()
    } else {
        serde_json::from_str(raw)
            .map(|c| vec![c])
            .unwrap_or_default()
    };
    concepts
        .into_iter()
        .flat_map(|c| c.coding)
        .filter_map(|c| {
            Some((
                c.system.unwrap_or_default().into_boxed_str(),
                c.code?.into_boxed_str(),
            ))
        })
        .collect()
}

/// What the index needs from one resource.
#[derive(Debug, Default)]
pub(super) struct Summary {
    pub resource_type: Box<str>,
    pub id: Option<Box<str>>,
    pub status: Option<Box<str>>,
    pub clinical_status: Vec<Box<str>>,
    pub codings: Vec<(Box<str>, Box<str>)>,
    pub date: Option<String>,
}

impl<'a> Head<'a> {
    /// Picks the indexed fields out of a resource's (key, raw value) pairs.
    pub(super) fn from_fields(fields: &[(Cow<'_, str>, &'a RawValue)]) -> Self {
        Self::from_texts(fields.iter().map(|(key, raw)| (key.as_ref(), raw.get())))
    }

    /// Picks the indexed fields out of (key, value as JSON text) pairs.
    pub(super) fn from_texts<'k>(fields: impl Iterator<Item = (&'k str, &'a str)>) -> Self {
        let mut head = Head::default();
        for (key, raw) in fields {
            let slot = match key {
                "resourceType" => &mut head.resource_type,
                "id" => &mut head.id,
                "status" => &mut head.status,
                "clinicalStatus" => &mut head.clinical_status,
                "code" => &mut head.code,
                "medicationCodeableConcept" => &mut head.medication_codeable_concept,
                "vaccineCode" => &mut head.vaccine_code,
                "type" => &mut head.kind,
                "effectiveDateTime" => &mut head.effective_date_time,
                "effectivePeriod" => &mut head.effective_period,
                "effectiveInstant" => &mut head.effective_instant,
                "issued" => &mut head.issued,
                "onsetDateTime" => &mut head.onset_date_time,
                "onsetPeriod" => &mut head.onset_period,
                "recordedDate" => &mut head.recorded_date,
                "authoredOn" => &mut head.authored_on,
                "dateAsserted" => &mut head.date_asserted,
                "whenHandedOver" => &mut head.when_handed_over,
                "whenPrepared" => &mut head.when_prepared,
                "performedDateTime" => &mut head.performed_date_time,
                "performedPeriod" => &mut head.performed_period,
                "occurrenceDateTime" => &mut head.occurrence_date_time,
                "recorded" => &mut head.recorded,
                "period" => &mut head.period,
                "start" => &mut head.start,
                "date" => &mut head.date,
                _ => continue,
            };
            *slot = Some(raw);
        }
        head
    }

    /// The main code, from the field `code_field` names for the type (one mapping for the index and
    /// for rules reading `main_concept`).
    fn main_code(&self, resource_type: &str) -> Option<&'a str> {
        match code_field(resource_type) {
            "medicationCodeableConcept" => self.medication_codeable_concept,
            "vaccineCode" => self.vaccine_code,
            "type" => self.kind,
            _ => self.code,
        }
    }

    /// The clinically relevant date, by resource type, in order of preference. Each candidate is a
    /// plain date-time or (`true`) a Period whose start counts.
    fn date(&self, resource_type: &str) -> Option<String> {
        const NONE: (Option<&str>, bool) = (None, false);
        let candidates: [(Option<&str>, bool); 4] = match resource_type {
            "Observation" | "DiagnosticReport" => [
                (self.effective_date_time, false),
                (self.effective_period, true),
                (self.effective_instant, false),
                (self.issued, false),
            ],
            "Condition" | "AllergyIntolerance" => [
                (self.onset_date_time, false),
                (self.onset_period, true),
                (self.recorded_date, false),
                NONE,
            ],
            "MedicationRequest" | "ServiceRequest" | "DeviceRequest" => {
                [(self.authored_on, false), NONE, NONE, NONE]
            }
            "MedicationStatement" | "MedicationAdministration" => [
                (self.effective_date_time, false),
                (self.effective_period, true),
                (self.date_asserted, false),
                NONE,
            ],
            "MedicationDispense" => [
                (self.when_handed_over, false),
                (self.when_prepared, false),
                NONE,
                NONE,
            ],
            "Procedure" => [
                (self.performed_date_time, false),
                (self.performed_period, true),
                NONE,
                NONE,
            ],
            "Immunization" => [
                (self.occurrence_date_time, false),
                (self.recorded, false),
                NONE,
                NONE,
            ],
            "Encounter" => [(self.period, true), NONE, NONE, NONE],
            "Appointment" => [(self.start, false), NONE, NONE, NONE],
            _ => [
                (self.date, false),
                (self.authored_on, false),
                (self.effective_date_time, false),
                NONE,
            ],
        };
        candidates.iter().find_map(|&(raw, is_period)| {
            if is_period {
                serde_json::from_str::<PeriodHead>(raw?).ok()?.start
            } else {
                text(raw)
            }
        })
    }

    pub(super) fn summary(&self) -> Summary {
        let resource_type = text(self.resource_type).unwrap_or_default();
        Summary {
            id: text(self.id).map(String::into_boxed_str),
            status: text(self.status).map(String::into_boxed_str),
            clinical_status: codings(self.clinical_status)
                .into_iter()
                .map(|(_, c)| c)
                .collect(),
            codings: codings(self.main_code(&resource_type)),
            date: self.date(&resource_type),
            resource_type: resource_type.into_boxed_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fhir::{Origin, PrefetchValue};

    fn resource(text: &str) -> crate::fhir::Resource {
        match PrefetchValue::from_json(text, Origin::Prefetch) {
            Ok(PrefetchValue::Resource(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reads_indexed_fields_and_tolerates_odd_shapes() {
        let r = resource(
            r#"{"resourceType":"Observation","id":"o1","status":"final",
                "code":{"coding":[{"system":"http://loinc.org","code":"4548-4"},{"code":"x"}],"text":"A1c"},
                "effectivePeriod":{"start":"2026-10-02"},"valueQuantity":{"value":9.4}}"#,
        );
        assert_eq!(r.resource_type(), "Observation");
        assert_eq!(r.id(), Some("o1"));
        assert_eq!(r.codings().count(), 2);
        assert_eq!(r.date(), Some("2026-10-02"));
        // `code` as a string (wrong shape for a CodeableConcept) is ignored, not an error.
        let r = resource(r#"{"resourceType":"Observation","code":"4548-4","status":7}"#);
        assert!(r.codings().next().is_none() && r.status().is_none());
        let r = resource(
            r#"{"resourceType":"Encounter","type":[{"coding":[{"system":"http://snomed.info/sct","code":"185349003"}]}],"period":{"start":"2026-01-01T10:00:00Z"}}"#,
        );
        assert_eq!(r.codings().count(), 1);
        assert_eq!(r.date(), Some("2026-01-01T10:00:00Z"));
    }
}
