//! One FHIR resource, shared by reference count so rules can hold it without copying.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::fhir_time::parse_fhir_instant;

/// How a resource reached Cardinal; recorded in explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Sent by the EHR in `prefetch`.
    Prefetch,
    /// Fetched by Cardinal from the EHR's FHIR server.
    Fetched,
    /// Part of the hook context (e.g. `draftOrders`).
    Context,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefetch => "prefetch",
            Self::Fetched => "fetched",
            Self::Context => "context",
        }
    }
}

/// The fields that carry a resource's main code, by resource type.
pub(crate) fn code_field(resource_type: &str) -> &'static str {
    match resource_type {
        "MedicationRequest"
        | "MedicationStatement"
        | "MedicationDispense"
        | "MedicationAdministration" => "medicationCodeableConcept",
        "Immunization" => "vaccineCode",
        "Encounter" | "Appointment" => "type",
        _ => "code",
    }
}

/// The fields that carry a resource's clinically relevant time, in order of preference.
fn date_fields(resource_type: &str) -> &'static [&'static str] {
    match resource_type {
        "Observation" | "DiagnosticReport" => &[
            "effectiveDateTime",
            "effectivePeriod.start",
            "effectiveInstant",
            "issued",
        ],
        "Condition" => &["onsetDateTime", "onsetPeriod.start", "recordedDate"],
        "MedicationRequest" | "ServiceRequest" | "DeviceRequest" => &["authoredOn"],
        "MedicationStatement" => &["effectiveDateTime", "effectivePeriod.start", "dateAsserted"],
        "MedicationDispense" => &["whenHandedOver", "whenPrepared"],
        "MedicationAdministration" => &["effectiveDateTime", "effectivePeriod.start"],
        "Procedure" => &["performedDateTime", "performedPeriod.start"],
        "Immunization" => &["occurrenceDateTime", "recorded"],
        "Encounter" => &["period.start"],
        "AllergyIntolerance" => &["onsetDateTime", "recordedDate"],
        "Appointment" => &["start"],
        _ => &[
            "date",
            "authoredOn",
            "effectiveDateTime",
            "meta.lastUpdated",
        ],
    }
}

fn get_path<'a>(value: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(value, |v, key| v.get(key))
}

#[derive(Debug)]
struct ResourceInner {
    json: Value,
    resource_type: String,
    /// Clinically relevant date as written, and as an instant (for sorting).
    date: Option<(String, DateTime<Utc>)>,
    origin: Origin,
}

/// A FHIR resource. Cheap to clone; immutable.
#[derive(Debug, Clone)]
pub struct Resource(Arc<ResourceInner>);

impl Resource {
    pub fn new(json: Value, origin: Origin) -> Self {
        let resource_type = json
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let date = date_fields(&resource_type).iter().find_map(|field| {
            let raw = get_path(&json, field)?.as_str()?;
            Some((raw.to_owned(), parse_fhir_instant(raw)?))
        });
        Self(Arc::new(ResourceInner {
            json,
            resource_type,
            date,
            origin,
        }))
    }

    pub fn json(&self) -> &Value {
        &self.0.json
    }

    pub fn resource_type(&self) -> &str {
        &self.0.resource_type
    }

    pub fn id(&self) -> Option<&str> {
        self.0.json.get("id").and_then(Value::as_str)
    }

    pub fn origin(&self) -> Origin {
        self.0.origin
    }

    /// `Type/id`, when the resource has an id.
    pub fn reference(&self) -> Option<String> {
        self.id()
            .map(|id| format!("{}/{}", self.resource_type(), id))
    }

    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.json.get(field)
    }

    /// The clinically relevant date as written in the resource.
    pub fn date(&self) -> Option<&str> {
        self.0.date.as_ref().map(|(raw, _)| raw.as_str())
    }

    pub fn instant(&self) -> Option<DateTime<Utc>> {
        self.0.date.as_ref().map(|(_, t)| *t)
    }

    /// The main CodeableConcept (code, medicationCodeableConcept, vaccineCode...).
    pub fn main_concept(&self) -> Option<&Value> {
        let field = self.0.json.get(code_field(self.resource_type()))?;
        // Encounter.type and similar are arrays of CodeableConcepts; take them all via codings().
        Some(field)
    }

    /// Every (system, code) of the main code field.
    pub fn codings(&self) -> impl Iterator<Item = (&str, &str)> {
        let concepts: Vec<&Value> = match self.main_concept() {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        concepts.into_iter().flat_map(concept_codings)
    }

    /// Whether the main code matches `wanted` (`code` or `system|code`).
    pub fn has_code(&self, wanted: &str) -> bool {
        let (system, code) = split_code(wanted);
        self.codings()
            .any(|(s, c)| c == code && system.is_none_or(|sys| sys == s))
    }

    /// `status` as a string.
    pub fn status(&self) -> Option<&str> {
        self.0.json.get("status").and_then(Value::as_str)
    }
}

/// The (system, code) pairs of a CodeableConcept (or a bare Coding).
pub fn concept_codings(concept: &Value) -> impl Iterator<Item = (&str, &str)> {
    let codings: Vec<&Value> = match concept.get("coding") {
        Some(Value::Array(items)) => items.iter().collect(),
        _ if concept.get("code").is_some() => vec![concept],
        _ => Vec::new(),
    };
    codings.into_iter().filter_map(|c| {
        let code = c.get("code")?.as_str()?;
        let system = c.get("system").and_then(Value::as_str).unwrap_or("");
        Some((system, code))
    })
}

/// `system|code` or a bare `code`.
pub fn split_code(wanted: &str) -> (Option<&str>, &str) {
    match wanted.rsplit_once('|') {
        Some((system, code)) => (Some(system), code),
        None => (None, wanted),
    }
}
