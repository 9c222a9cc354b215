//! Prefetch answers as they arrive: a resource, a searchset Bundle, or `null`. Resources are kept as raw
//! JSON, one allocation each, so that Cardinal builds a full JSON tree only for the resources a rule
//! actually reads: parsing and freeing whole trees is most of the cost of a large patient.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// One prefetch key's answer.
#[derive(Debug, Clone)]
pub enum PrefetchValue {
    /// `null`: the EHR looked and found no such resource.
    Null,
    /// A single resource (including an OperationOutcome reporting a failed prefetch).
    Resource {
        resource_type: String,
        raw: Box<RawValue>,
    },
    /// A Bundle: each entry's `resource`, raw.
    Bundle { resources: Vec<Box<RawValue>> },
}

/// Prefetch key -> answer.
pub type Prefetch = BTreeMap<String, PrefetchValue>;

impl PrefetchValue {
    /// Parses one answer from JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// An OperationOutcome in place of data: the EHR's prefetch failed, so the key is not provided.
    pub fn is_operation_outcome(&self) -> bool {
        matches!(self, Self::Resource { resource_type, .. } if resource_type == "OperationOutcome")
    }
}

/// One Bundle entry: its `resource`, raw (other entry fields are skipped without being copied).
#[derive(serde::Deserialize)]
struct Entry {
    #[serde(default)]
    resource: Option<Box<RawValue>>,
}

/// A Bundle's `entry` array: the resources of its entries, raw, in order.
struct Entries(Vec<Box<RawValue>>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let entries: Vec<Entry> = Deserialize::deserialize(deserializer)?;
        Ok(Self(
            entries
                .into_iter()
                .filter_map(|e| e.resource)
                .filter(|r| r.get().starts_with('{'))
                .collect(),
        ))
    }
}

struct PrefetchVisitor;

fn push_json_string(out: &mut String, text: &str) {
    // A key or resourceType from valid JSON: re-encoding it cannot fail.
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

impl<'de> Visitor<'de> for PrefetchVisitor {
    type Value = PrefetchValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a FHIR resource, a Bundle or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PrefetchValue::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PrefetchValue::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut resource_type: Option<String> = None;
        let mut entries: Option<Vec<Box<RawValue>>> = None;
        let mut fields: Vec<(String, Box<RawValue>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "resourceType" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    let ty: String = serde_json::from_str(raw.get())
                        .map_err(|_| de::Error::custom("`resourceType` must be a string"))?;
                    resource_type = Some(ty);
                }
                // FHIR puts resourceType first, so a Bundle's entries are usually read in this one pass.
                "entry" if resource_type.as_deref() == Some("Bundle") => {
                    entries = Some(map.next_value::<Entries>()?.0);
                }
                _ => fields.push((key, map.next_value()?)),
            }
        }
        let Some(resource_type) = resource_type else {
            // CDS Hooks 1.0 wrapped each answer as `{"response": {...}, "resource": {...}}`.
            if let Some((_, raw)) = fields.iter().find(|(k, _)| k == "resource") {
                return PrefetchValue::from_json(raw.get()).map_err(de::Error::custom);
            }
            return Err(de::Error::custom(
                "is not a FHIR resource (no `resourceType`)",
            ));
        };
        if resource_type == "Bundle" {
            let resources = match entries {
                Some(resources) => resources,
                None => match fields.iter().find(|(k, _)| k == "entry") {
                    Some((_, raw)) => serde_json::from_str::<Entries>(raw.get())
                        .map(|e| e.0)
                        .map_err(|_| de::Error::custom("`entry` must be an array"))?,
                    None => Vec::new(),
                },
            };
            return Ok(PrefetchValue::Bundle { resources });
        }
        // Reassemble the resource's JSON from its parts: copies, no re-parse.
        let mut text = String::with_capacity(
            32 + resource_type.len()
                + fields
                    .iter()
                    .map(|(k, v)| k.len() + v.get().len() + 4)
                    .sum::<usize>(),
        );
        text.push_str("{\"resourceType\":");
        push_json_string(&mut text, &resource_type);
        for (key, value) in &fields {
            text.push(',');
            push_json_string(&mut text, key);
            text.push(':');
            text.push_str(value.get());
        }
        text.push('}');
        let raw = RawValue::from_string(text).map_err(de::Error::custom)?;
        Ok(PrefetchValue::Resource { resource_type, raw })
    }
}

impl<'de> Deserialize<'de> for PrefetchValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PrefetchVisitor)
    }
}

/// The `prefetch` object: key -> answer.
pub(crate) struct PrefetchField(pub Prefetch);

struct PrefetchFieldVisitor;

impl<'de> Visitor<'de> for PrefetchFieldVisitor {
    type Value = PrefetchField;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(PrefetchField(Prefetch::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut prefetch = Prefetch::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<PrefetchValue>().map_err(|_| {
                de::Error::custom(format!(
                    "`prefetch.{key}` must be a FHIR resource (JSON object with a `resourceType`) or null"
                ))
            })?;
            prefetch.insert(key, value);
        }
        Ok(PrefetchField(prefetch))
    }
}

impl<'de> Deserialize<'de> for PrefetchField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(PrefetchFieldVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_bundles_and_null() {
        let text = r#"{"a": null,
            "b": {"resourceType": "Patient", "id": "p\"1", "name": [{"family": "X"}]},
            "c": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"fullUrl": "x", "resource": {"resourceType": "Observation", "id": "o1"}},
                {"search": {"mode": "match"}}]},
            "d": {"type": "searchset", "entry": [{"resource": {"resourceType": "Condition"}}], "resourceType": "Bundle"}}"#;
        let PrefetchField(p) = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(p["a"], PrefetchValue::Null));
        let PrefetchValue::Resource { resource_type, raw } = &p["b"] else {
            panic!("b")
        };
        assert_eq!(resource_type, "Patient");
        let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
        assert_eq!(v["id"], "p\"1");
        assert_eq!(v["name"][0]["family"], "X");
        let PrefetchValue::Bundle { resources } = &p["c"] else {
            panic!("c")
        };
        assert_eq!(resources.len(), 1);
        assert!(resources[0].get().contains("\"o1\""));
        let PrefetchValue::Bundle { resources } = &p["d"] else {
            panic!("d")
        };
        assert_eq!(resources.len(), 1, "entry before resourceType");
    }

    #[test]
    fn unwraps_the_cds_hooks_1_0_response_wrapper() {
        let text = r#"{"m": {"response": {"status": "200 OK"}, "resource": {"resourceType": "MedicationOrder", "id": "x"}}}"#;
        let PrefetchField(p) = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(&p["m"], PrefetchValue::Resource { resource_type, .. } if resource_type == "MedicationOrder")
        );
    }

    #[test]
    fn refuses_what_is_not_a_resource() {
        for bad in [
            r#"{"k": 5}"#,
            r#"{"k": [1]}"#,
            r#"{"k": {"id": "x"}}"#,
            r#"{"k": {"resourceType": 3}}"#,
        ] {
            let err = serde_json::from_str::<PrefetchField>(bad)
                .err()
                .map(|e| e.to_string());
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("`prefetch.k` must be")),
                "{bad}: {err:?}"
            );
        }
    }
}
