//! One FHIR resource, shared by reference count so rules can hold it without copying.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use super::fhir_time::parse_fhir_instant;
use super::head::{Head, Summary};

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

#[derive(Debug)]
struct ResourceInner {
    /// The resource as received. `None` when it was built from an already parsed value.
    raw: Option<Box<RawValue>>,
    /// The full JSON tree, built the first time a rule reads a field other than the indexed ones.
    json: OnceLock<Value>,
    resource_type: Box<str>,
    id: Option<Box<str>>,
    status: Option<Box<str>>,
    clinical_status: Vec<Box<str>>,
    codings: Vec<(Box<str>, Box<str>)>,
    /// Clinically relevant date as written, and as an instant (for sorting).
    date: Option<(Box<str>, DateTime<Utc>)>,
    origin: Origin,
}

/// A FHIR resource. Cheap to clone; immutable.
#[derive(Debug, Clone)]
pub struct Resource(Arc<ResourceInner>);

impl Resource {
    /// A resource from its raw JSON: only the indexed fields are read now.
    pub fn from_raw(raw: Box<RawValue>, origin: Origin) -> Self {
        let summary = Head::read(raw.get()).summary();
        Self::with_summary(Some(raw), OnceLock::new(), summary, origin)
    }

    /// A resource from an already parsed value (e.g. a draft order from the hook context).
    pub fn new(json: Value, origin: Origin) -> Self {
        let text = json.to_string();
        let summary = Head::read(&text).summary();
        Self::with_summary(None, OnceLock::from(json), summary, origin)
    }

    fn with_summary(
        raw: Option<Box<RawValue>>,
        json: OnceLock<Value>,
        s: Summary,
        origin: Origin,
    ) -> Self {
        let date = s.date.and_then(|d| {
            let instant = parse_fhir_instant(&d)?;
            Some((d.into_boxed_str(), instant))
        });
        Self(Arc::new(ResourceInner {
            raw,
            json,
            resource_type: s.resource_type,
            id: s.id,
            status: s.status,
            clinical_status: s.clinical_status,
            codings: s.codings,
            date,
            origin,
        }))
    }

    /// The whole resource as JSON (parsed on first use).
    pub fn json(&self) -> &Value {
        self.0.json.get_or_init(|| {
            self.0
                .raw
                .as_ref()
                // The raw text was validated when the request was read, so this parse succeeds.
                .and_then(|raw| serde_json::from_str(raw.get()).ok())
                .unwrap_or(Value::Null)
        })
    }

    /// The resource's JSON text as received, when it arrived as text.
    pub fn raw(&self) -> Option<&RawValue> {
        self.0.raw.as_deref()
    }

    pub fn resource_type(&self) -> &str {
        &self.0.resource_type
    }

    pub fn id(&self) -> Option<&str> {
        self.0.id.as_deref()
    }

    pub fn origin(&self) -> Origin {
        self.0.origin
    }

    /// `Type/id`, when the resource has an id.
    pub fn reference(&self) -> Option<String> {
        self.id()
            .map(|id| format!("{}/{}", self.resource_type(), id))
    }

    /// Any top-level field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.json().get(field)
    }

    /// The clinically relevant date as written in the resource.
    pub fn date(&self) -> Option<&str> {
        self.0.date.as_ref().map(|(raw, _)| &**raw)
    }

    pub fn instant(&self) -> Option<DateTime<Utc>> {
        self.0.date.as_ref().map(|(_, t)| *t)
    }

    /// The main CodeableConcept (code, medicationCodeableConcept, vaccineCode...).
    pub fn main_concept(&self) -> Option<&Value> {
        self.get(code_field(self.resource_type()))
    }

    /// Every (system, code) of the main code field.
    pub fn codings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.codings.iter().map(|(s, c)| (&**s, &**c))
    }

    /// Whether the main code matches `wanted` (`code` or `system|code`).
    pub fn has_code(&self, wanted: &str) -> bool {
        let (system, code) = split_code(wanted);
        self.codings()
            .any(|(s, c)| c == code && system.is_none_or(|sys| sys == s))
    }

    /// `status` as a string.
    pub fn status(&self) -> Option<&str> {
        self.0.status.as_deref()
    }

    /// The codes of `clinicalStatus` (Condition, AllergyIntolerance).
    pub fn clinical_status(&self) -> impl Iterator<Item = &str> {
        self.0.clinical_status.iter().map(|c| &**c)
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
