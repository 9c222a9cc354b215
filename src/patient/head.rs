//! The few fields Cardinal indexes, read from a resource's raw JSON without building its whole tree:
//! type, id, status, main code, clinical status and clinically relevant date. Every field is read
//! leniently (a field of an unexpected shape is simply absent) so odd data never fails a request.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Fields of interest, still raw. Borrowed from the resource's text.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct Head<'a> {
    #[serde(rename = "resourceType", borrow)]
    resource_type: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(rename = "clinicalStatus", borrow)]
    clinical_status: Option<&'a RawValue>,
    #[serde(borrow)]
    code: Option<&'a RawValue>,
    #[serde(rename = "medicationCodeableConcept", borrow)]
    medication_codeable_concept: Option<&'a RawValue>,
    #[serde(rename = "vaccineCode", borrow)]
    vaccine_code: Option<&'a RawValue>,
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "effectiveDateTime", borrow)]
    effective_date_time: Option<&'a RawValue>,
    #[serde(rename = "effectivePeriod", borrow)]
    effective_period: Option<&'a RawValue>,
    #[serde(rename = "effectiveInstant", borrow)]
    effective_instant: Option<&'a RawValue>,
    #[serde(borrow)]
    issued: Option<&'a RawValue>,
    #[serde(rename = "onsetDateTime", borrow)]
    onset_date_time: Option<&'a RawValue>,
    #[serde(rename = "onsetPeriod", borrow)]
    onset_period: Option<&'a RawValue>,
    #[serde(rename = "recordedDate", borrow)]
    recorded_date: Option<&'a RawValue>,
    #[serde(rename = "authoredOn", borrow)]
    authored_on: Option<&'a RawValue>,
    #[serde(rename = "dateAsserted", borrow)]
    date_asserted: Option<&'a RawValue>,
    #[serde(rename = "whenHandedOver", borrow)]
    when_handed_over: Option<&'a RawValue>,
    #[serde(rename = "whenPrepared", borrow)]
    when_prepared: Option<&'a RawValue>,
    #[serde(rename = "performedDateTime", borrow)]
    performed_date_time: Option<&'a RawValue>,
    #[serde(rename = "performedPeriod", borrow)]
    performed_period: Option<&'a RawValue>,
    #[serde(rename = "occurrenceDateTime", borrow)]
    occurrence_date_time: Option<&'a RawValue>,
    #[serde(borrow)]
    recorded: Option<&'a RawValue>,
    #[serde(borrow)]
    period: Option<&'a RawValue>,
    #[serde(borrow)]
    start: Option<&'a RawValue>,
    #[serde(borrow)]
    date: Option<&'a RawValue>,
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

fn text(raw: Option<&RawValue>) -> Option<String> {
    serde_json::from_str(raw?.get()).ok()
}

/// (system, code) pairs of a CodeableConcept, or of an array of them (Encounter.type).
fn codings(raw: Option<&RawValue>) -> Vec<(Box<str>, Box<str>)> {
    let Some(raw) = raw else { return Vec::new() };
    let concepts: Vec<ConceptHead> = if raw.get().starts_with('[') {
        serde_json::from_str(raw.get()).unwrap_or_default()
    } else {
        serde_json::from_str(raw.get())
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

impl Head<'_> {
    pub(super) fn read(text: &str) -> Head<'_> {
        serde_json::from_str(text).unwrap_or_default()
    }

    fn main_code(&self, resource_type: &str) -> Option<&RawValue> {
        match resource_type {
            "MedicationRequest"
            | "MedicationStatement"
            | "MedicationDispense"
            | "MedicationAdministration" => self.medication_codeable_concept,
            "Immunization" => self.vaccine_code,
            "Encounter" | "Appointment" => self.kind,
            _ => self.code,
        }
    }

    /// The clinically relevant date, by resource type, in order of preference. Each candidate is a
    /// plain date-time or (`true`) a Period whose start counts.
    fn date(&self, resource_type: &str) -> Option<String> {
        const NONE: (Option<&RawValue>, bool) = (None, false);
        let candidates: [(Option<&RawValue>, bool); 4] = match resource_type {
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
                serde_json::from_str::<PeriodHead>(raw?.get()).ok()?.start
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
    use super::*;

    #[test]
    fn reads_indexed_fields_and_tolerates_odd_shapes() {
        let s = Head::read(
            r#"{"resourceType":"Observation","id":"o1","status":"final",
                "code":{"coding":[{"system":"http://loinc.org","code":"4548-4"},{"code":"x"}],"text":"A1c"},
                "effectivePeriod":{"start":"2026-10-02"},"valueQuantity":{"value":9.4}}"#,
        )
        .summary();
        assert_eq!(&*s.resource_type, "Observation");
        assert_eq!(s.id.as_deref(), Some("o1"));
        assert_eq!(s.codings.len(), 2);
        assert_eq!(s.date.as_deref(), Some("2026-10-02"));
        // `code` as a string (wrong shape for a CodeableConcept) is ignored, not an error.
        let s =
            Head::read(r#"{"resourceType":"Observation","code":"4548-4","status":7}"#).summary();
        assert!(s.codings.is_empty() && s.status.is_none());
        let s = Head::read(
            r#"{"resourceType":"Encounter","type":[{"coding":[{"system":"http://snomed.info/sct","code":"185349003"}]}],"period":{"start":"2026-01-01T10:00:00Z"}}"#,
        )
        .summary();
        assert_eq!(s.codings.len(), 1);
        assert_eq!(s.date.as_deref(), Some("2026-01-01T10:00:00Z"));
    }
}
