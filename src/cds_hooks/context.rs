//! The context each standard hook must carry (CDS Hooks library, hooks at 1.0+). Custom hooks pass
//! through unchecked: their shape belongs to whoever defined them.

use serde_json::{Map, Value};

use super::request::RequestError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A plain string.
    Id,
    /// A `Type/id` reference string.
    Reference,
    /// An array of `Type/id` reference strings.
    ReferenceList,
    /// A FHIR Bundle as a JSON object.
    Bundle,
}

struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
}

const fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

const fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

const PATIENT_VIEW: &[Field] = &[
    req("userId", Kind::Reference),
    req("patientId", Kind::Id),
    opt("encounterId", Kind::Id),
];
const ORDER_SELECT: &[Field] = &[
    req("userId", Kind::Reference),
    req("patientId", Kind::Id),
    opt("encounterId", Kind::Id),
    req("selections", Kind::ReferenceList),
    req("draftOrders", Kind::Bundle),
];
const ORDER_SIGN: &[Field] = &[
    req("userId", Kind::Reference),
    req("patientId", Kind::Id),
    opt("encounterId", Kind::Id),
    req("draftOrders", Kind::Bundle),
];
const ENCOUNTER: &[Field] = &[
    req("userId", Kind::Reference),
    req("patientId", Kind::Id),
    req("encounterId", Kind::Id),
];
const APPOINTMENT_BOOK: &[Field] = &[
    req("userId", Kind::Reference),
    req("patientId", Kind::Id),
    opt("encounterId", Kind::Id),
    req("appointments", Kind::Bundle),
];

/// The standard hooks Cardinal validates strictly.
pub const STANDARD_HOOKS: &[&str] = &[
    "patient-view",
    "order-select",
    "order-sign",
    "encounter-start",
    "encounter-discharge",
    "appointment-book",
];

fn fields_of(hook: &str) -> Option<&'static [Field]> {
    match hook {
        "patient-view" => Some(PATIENT_VIEW),
        "order-select" => Some(ORDER_SELECT),
        "order-sign" => Some(ORDER_SIGN),
        "encounter-start" | "encounter-discharge" => Some(ENCOUNTER),
        "appointment-book" => Some(APPOINTMENT_BOOK),
        _ => None,
    }
}

/// First-level context fields of a standard hook that are primitives (usable in prefetch templates).
/// `None` for custom hooks, whose fields Cardinal cannot know.
pub fn primitive_fields(hook: &str) -> Option<Vec<&'static str>> {
    fields_of(hook).map(|fields| {
        fields
            .iter()
            .filter(|f| matches!(f.kind, Kind::Id | Kind::Reference))
            .map(|f| f.name)
            .collect()
    })
}

/// Checks the context of a standard hook; custom hooks pass.
pub fn validate(hook: &str, context: &Map<String, Value>) -> Result<(), RequestError> {
    let Some(fields) = fields_of(hook) else {
        return Ok(());
    };
    for field in fields {
        let path = format!("context.{}", field.name);
        match context.get(field.name) {
            None | Some(Value::Null) => {
                if field.required {
                    return Err(RequestError::MissingField(path));
                }
            }
            Some(value) => check_kind(&path, field.kind, value)?,
        }
    }
    Ok(())
}

fn is_reference(s: &str) -> bool {
    matches!(s.split_once('/'), Some((ty, id)) if !ty.is_empty() && !id.is_empty() && ty.chars().all(|c| c.is_ascii_alphabetic()))
}

fn check_kind(path: &str, kind: Kind, value: &Value) -> Result<(), RequestError> {
    match kind {
        Kind::Id => match value.as_str() {
            Some(s) if !s.is_empty() => Ok(()),
            Some(_) => Err(RequestError::Invalid(format!("`{path}` must not be empty"))),
            None => Err(RequestError::wrong_type(path, "a string")),
        },
        Kind::Reference => match value.as_str() {
            Some(s) if is_reference(s) => Ok(()),
            Some(_) => Err(RequestError::Invalid(format!(
                "`{path}` must be a FHIR reference of the form `Type/id`"
            ))),
            None => Err(RequestError::wrong_type(path, "a string")),
        },
        Kind::ReferenceList => {
            let Some(items) = value.as_array() else {
                return Err(RequestError::wrong_type(
                    path,
                    "an array of `Type/id` strings",
                ));
            };
            if items.iter().all(|v| v.as_str().is_some_and(is_reference)) {
                Ok(())
            } else {
                Err(RequestError::wrong_type(
                    path,
                    "an array of `Type/id` strings",
                ))
            }
        }
        Kind::Bundle => {
            if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                match value.get("entry") {
                    None | Some(Value::Array(_)) => Ok(()),
                    Some(_) => Err(RequestError::wrong_type(
                        format!("{path}.entry"),
                        "an array",
                    )),
                }
            } else {
                Err(RequestError::wrong_type(path, "a FHIR Bundle"))
            }
        }
    }
}
