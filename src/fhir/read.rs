//! Reading FHIR resources and Bundles from JSON in one pass. Each resource is kept as its JSON text
//! (one allocation) plus the few fields Cardinal indexes; a full JSON tree is built only when a rule
//! reads some other field. Building and freeing whole trees is most of the cost of a large patient.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::resource::{Origin, Resource};

/// One prefetch key's answer.
#[derive(Debug, Clone)]
pub enum PrefetchValue {
    /// `null`: the EHR looked and found no such resource.
    Null,
    /// A single resource (including an OperationOutcome reporting a failed prefetch).
    Resource(Resource),
    /// A Bundle's entries (nested Bundles flattened).
    Bundle(Vec<Resource>),
}

/// Prefetch key -> answer.
pub type Prefetch = BTreeMap<String, PrefetchValue>;

impl PrefetchValue {
    /// Reads one answer from JSON text.
    pub fn from_json(text: &str, origin: Origin) -> Result<Self, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        let value = ItemSeed { origin }.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }

    /// An OperationOutcome in place of data: the EHR's prefetch failed, so the key is not provided.
    pub fn is_operation_outcome(&self) -> bool {
        matches!(self, Self::Resource(r) if r.resource_type() == "OperationOutcome")
    }
}

/// A JSON object key, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// A resource, a Bundle, or null, read with the given origin.
#[derive(Clone, Copy)]
struct ItemSeed {
    origin: Origin,
}

impl<'de> DeserializeSeed<'de> for ItemSeed {
    type Value = PrefetchValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed {
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
        let mut entries: Option<Vec<Resource>> = None;
        let mut fields: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::with_capacity(16);
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "resourceType" {
                let raw: &'de RawValue = map.next_value()?;
                let ty: String = serde_json::from_str(raw.get())
                    .map_err(|_| de::Error::custom("`resourceType` must be a string"))?;
                resource_type = Some(ty);
                fields.push((key, raw));
            } else if key == "entry" && resource_type.as_deref() == Some("Bundle") {
                // FHIR writes resourceType first, so a Bundle's entries are read in this same pass.
                entries = Some(map.next_value_seed(EntriesSeed {
                    origin: self.origin,
                })?);
            } else {
                let raw: &'de RawValue = map.next_value()?;
                fields.push((key, raw));
            }
        }
        match resource_type.as_deref() {
            Some("Bundle") => {
                let resources = match entries {
                    Some(resources) => resources,
                    None => match fields.iter().find(|(k, _)| k == "entry") {
                        Some((_, raw)) => {
                            let mut de = serde_json::Deserializer::from_str(raw.get());
                            EntriesSeed {
                                origin: self.origin,
                            }
                            .deserialize(&mut de)
                            .map_err(|_| de::Error::custom("`entry` must be an array"))?
                        }
                        None => Vec::new(),
                    },
                };
                Ok(PrefetchValue::Bundle(resources))
            }
            Some(_) => Ok(PrefetchValue::Resource(Resource::from_fields(
                &fields,
                self.origin,
            ))),
            None => {
                // CDS Hooks 1.0 wrapped each answer as `{"response": {...}, "resource": {...}}`.
                if let Some((_, raw)) = fields.iter().find(|(k, _)| k == "resource") {
                    return PrefetchValue::from_json(raw.get(), self.origin)
                        .map_err(de::Error::custom);
                }
                Err(de::Error::custom(
                    "is not a FHIR resource (no `resourceType`)",
                ))
            }
        }
    }
}

/// A Bundle's `entry` array: the resources of its entries, in order.
struct EntriesSeed {
    origin: Origin,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed {
    type Value = Vec<Resource>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed {
    type Value = Vec<Resource>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of Bundle entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut resources = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(item) = seq.next_element_seed(EntrySeed {
            origin: self.origin,
        })? {
            match item {
                Some(PrefetchValue::Resource(r)) => resources.push(r),
                Some(PrefetchValue::Bundle(nested)) => resources.extend(nested),
                Some(PrefetchValue::Null) | None => {}
            }
        }
        Ok(resources)
    }
}

/// One entry: its `resource` (other entry fields are skipped without being copied).
struct EntrySeed {
    origin: Origin,
}

impl<'de> DeserializeSeed<'de> for EntrySeed {
    type Value = Option<PrefetchValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed {
    type Value = Option<PrefetchValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Bundle entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut resource = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "resource" {
                resource = Some(map.next_value_seed(ItemSeed {
                    origin: self.origin,
                })?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(resource)
    }
}

/// The `prefetch` object of a hook request: key -> answer.
pub struct PrefetchField(pub Prefetch);

impl<'de> Deserialize<'de> for PrefetchField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl<'de> Visitor<'de> for FieldVisitor {
            type Value = PrefetchField;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(PrefetchField(Prefetch::new()))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut prefetch = Prefetch::new();
                let seed = ItemSeed {
                    origin: Origin::Prefetch,
                };
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value_seed(seed).map_err(|_| {
                        de::Error::custom(format!(
                            "`prefetch.{key}` must be a FHIR resource (JSON object with a `resourceType`) or null"
                        ))
                    })?;
                    prefetch.insert(key, value);
                }
                Ok(PrefetchField(prefetch))
            }
        }
        deserializer.deserialize_any(FieldVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Prefetch {
        let PrefetchField(p) = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    #[test]
    fn resources_bundles_and_null() {
        let p = read(
            r#"{"a": null,
            "b": {"resourceType": "Patient", "id": "p\"1", "name": [{"family": "X"}]},
            "c": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"fullUrl": "x", "resource": {"resourceType": "Observation", "id": "o1"}},
                {"search": {"mode": "match"}}]},
            "d": {"type": "searchset", "entry": [{"resource": {"resourceType": "Condition"}}], "resourceType": "Bundle"}}"#,
        );
        assert!(matches!(p["a"], PrefetchValue::Null));
        let PrefetchValue::Resource(patient) = &p["b"] else {
            panic!("b")
        };
        assert_eq!(patient.resource_type(), "Patient");
        assert_eq!(patient.id(), Some("p\"1"));
        assert_eq!(patient.json()["name"][0]["family"], "X");
        let PrefetchValue::Bundle(resources) = &p["c"] else {
            panic!("c")
        };
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].id(), Some("o1"));
        let PrefetchValue::Bundle(resources) = &p["d"] else {
            panic!("d")
        };
        assert_eq!(resources.len(), 1, "entry before resourceType");
    }

    #[test]
    fn nested_bundles_are_flattened_and_escaped_keys_survive() {
        let p = read(
            r#"{"batch": {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Bundle", "entry": [
                {"resource": {"resourceType": "Observation", "id": "a", "na\u006De": 1}}]}}]}}"#,
        );
        let PrefetchValue::Bundle(resources) = &p["batch"] else {
            panic!("batch")
        };
        assert_eq!(resources.len(), 1);
        assert_eq!(resources[0].json()["name"], 1);
    }

    #[test]
    fn unwraps_the_cds_hooks_1_0_response_wrapper() {
        let p = read(
            r#"{"m": {"response": {"status": "200 OK"}, "resource": {"resourceType": "MedicationOrder", "id": "x"}}}"#,
        );
        assert!(
            matches!(&p["m"], PrefetchValue::Resource(r) if r.resource_type() == "MedicationOrder")
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
