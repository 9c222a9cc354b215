//! The compact test-case format: the hook, its context, the patient's resources by type and the
//! expectations. `cardinal test` expands it into the CDS Hooks request an EHR would send, answering
//! each of the service's prefetch templates from the case's resources, so an author writes the
//! patient once instead of ~150 lines of request.
//!
//! ```json
//! {
//!   "description": "Metformin ordered; latest eGFR 38",
//!   "service": "metformin-renal",
//!   "evaluation_time": "2026-11-25",
//!   "context": { "userId": "Practitioner/pract-1", "patientId": "pat-1",
//!                "draftOrders": [ { "resourceType": "MedicationRequest", "…": "…" } ] },
//!   "resources": { "Patient": [ { "resourceType": "Patient", "id": "pat-1" } ],
//!                  "Observation": [ { "resourceType": "Observation", "id": "egfr-1", "…": "…" } ] },
//!   "expect": { "cards": [ { "summary": "…", "indicator": "warning" } ] }
//! }
//! ```
//!
//! Expansion, for each key of the service's `[prefetch]` (see `docs/testing-rules.md`):
//! - a read (`Patient/{{context.patientId}}`) gets the resource of that type and id, or `null`;
//! - a search (`Observation?patient=…&code=…`) gets a `searchset` Bundle of every resource of that
//!   type, in the case's order. Search parameters are not applied: a test case says what the EHR
//!   sends, including what a rule must ignore (a result entered in error, another code). The one
//!   parameter followed is `_include=X:param`: resources referenced by the matches' `param` element
//!   (`medicationReference`) are added, as a server would;
//! - `"prefetch": {"key": …}` sends a value as written (`null`, an OperationOutcome, a Bundle);
//! - `"not_sent": ["key"]` leaves a key out of the request (the EHR did not prefetch it).
//!
//! Defaults: `hook` is the service's, `hookInstance` a fixed UUID, `fhirServer`
//! [`DEFAULT_FHIR_SERVER`] (`null` leaves it out); a `draftOrders` array becomes a `collection`
//! Bundle. Expansion is a pure function of the case and the service's templates.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

use crate::registry::CdsService;

use super::case::Expectation;

/// `fhirServer` of an expanded request unless the case says otherwise.
pub const DEFAULT_FHIR_SERVER: &str = "https://ehr.example.org/fhir";
/// `hookInstance` of an expanded request unless the case says otherwise: rules never see it.
pub const DEFAULT_HOOK_INSTANCE: &str = "2d7f3c1a-5b8e-4c9d-a0f1-6e2b4d8c0a17";

/// A compact test case, as written in its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactCase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_time: Option<String>,
    /// Default: the service's hook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
    #[serde(
        default,
        rename = "hookInstance",
        skip_serializing_if = "Option::is_none"
    )]
    pub hook_instance: Option<String>,
    /// Absent: [`DEFAULT_FHIR_SERVER`]; `null`: no `fhirServer` in the request.
    #[serde(
        default,
        rename = "fhirServer",
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub fhir_server: Option<Value>,
    #[serde(
        default,
        rename = "fhirAuthorization",
        skip_serializing_if = "Option::is_none"
    )]
    pub fhir_authorization: Option<Value>,
    /// The hook context; `draftOrders` may be an array of resources.
    pub context: Map<String, Value>,
    /// The patient's resources, by resource type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, Vec<Value>>,
    /// Prefetch values sent as written, instead of answered from `resources`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prefetch: BTreeMap<String, Value>,
    /// Declared keys left out of the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_sent: Vec<String>,
    pub expect: Expectation,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Value>,
}

/// A field that is present, even as `null` (`Some(Value::Null)`), as opposed to absent (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Why a compact case cannot be read or expanded. Names keys and types, never patient data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error(
        "`resources.{key}` item {index}: {problem} (each item is a FHIR resource whose `resourceType` is `{key}`, with an `id`)"
    )]
    BadResource {
        key: String,
        index: usize,
        problem: &'static str,
    },
    #[error("`resources.{key}` holds two different resources with the same id (item {index})")]
    DuplicateResource { key: String, index: usize },
    #[error("`context.{0}` must be a string")]
    NotAString(&'static str),
    #[error("`context.draftOrders` must be a FHIR Bundle or an array of resources")]
    BadDraftOrders,
    #[error("`prefetch` and `not_sent` both name `{0}`")]
    BothSentAndNot(String),
    #[error(
        "`{field}` names prefetch key `{key}`, which service {service} does not declare (it declares: {declared})"
    )]
    UndeclaredKey {
        field: &'static str,
        key: String,
        service: String,
        declared: String,
    },
    #[error("prefetch `{key}` cannot be answered: {reason}")]
    Render { key: String, reason: String },
    #[error("`fhirServer` must be a string or null")]
    BadFhirServer,
    #[error("the request has no object `{0}`")]
    NotARequest(&'static str),
}

impl CompactCase {
    /// Checks what can be checked without the service: resources typed and identified, context
    /// fields of the right shape, no key both sent and not sent.
    pub fn check(&self) -> Result<(), CompactError> {
        for (key, items) in &self.resources {
            let mut seen: BTreeMap<&str, &Value> = BTreeMap::new();
            for (index, item) in items.iter().enumerate() {
                let bad = |problem| CompactError::BadResource {
                    key: key.clone(),
                    index,
                    problem,
                };
                let Some(object) = item.as_object() else {
                    return Err(bad("not a JSON object"));
                };
                if object.get("resourceType").and_then(Value::as_str) != Some(key.as_str()) {
                    return Err(bad("its `resourceType` is not the key it is listed under"));
                }
                let Some(id) = object.get("id").and_then(Value::as_str) else {
                    return Err(bad("no `id`"));
                };
                if id.is_empty() {
                    return Err(bad("an empty `id`"));
                }
                if let Some(before) = seen.insert(id, item)
                    && before != item
                {
                    return Err(CompactError::DuplicateResource {
                        key: key.clone(),
                        index,
                    });
                }
            }
        }
        for field in ["userId", "patientId", "encounterId"] {
            if self.context.get(field).is_some_and(|v| !v.is_string()) {
                return Err(CompactError::NotAString(field));
            }
        }
        if let Some(drafts) = self.context.get("draftOrders") {
            let ok = match drafts {
                Value::Array(items) => items.iter().all(Value::is_object),
                Value::Object(o) => o.get("resourceType").and_then(Value::as_str) == Some("Bundle"),
                _ => false,
            };
            if !ok {
                return Err(CompactError::BadDraftOrders);
            }
        }
        if let Some(key) = self
            .not_sent
            .iter()
            .find(|k| self.prefetch.contains_key(*k))
        {
            return Err(CompactError::BothSentAndNot(key.clone()));
        }
        match &self.fhir_server {
            None | Some(Value::Null | Value::String(_)) => Ok(()),
            Some(_) => Err(CompactError::BadFhirServer),
        }
    }

    /// The CDS Hooks request this case stands for, answered from the service's templates.
    pub fn expand(&self, service: &CdsService) -> Result<Value, CompactError> {
        self.check()?;
        let declared: Vec<&str> = service.prefetch.keys().map(|k| k.key.as_str()).collect();
        let undeclared = |field: &'static str, key: &String| CompactError::UndeclaredKey {
            field,
            key: key.clone(),
            service: service.id().to_owned(),
            declared: if declared.is_empty() {
                "no keys".to_owned()
            } else {
                declared.join(", ")
            },
        };
        for key in self.prefetch.keys() {
            if !declared.contains(&key.as_str()) {
                return Err(undeclared("prefetch", key));
            }
        }
        for key in &self.not_sent {
            if !declared.contains(&key.as_str()) {
                return Err(undeclared("not_sent", key));
            }
        }
        let mut context = self.context.clone();
        if let Some(Value::Array(items)) = context.get("draftOrders") {
            let bundle = collection(items);
            context.insert("draftOrders".into(), bundle);
        }
        let fhir_server = match &self.fhir_server {
            None => Some(DEFAULT_FHIR_SERVER),
            Some(value) => value.as_str(),
        };
        let mut prefetch = Map::new();
        for planned in service.prefetch.keys() {
            let key = &planned.key;
            if self.not_sent.contains(key) {
                continue;
            }
            if let Some(value) = self.prefetch.get(key) {
                prefetch.insert(key.clone(), value.clone());
                continue;
            }
            let url = planned
                .template
                .render(&context)
                .map_err(|e| CompactError::Render {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            prefetch.insert(key.clone(), self.answer(&url, fhir_server));
        }
        let mut request = Map::new();
        let hook = self.hook.as_deref().unwrap_or(service.hook());
        request.insert("hook".into(), Value::from(hook));
        request.insert(
            "hookInstance".into(),
            Value::from(
                self.hook_instance
                    .as_deref()
                    .unwrap_or(DEFAULT_HOOK_INSTANCE),
            ),
        );
        if let Some(server) = fhir_server {
            request.insert("fhirServer".into(), Value::from(server));
        }
        if let Some(auth) = &self.fhir_authorization {
            request.insert("fhirAuthorization".into(), auth.clone());
        }
        request.insert("context".into(), Value::Object(context));
        if !prefetch.is_empty() {
            request.insert("prefetch".into(), Value::Object(prefetch));
        }
        Ok(Value::Object(request))
    }

    fn find(&self, resource_type: &str, id: &str) -> Option<&Value> {
        self.resources
            .get(resource_type)?
            .iter()
            .find(|r| r.get("id").and_then(Value::as_str) == Some(id))
    }

    /// One rendered prefetch URL answered from the case's resources.
    fn answer(&self, url: &str, fhir_server: Option<&str>) -> Value {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let path = path.trim_matches('/');
        if let Some((ty, id)) = path.split_once('/') {
            return self.find(ty, id).cloned().unwrap_or(Value::Null);
        }
        let matches: &[Value] = self.resources.get(path).map_or(&[], Vec::as_slice);
        let mut included: Vec<&Value> = Vec::new();
        for (name, value) in query.split('&').filter_map(|p| p.split_once('=')) {
            if name != "_include" {
                continue;
            }
            // `MedicationRequest:medication`: the `medication` element, or `medicationReference`.
            let Some(element) = value.split(':').nth(1) else {
                continue;
            };
            for item in matches {
                for reference in references(item, element) {
                    let Some((ty, id)) = reference.split_once('/') else {
                        continue;
                    };
                    if let Some(found) = self.find(ty, id)
                        && !included.contains(&found)
                    {
                        included.push(found);
                    }
                }
            }
        }
        let entry = |resource: &Value, mode: &str| {
            let mut entry = Map::new();
            if let Some(base) = fhir_server
                && let (Some(ty), Some(id)) = (
                    resource.get("resourceType").and_then(Value::as_str),
                    resource.get("id").and_then(Value::as_str),
                )
            {
                let base = base.trim_end_matches('/');
                entry.insert("fullUrl".into(), Value::from(format!("{base}/{ty}/{id}")));
            }
            entry.insert("resource".into(), resource.clone());
            entry.insert("search".into(), json!({ "mode": mode }));
            Value::Object(entry)
        };
        let entries: Vec<Value> = matches
            .iter()
            .map(|r| entry(r, "match"))
            .chain(included.into_iter().map(|r| entry(r, "include")))
            .collect();
        json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "total": matches.len(),
            "entry": entries,
        })
    }
}

/// The `reference`s of `element` (or `{element}Reference`) of a resource, one or a list.
fn references<'a>(resource: &'a Value, element: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for name in [element.to_owned(), format!("{element}Reference")] {
        let items: Vec<&Value> = match resource.get(&name) {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(one) => vec![one],
            None => Vec::new(),
        };
        out.extend(
            items
                .into_iter()
                .filter_map(|i| i.get("reference").and_then(Value::as_str)),
        );
    }
    out
}

/// A `collection` Bundle of resources (the shape of `draftOrders`).
fn collection(items: &[Value]) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": items.iter().map(|r| json!({ "resource": r })).collect::<Vec<_>>(),
    })
}

/// The resources a request's prefetch carries, key by key: a Bundle's entry resources as an array
/// (Bundle metadata, `fullUrl` and `search` aside), a resource as itself, `null` as `null`; keys
/// not sent are absent. Two requests the rules cannot tell apart have the same value.
pub fn prefetch_resources(request: &Value) -> BTreeMap<String, Value> {
    let Some(prefetch) = request.get("prefetch").and_then(Value::as_object) else {
        return BTreeMap::new();
    };
    prefetch
        .iter()
        .map(|(key, value)| {
            let resources = if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                Value::Array(
                    value
                        .get("entry")
                        .and_then(Value::as_array)
                        .map(|entries| {
                            entries
                                .iter()
                                .filter_map(|e| e.get("resource").cloned())
                                .collect()
                        })
                        .unwrap_or_default(),
                )
            } else {
                value.clone()
            };
            (key.clone(), resources)
        })
        .collect()
}

/// A full case's request in the compact form, and a note for each key that had to be kept as
/// written (its resources could not be told apart from another key's, or it is no resource).
#[derive(Debug, Clone, PartialEq)]
pub struct Converted {
    pub case: CompactCase,
    pub kept_as_written: Vec<String>,
}

/// The compact form of a full request for `service`, checked: expanding it gives the same
/// context and the same prefetch resources as `request`. A key whose resources cannot be
/// reproduced from `resources` (an OperationOutcome, two keys of one type sent different
/// resources) is kept as written in `prefetch`.
pub fn from_request(
    request: &Value,
    service: &CdsService,
    template: CompactCase,
) -> Result<Converted, CompactError> {
    let object = request
        .as_object()
        .ok_or(CompactError::NotARequest("request"))?;
    let mut case = template;
    let mut context = object
        .get("context")
        .and_then(Value::as_object)
        .cloned()
        .ok_or(CompactError::NotARequest("context"))?;
    if let Some(drafts) = context.get("draftOrders").and_then(plain_collection) {
        context.insert("draftOrders".into(), Value::Array(drafts));
    }
    case.context = context;
    let hook = object.get("hook").and_then(Value::as_str);
    case.hook = hook.filter(|h| *h != service.hook()).map(str::to_owned);
    case.hook_instance = None;
    case.fhir_server = match object.get("fhirServer") {
        None => Some(Value::Null),
        Some(Value::String(s)) if s == DEFAULT_FHIR_SERVER => None,
        Some(other) => Some(other.clone()),
    };
    case.fhir_authorization = object.get("fhirAuthorization").cloned();
    let sent = object
        .get("prefetch")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let declared: Vec<String> = service.prefetch.keys().map(|k| k.key.clone()).collect();
    case.not_sent = declared
        .iter()
        .filter(|k| !sent.contains_key(*k))
        .cloned()
        .collect();
    // Keys kept as written: undeclared keys cannot be expanded, so they are refused by `expand`.
    let mut verbatim: BTreeSet<String> = sent
        .iter()
        .filter(|(_, v)| v.is_null() || is_operation_outcome(v))
        .map(|(k, _)| k.clone())
        .collect();
    let want = prefetch_resources(request);
    let mut notes = Vec::new();
    for (key, resources) in &want {
        if let Value::Array(items) = resources
            && has_two_with_one_id(items)
        {
            notes.push(format!(
                "prefetch `{key}` kept as written: it lists two different resources with the same id, and a compact case lists each resource once"
            ));
            verbatim.insert(key.clone());
        }
    }
    // Each round keeps at least one more key as written, or ends: bounded by the number of keys.
    for _ in 0..=sent.len() {
        case.prefetch = sent
            .iter()
            .filter(|(k, _)| verbatim.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (resources, unlisted) = pool(sent.iter().filter(|(k, _)| !verbatim.contains(*k)));
        if !unlisted.is_empty() {
            for key in unlisted {
                notes.push(format!(
                    "prefetch `{key}` kept as written: it holds a resource without an id"
                ));
                verbatim.insert(key);
            }
            continue;
        }
        case.resources = resources;
        let got = prefetch_resources(&case.expand(service)?);
        let differing: Vec<String> = want
            .iter()
            .filter(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .collect();
        if differing.is_empty() {
            break;
        }
        for key in differing {
            notes.push(format!(
                "prefetch `{key}` kept as written: its resources are not what the template's type gives"
            ));
            verbatim.insert(key);
        }
    }
    for key in &verbatim {
        if let Some(v) = sent.get(key)
            && !v.is_null()
            && !notes.iter().any(|n| n.contains(&format!("`{key}`")))
        {
            notes.push(format!(
                "prefetch `{key}` kept as written: it is no resource or Bundle"
            ));
        }
    }
    Ok(Converted {
        case,
        kept_as_written: notes,
    })
}

/// Whether two different resources of one type share an id.
fn has_two_with_one_id(items: &[Value]) -> bool {
    let mut seen: BTreeMap<(&str, &str), &Value> = BTreeMap::new();
    items.iter().any(|item| {
        let (Some(ty), Some(id)) = (
            item.get("resourceType").and_then(Value::as_str),
            item.get("id").and_then(Value::as_str),
        ) else {
            return false;
        };
        seen.insert((ty, id), item)
            .is_some_and(|before| before != item)
    })
}

fn is_operation_outcome(value: &Value) -> bool {
    value.get("resourceType").and_then(Value::as_str) == Some("OperationOutcome")
}

/// The resources of a `collection` Bundle that carries nothing else, else `None`.
fn plain_collection(bundle: &Value) -> Option<Vec<Value>> {
    let object = bundle.as_object()?;
    let plain = object.get("resourceType").and_then(Value::as_str) == Some("Bundle")
        && object.get("type").and_then(Value::as_str) == Some("collection")
        && object
            .keys()
            .all(|k| matches!(k.as_str(), "resourceType" | "type" | "entry"));
    if !plain {
        return None;
    }
    let entries = match object.get("entry") {
        None => return Some(Vec::new()),
        Some(e) => e.as_array()?,
    };
    entries
        .iter()
        .map(|e| {
            let e = e.as_object()?;
            (e.len() == 1).then(|| e.get("resource").filter(|r| r.is_object()).cloned())?
        })
        .collect()
}

/// Every resource of these prefetch values by type, first occurrence first, each id once; and the
/// keys holding a resource without an id, which a compact case cannot list.
fn pool<'a>(
    values: impl Iterator<Item = (&'a String, &'a Value)>,
) -> (BTreeMap<String, Vec<Value>>, Vec<String>) {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut unlisted = Vec::new();
    for (key, value) in values {
        let resources: Vec<&Value> =
            if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                value
                    .get("entry")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice)
                    .iter()
                    .filter_map(|e| e.get("resource"))
                    .collect()
            } else {
                vec![value]
            };
        for resource in resources {
            let (Some(ty), Some(id)) = (
                resource.get("resourceType").and_then(Value::as_str),
                resource
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|i| !i.is_empty()),
            ) else {
                unlisted.push(key.clone());
                continue;
            };
            let items = out.entry(ty.to_owned()).or_default();
            // The first of two different resources with one id wins; the key that sent the
            // other then expands differently and is kept as written.
            if !items
                .iter()
                .any(|r| r.get("id").and_then(Value::as_str) == Some(id))
            {
                items.push(resource.clone());
            }
        }
    }
    (out, unlisted)
}

/// Pretty JSON with the keys a reader looks for first (`description`, `service`, `resourceType`,
/// `id`, …) before the others, which follow in alphabetical order.
pub fn to_pretty_json(value: &Value) -> String {
    let mut out = String::new();
    write_value(value, 0, &mut out);
    out.push('\n');
    out
}

const FIRST_KEYS: [&str; 25] = [
    "description",
    "service",
    "evaluation_time",
    "hook",
    "hookInstance",
    "fhirServer",
    "fhirAuthorization",
    "context",
    "resources",
    "prefetch",
    "not_sent",
    "expect",
    "provenance",
    "resourceType",
    "id",
    "status",
    "summary",
    "indicator",
    "rule",
    "condition",
    "name",
    "value",
    "system",
    "code",
    "display",
];

fn key_rank(key: &str) -> usize {
    FIRST_KEYS
        .iter()
        .position(|k| *k == key)
        .unwrap_or(FIRST_KEYS.len())
}

/// Objects and arrays that fit on one line of this width are written on one line.
const LINE_WIDTH: usize = 100;

/// One line: `{"system": "http://loinc.org", "code": "2160-0"}`.
fn one_line(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| key_rank(a).cmp(&key_rank(b)).then(a.cmp(b)));
            out.push('{');
            for (n, key) in keys.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{}: ", Value::from(key.as_str()));
                if let Some(item) = map.get(*key) {
                    one_line(item, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                one_line(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn write_value(value: &Value, indent: usize, out: &mut String) {
    let pad = |n: usize| "  ".repeat(n);
    if value.is_object() || value.is_array() {
        let mut line = String::new();
        one_line(value, &mut line);
        if line.chars().count() + indent * 2 <= LINE_WIDTH {
            out.push_str(&line);
            return;
        }
    }
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| key_rank(a).cmp(&key_rank(b)).then(a.cmp(b)));
            out.push_str("{\n");
            for (n, key) in keys.iter().enumerate() {
                let _ = write!(out, "{}{}: ", pad(indent + 1), Value::from(key.as_str()));
                if let Some(item) = map.get(*key) {
                    write_value(item, indent + 1, out);
                }
                out.push_str(if n + 1 < keys.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}}}", pad(indent));
        }
        Value::Array(items) if !items.is_empty() => {
            out.push_str("[\n");
            for (n, item) in items.iter().enumerate() {
                out.push_str(&pad(indent + 1));
                write_value(item, indent + 1, out);
                out.push_str(if n + 1 < items.len() { ",\n" } else { "\n" });
            }
            let _ = write!(out, "{}]", pad(indent));
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_collection_becomes_an_array_and_anything_else_stays() {
        let plain = json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"resource": {"resourceType": "MedicationRequest", "id": "m"}}]});
        assert_eq!(
            plain_collection(&plain),
            Some(vec![
                json!({"resourceType": "MedicationRequest", "id": "m"})
            ])
        );
        let with_id =
            json!({"resourceType": "Bundle", "id": "b", "type": "collection", "entry": []});
        assert_eq!(plain_collection(&with_id), None);
        let with_full_url = json!({"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": "x", "resource": {"resourceType": "MedicationRequest"}}]});
        assert_eq!(plain_collection(&with_full_url), None);
        let transaction = json!({"resourceType": "Bundle", "type": "transaction", "entry": []});
        assert_eq!(plain_collection(&transaction), None);
    }

    #[test]
    fn pretty_json_puts_resource_type_and_id_first_and_reads_back_the_same() {
        let long = "x".repeat(100);
        let value = json!({"b": long, "id": "x", "resourceType": "Patient", "a": [1, {"z": null, "id": "y"}], "e": {}, "f": []});
        let text = to_pretty_json(&value);
        assert!(
            text.starts_with("{\n  \"resourceType\": \"Patient\",\n  \"id\": \"x\",\n  \"a\": [1, {\"id\": \"y\", \"z\": null}],\n"),
            "{text}"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap_or_default(),
            value
        );
    }

    #[test]
    fn references_read_the_element_and_its_reference_variant() {
        let r = json!({"medicationReference": {"reference": "Medication/m1"},
                       "basedOn": [{"reference": "CarePlan/c1"}, {"display": "x"}]});
        assert_eq!(references(&r, "medication"), ["Medication/m1"]);
        assert_eq!(references(&r, "basedOn"), ["CarePlan/c1"]);
        assert!(references(&r, "subject").is_empty());
    }
}
