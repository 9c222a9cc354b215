//! The hook request, validated by hand so that every error message is Cardinal's own and never echoes
//! request content (which may be patient data) back into logs or responses.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::excerpt;
use crate::fhir::{Prefetch, PrefetchReads, PrefetchSeed, ReadPrefetch, TooDeep, check_json_depth};

/// Why a request (or feedback) was refused. Messages name fields, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not valid JSON (line {line}, column {column})")]
    MalformedJson { line: usize, column: usize },
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("required field `{0}` is missing")]
    MissingField(String),
    #[error("field `{field}` must be {expected}")]
    WrongType {
        field: String,
        expected: &'static str,
    },
    #[error("`fhirServer` is required when `fhirAuthorization` is sent")]
    FhirServerRequired,
    #[error("`{field}` {why}")]
    TooDeep { field: String, why: TooDeep },
    #[error(
        "hook `{}` does not match service `{service}`, which answers `{expected}`",
        excerpt(.got)
    )]
    HookMismatch {
        service: String,
        expected: String,
        got: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl RequestError {
    pub fn from_json(err: &serde_json::Error) -> Self {
        Self::MalformedJson {
            line: err.line(),
            column: err.column(),
        }
    }

    pub fn wrong_type(field: impl Into<String>, expected: &'static str) -> Self {
        Self::WrongType {
            field: field.into(),
            expected,
        }
    }
}

/// `fhirAuthorization`. The access token is a secret: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FhirAuthorization {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: i64,
    pub scope: String,
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
}

impl fmt::Debug for FhirAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirAuthorization")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// A CDS Hooks call, transport-free. Both the HTTP and the gRPC transport build one of these.
#[derive(Clone)]
pub struct HookRequest {
    pub hook: String,
    pub hook_instance: String,
    pub fhir_server: Option<String>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: Map<String, Value>,
    /// Prefetch key -> resource, Bundle, or `null` ("no such resource"), kept as raw JSON.
    pub prefetch: Prefetch,
    /// Prefetch keys the request sent that the service does not declare: checked as JSON, then
    /// dropped, as CDS Hooks has a service use only the prefetch it declared (sorted).
    pub ignored_prefetch: Vec<String>,
    pub extension: Option<Map<String, Value>>,
}

impl fmt::Debug for HookRequest {
    // Only non-identifying fields: the context and prefetch are patient data.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookRequest")
            .field("hook", &self.hook)
            .field("hook_instance", &self.hook_instance)
            .field("prefetch_keys", &self.prefetch.keys().collect::<Vec<_>>())
            .field("ignored_prefetch", &self.ignored_prefetch)
            .finish_non_exhaustive()
    }
}

/// The request body as read in one pass: small fields as raw JSON text (bounded in depth, then parsed
/// and validated by hand below, so every message is Cardinal's own), prefetch as raw resources.
#[derive(Default)]
struct Wire<'a> {
    hook: Option<&'a RawValue>,
    hook_instance: Option<&'a RawValue>,
    fhir_server: Option<&'a RawValue>,
    fhir_authorization: Option<&'a RawValue>,
    context: Option<&'a RawValue>,
    prefetch: Option<ReadPrefetch>,
    extension: Option<&'a RawValue>,
}

/// Reads the request object, its `prefetch` as `reads` says.
struct WireSeed<'r> {
    reads: &'r PrefetchReads,
}

impl<'de> DeserializeSeed<'de> for WireSeed<'_> {
    type Value = Wire<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WireSeed<'_> {
    type Value = Wire<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CDS Hooks request")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        fn once<'de, A: MapAccess<'de>>(
            map: &mut A,
            slot: &mut Option<&'de RawValue>,
            name: &'static str,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = Some(map.next_value()?);
            Ok(())
        }
        let mut wire = Wire::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "hook" => once(&mut map, &mut wire.hook, "hook")?,
                "hookInstance" => once(&mut map, &mut wire.hook_instance, "hookInstance")?,
                "fhirServer" => once(&mut map, &mut wire.fhir_server, "fhirServer")?,
                "fhirAuthorization" => {
                    once(&mut map, &mut wire.fhir_authorization, "fhirAuthorization")?
                }
                "context" => once(&mut map, &mut wire.context, "context")?,
                "extension" => once(&mut map, &mut wire.extension, "extension")?,
                "prefetch" => {
                    if wire.prefetch.is_some() {
                        return Err(de::Error::duplicate_field("prefetch"));
                    }
                    wire.prefetch = Some(map.next_value_seed(PrefetchSeed { reads: self.reads })?);
                }
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(wire)
    }
}

/// The top-level fields as values, from either transport.
struct Fields {
    hook: Option<Value>,
    hook_instance: Option<Value>,
    fhir_server: Option<Value>,
    fhir_authorization: Option<Value>,
    context: Option<Value>,
    prefetch: ReadPrefetch,
    extension: Option<Value>,
}

/// Parses one field's JSON text into a value, refusing first what nests deeper than
/// [`crate::fhir::MAX_JSON_DEPTH`]: serde's own limit would only say "not valid JSON", and the trees
/// built here are later walked recursively.
pub fn json_field(field: &str, text: &str) -> Result<Value, RequestError> {
    check_json_depth(text).map_err(|why| RequestError::TooDeep {
        field: field.to_owned(),
        why,
    })?;
    serde_json::from_str(text).map_err(|e| {
        RequestError::Invalid(format!(
            "`{field}` is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

fn raw_field(field: &str, raw: Option<&RawValue>) -> Result<Option<Value>, RequestError> {
    raw.map(|raw| json_field(field, raw.get())).transpose()
}

/// A data error from the request reader. Cardinal's own messages (which name a field) pass through;
/// anything else is replaced, because serde's messages can quote the offending value.
fn data_error(err: &serde_json::Error) -> RequestError {
    let text = err.to_string();
    let message = text.split(" at line ").next().unwrap_or_default();
    if message.starts_with('`') && message.ends_with("is not valid JSON") {
        // Raised where the syntax error is: the position is the error's.
        RequestError::Invalid(format!(
            "{message} (line {}, column {})",
            err.line(),
            err.column()
        ))
    } else if message.starts_with('`') {
        RequestError::Invalid(message.to_owned())
    } else if message.starts_with("duplicate field") {
        RequestError::Invalid(format!("{message} in the request"))
    } else {
        RequestError::Invalid(format!(
            "request body has a value of the wrong type (line {}, column {})",
            err.line(),
            err.column()
        ))
    }
}

impl HookRequest {
    /// Parses and validates the JSON body of `POST /cds-services/{id}`, reading every prefetch key
    /// (tools, tests; the prefetch step later drops the keys a service did not declare).
    pub fn from_json_bytes(body: &[u8]) -> Result<Self, RequestError> {
        Self::from_json_bytes_for(body, &PrefetchReads::All)
    }

    /// Parses and validates the JSON body of a call to a service whose rules read the prefetch keys
    /// `reads` names ([`crate::prefetch::PrefetchPlan::reads`]): the other keys are only checked to
    /// be JSON, never read into resources, and listed in `ignored_prefetch`.
    pub fn from_json_bytes_for(body: &[u8], reads: &PrefetchReads) -> Result<Self, RequestError> {
        // serde would read a JSON array as a struct's fields in order; only an object is a request.
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|&b| b != b'{') {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    Ok(_) => RequestError::NotAnObject,
                    Err(e) => RequestError::from_json(&e),
                },
            );
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        let wire = WireSeed { reads }
            .deserialize(&mut de)
            .and_then(|wire| de.end().map(|()| wire))
            .map_err(|e| match e.classify() {
                serde_json::error::Category::Data => data_error(&e),
                _ => RequestError::from_json(&e),
            })?;
        Self::from_fields(Fields {
            hook: raw_field("hook", wire.hook)?,
            hook_instance: raw_field("hookInstance", wire.hook_instance)?,
            fhir_server: raw_field("fhirServer", wire.fhir_server)?,
            fhir_authorization: raw_field("fhirAuthorization", wire.fhir_authorization)?,
            context: raw_field("context", wire.context)?,
            prefetch: wire.prefetch.unwrap_or_default(),
            extension: raw_field("extension", wire.extension)?,
        })
    }

    /// Validates a request given as a JSON value (tests, tools). Same rules as the HTTP body.
    pub fn from_value(value: Value) -> Result<Self, RequestError> {
        if !value.is_object() {
            return Err(RequestError::NotAnObject);
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| RequestError::Invalid(e.to_string()))?;
        Self::from_json_bytes(&bytes)
    }

    /// Validates a request whose prefetch was read separately (the gRPC transport, which carries
    /// each prefetch answer as its own JSON text). `fields` holds every other top-level field.
    pub fn from_parts(
        mut fields: Map<String, Value>,
        prefetch: Prefetch,
    ) -> Result<Self, RequestError> {
        Self::from_fields(Fields {
            hook: fields.remove("hook"),
            hook_instance: fields.remove("hookInstance"),
            fhir_server: fields.remove("fhirServer"),
            fhir_authorization: fields.remove("fhirAuthorization"),
            context: fields.remove("context"),
            prefetch: ReadPrefetch {
                answers: prefetch,
                ignored: Vec::new(),
            },
            extension: fields.remove("extension"),
        })
    }

    fn from_fields(wire: Fields) -> Result<Self, RequestError> {
        let hook = string_field(wire.hook, "hook")?.ok_or_else(|| missing("hook"))?;
        let hook_instance = string_field(wire.hook_instance, "hookInstance")?
            .ok_or_else(|| missing("hookInstance"))?;
        if hook.is_empty() {
            return Err(RequestError::Invalid("`hook` must not be empty".into()));
        }
        if hook_instance.is_empty() {
            return Err(RequestError::Invalid(
                "`hookInstance` must not be empty".into(),
            ));
        }
        let fhir_server = string_field(wire.fhir_server, "fhirServer")?;
        let fhir_authorization = match wire.fhir_authorization {
            None | Some(Value::Null) => None,
            Some(v) => Some(parse_authorization(v)?),
        };
        if fhir_authorization.is_some() && fhir_server.is_none() {
            return Err(RequestError::FhirServerRequired);
        }
        let context = match wire.context {
            Some(Value::Object(m)) => m,
            None | Some(Value::Null) => return Err(missing("context")),
            Some(_) => return Err(RequestError::wrong_type("context", "a JSON object")),
        };
        let extension = match wire.extension {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err(RequestError::wrong_type("extension", "a JSON object")),
        };
        Ok(Self {
            hook,
            hook_instance,
            fhir_server,
            fhir_authorization,
            context,
            prefetch: wire.prefetch.answers,
            ignored_prefetch: wire.prefetch.ignored,
            extension,
        })
    }
}

fn string_field(value: Option<Value>, field: &str) -> Result<Option<String>, RequestError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RequestError::wrong_type(field, "a string")),
    }
}

fn missing(field: &str) -> RequestError {
    RequestError::MissingField(field.to_owned())
}

fn take_string(obj: &mut Map<String, Value>, field: &str) -> Result<Option<String>, RequestError> {
    string_field(obj.remove(field), field)
}

fn parse_authorization(value: Value) -> Result<FhirAuthorization, RequestError> {
    let Value::Object(mut obj) = value else {
        return Err(RequestError::wrong_type(
            "fhirAuthorization",
            "a JSON object",
        ));
    };
    let mut field = |name: &str| -> Result<String, RequestError> {
        take_string(&mut obj, name)?.ok_or_else(|| missing(&format!("fhirAuthorization.{name}")))
    };
    let access_token = field("access_token")?;
    let token_type = field("token_type")?;
    let scope = field("scope")?;
    let subject = field("subject")?;
    let patient = take_string(&mut obj, "patient")?;
    let expires_in = match obj.remove("expires_in") {
        Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
            RequestError::wrong_type("fhirAuthorization.expires_in", "an integer")
        })?,
        None | Some(Value::Null) => return Err(missing("fhirAuthorization.expires_in")),
        Some(_) => {
            return Err(RequestError::wrong_type(
                "fhirAuthorization.expires_in",
                "an integer",
            ));
        }
    };
    if token_type != "Bearer" {
        return Err(RequestError::Invalid(
            "`fhirAuthorization.token_type` must be `Bearer`".into(),
        ));
    }
    Ok(FhirAuthorization {
        access_token,
        token_type,
        expires_in,
        scope,
        subject,
        patient,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::MAX_JSON_DEPTH;

    fn deep(levels: usize) -> String {
        "[".repeat(levels) + "]".repeat(levels).as_str()
    }

    fn request_with(field: &str, value: &str) -> String {
        let mut fields = vec![
            ("hook", r#""patient-view""#.to_owned()),
            (
                "hookInstance",
                r#""d1577c69-dfbe-44ad-ba6d-3e05e953b2ea""#.to_owned(),
            ),
            (
                "context",
                r#"{"userId": "Practitioner/1", "patientId": "p1"}"#.to_owned(),
            ),
        ];
        fields.retain(|(k, _)| *k != field);
        fields.push((field, value.to_owned()));
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!(r#""{k}": {v}"#))
            .collect();
        format!("{{{}}}", body.join(", "))
    }

    #[test]
    fn fields_nesting_too_deep_are_refused_by_name_and_limit() {
        for (field, value) in [
            (
                "context",
                format!(
                    r#"{{"userId": "Practitioner/1", "patientId": "p1", "x": {}}}"#,
                    deep(100_000)
                ),
            ),
            (
                "context",
                format!(
                    r#"{{"userId": "Practitioner/1", "x": {}}}"#,
                    deep(MAX_JSON_DEPTH)
                ),
            ),
            ("extension", format!(r#"{{"x": {}}}"#, deep(100_000))),
            ("fhirAuthorization", format!(r#"{{"x": {}}}"#, deep(200))),
            ("hook", deep(100_000)),
            ("hookInstance", deep(129)),
            ("fhirServer", deep(65)),
        ] {
            let err = HookRequest::from_json_bytes(request_with(field, &value).as_bytes()).err();
            assert_eq!(
                err.as_ref().map(ToString::to_string),
                Some(format!(
                    "`{field}` nests JSON deeper than {MAX_JSON_DEPTH} levels"
                )),
                "{field}"
            );
        }
        // At the limit (the context object is level 1): read.
        let at_limit = format!(
            r#"{{"userId": "Practitioner/1", "patientId": "p1", "x": {}}}"#,
            deep(MAX_JSON_DEPTH - 1)
        );
        let request = HookRequest::from_json_bytes(request_with("context", &at_limit).as_bytes());
        assert!(request.is_ok_and(|r| r.context.contains_key("x")));
    }

    #[test]
    fn deep_unknown_fields_are_skipped_and_null_fields_stay_absent() {
        let body = request_with("somethingElse", &deep(100_000));
        assert!(HookRequest::from_json_bytes(body.as_bytes()).is_ok());
        let body = request_with("extension", "null");
        assert!(HookRequest::from_json_bytes(body.as_bytes()).is_ok_and(|r| r.extension.is_none()));
        let body = request_with("context", "null");
        assert_eq!(
            HookRequest::from_json_bytes(body.as_bytes()).err(),
            Some(RequestError::MissingField("context".into()))
        );
    }

    #[test]
    fn a_mismatched_hook_is_quoted_only_in_part() {
        let err = RequestError::HookMismatch {
            service: "metformin-renal".into(),
            expected: "order-sign".into(),
            got: "h\n".repeat(40_000),
        };
        let message = err.to_string();
        assert!(message.starts_with("hook `h?h?"), "{message}");
        assert!(message.contains("…` does not match service `metformin-renal`"));
        assert!(message.len() < 200);
    }
}
