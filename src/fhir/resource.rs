//! One FHIR resource, shared by reference count so rules can hold it without copying.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use serde_json::value::RawValue;

use super::read::PrefetchValue;
use super::summary::{Head, Summary};
use super::time::parse_fhir_instant;

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

/// Where one top-level field is in the resource's text; its value parsed the first time it is read.
#[derive(Debug)]
struct Field {
    /// The key as written in the text (no escapes), or decoded when it had escapes.
    key: FieldKey,
    /// The value's bytes in the text.
    value: Range<u32>,
    parsed: OnceLock<Value>,
}

#[derive(Debug)]
enum FieldKey {
    InText(Range<u32>),
    Decoded(Box<str>),
}

#[derive(Debug)]
struct ResourceInner {
    /// The resource's JSON text.
    text: Box<str>,
    /// The top-level fields, so a rule reading one field parses that field only (most read two or
    /// three of a resource's dozen). Empty when the resource was not read from text.
    fields: Box<[Field]>,
    /// The full JSON tree, built the first time something needs the whole resource.
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

/// Writes `key` as a JSON string, escaping only when it must; where it is in the text, when written
/// as is.
fn push_key(text: &mut String, key: &str) -> FieldKey {
    if key.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        text.push_str(&Value::from(key).to_string());
        FieldKey::Decoded(key.into())
    } else {
        text.push('"');
        let start = text.len();
        text.push_str(key);
        let end = text.len();
        text.push('"');
        FieldKey::InText(offset(start)..offset(end))
    }
}

/// A text offset. Request bodies are far below 4 GiB (`max_body_bytes`); a larger offset saturates,
/// and a field there is simply not found by [`Resource::get`]'s shortcut (the full tree still is).
fn offset(at: usize) -> u32 {
    u32::try_from(at).unwrap_or(u32::MAX)
}

impl Resource {
    /// A resource from its top-level (key, raw value) pairs, as read in one pass over the input.
    pub(crate) fn from_fields(fields: &[(Cow<'_, str>, &RawValue)], origin: Origin) -> Self {
        let summary = Head::from_fields(fields).summary();
        let length = fields
            .iter()
            .map(|(k, v)| k.len() + v.get().len() + 4)
            .sum::<usize>();
        let mut text = String::with_capacity(length + 2);
        let mut kept = Vec::with_capacity(fields.len());
        text.push('{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            let key = push_key(&mut text, key);
            text.push(':');
            let start = text.len();
            text.push_str(value.get());
            kept.push(Field {
                key,
                value: offset(start)..offset(text.len()),
                parsed: OnceLock::new(),
            });
        }
        text.push('}');
        let mut resource =
            Self::with_summary(text.into_boxed_str(), OnceLock::new(), summary, origin);
        if let Some(inner) = Arc::get_mut(&mut resource.0) {
            inner.fields = kept.into_boxed_slice();
        }
        resource
    }

    /// A resource from an already parsed value (e.g. a draft order from the hook context).
    pub fn new(json: Value, origin: Origin) -> Self {
        let text = json.to_string();
        match PrefetchValue::from_json(&text, origin) {
            Ok(PrefetchValue::Resource(resource)) => {
                // Keep the tree we were given rather than parse it again when a rule reads it.
                let _ = resource.0.json.set(json);
                resource
            }
            // Not a resource (no resourceType): still readable by rules, just not indexed.
            _ => Self::with_summary(
                text.into_boxed_str(),
                OnceLock::from(json),
                Summary::default(),
                origin,
            ),
        }
    }

    fn with_summary(text: Box<str>, json: OnceLock<Value>, s: Summary, origin: Origin) -> Self {
        let date = s.date.and_then(|d| {
            let instant = parse_fhir_instant(&d)?;
            Some((d.into_boxed_str(), instant))
        });
        Self(Arc::new(ResourceInner {
            text,
            fields: Box::default(),
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
        // The text was read from valid JSON (or written by Cardinal) and at most `MAX_JSON_DEPTH`
        // deep, well within serde's recursion limit, so this parse succeeds.
        self.0
            .json
            .get_or_init(|| serde_json::from_str(&self.0.text).unwrap_or(Value::Null))
    }

    /// The resource's JSON text.
    pub fn text(&self) -> &str {
        &self.0.text
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

    /// Any top-level field. Only that field is parsed, unless the whole tree is already built.
    pub fn get(&self, field: &str) -> Option<&Value> {
        let inner = &*self.0;
        if let Some(json) = inner.json.get() {
            return json.get(field);
        }
        if inner.fields.is_empty() {
            return self.json().get(field);
        }
        // JSON keeps the last of repeated keys, as the full tree does.
        let found = inner.fields.iter().rev().find(|f| match &f.key {
            FieldKey::InText(range) => self.slice(range) == Some(field),
            FieldKey::Decoded(key) => &**key == field,
        })?;
        Some(found.parsed.get_or_init(|| {
            // Read from valid JSON and bounded in depth when kept (see `json`): this parse succeeds.
            self.slice(&found.value)
                .and_then(|text| serde_json::from_str(text).ok())
                .unwrap_or(Value::Null)
        }))
    }

    fn slice(&self, range: &Range<u32>) -> Option<&str> {
        self.0.text.get(range.start as usize..range.end as usize)
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
