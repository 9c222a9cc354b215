//! Reading FHIR resources and Bundles from JSON in one pass. Each resource is kept as its JSON text
//! (one allocation) plus the few fields Cardinal indexes; a full JSON tree is built only when a rule
//! reads some other field. Building and freeing whole trees is most of the cost of a large patient.
//!
//! Nesting is bounded ([`MAX_NESTING`] Bundles or wrappers, [`MAX_JSON_DEPTH`] levels in a kept
//! resource): some paths re-read a field's text with a fresh deserializer, where serde's own recursion
//! limit starts again from zero, so without a bound a hostile value would overflow the stack.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::depth::{MAX_JSON_DEPTH, MAX_NESTING, Scan, TooDeep, scan_kept};
use super::resource::{Origin, Resource};
use crate::cds_hooks::excerpt;

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

/// Which prefetch keys are read into resources. CDS Hooks has a service use only the prefetch it
/// declared, so the keys of a service with `[prefetch]` are its declared ones: any other key is
/// checked to be JSON and dropped, never materialised (on a large patient, most of the cost).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PrefetchReads {
    /// Every key (a service that declares no prefetch takes whatever is sent; tools read all).
    #[default]
    All,
    /// Only these keys.
    Only(Vec<String>),
}

impl PrefetchReads {
    /// Whether the answer under `key` is read.
    pub fn reads(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::Only(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// A request's `prefetch` as read: the answers of the keys read, and the names of the keys sent but
/// not read (sorted).
#[derive(Debug, Default)]
pub struct ReadPrefetch {
    pub answers: Prefetch,
    pub ignored: Vec<String>,
}

/// Why one answer could not be read. Positions and limits only: serde's own messages can quote the
/// offending value, which is patient data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    TooDeep(#[from] TooDeep),
    #[error("is not a FHIR resource, a Bundle or null (line {line}, column {column})")]
    Invalid { line: usize, column: usize },
}

impl PrefetchValue {
    /// Reads one answer from JSON text.
    pub fn from_json(text: &str, origin: Origin) -> Result<Self, ReadError> {
        let refused = Cell::new(None);
        let seed = ItemSeed {
            origin,
            enclosing: 0,
            refused: &refused,
        };
        read_item(text, seed).map_err(|e| match refused.get() {
            Some(too_deep) => ReadError::TooDeep(too_deep),
            None => ReadError::Invalid {
                line: e.line(),
                column: e.column(),
            },
        })
    }

    /// An OperationOutcome in place of data: the EHR's prefetch failed, so the key is not provided.
    pub fn is_operation_outcome(&self) -> bool {
        matches!(self, Self::Resource(r) if r.resource_type() == "OperationOutcome")
    }
}

/// Reads `text` as one item with its own deserializer (a fresh recursion budget for serde: the
/// caller's `seed` carries the nesting instead).
fn read_item(text: &str, seed: ItemSeed<'_>) -> Result<PrefetchValue, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
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
struct ItemSeed<'r> {
    origin: Origin,
    /// How many Bundles or wrappers enclose this item.
    enclosing: usize,
    /// Set when a limit refused the item, so the caller can say so (serde carries only text).
    refused: &'r Cell<Option<TooDeep>>,
}

impl<'r> ItemSeed<'r> {
    /// Refuses: records why, for the caller, and stops the read.
    fn refuse<E: de::Error>(self, why: TooDeep) -> E {
        self.refused.set(Some(why));
        E::custom(why)
    }

    /// The seed for what a Bundle or wrapper at this item holds, unless that nests too deeply.
    fn inner<E: de::Error>(self) -> Result<Self, E> {
        let enclosing = self.enclosing + 1;
        if enclosing > MAX_NESTING {
            return Err(self.refuse(TooDeep::Nesting));
        }
        Ok(Self { enclosing, ..self })
    }

    fn entries(self) -> EntriesSeed<'r> {
        EntriesSeed { item: self }
    }
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_> {
    type Value = PrefetchValue;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_> {
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
                entries = Some(map.next_value_seed(self.inner()?.entries())?);
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
                            let entries = self.inner()?.entries();
                            let mut de = serde_json::Deserializer::from_str(raw.get());
                            entries
                                .deserialize(&mut de)
                                .map_err(|_| self.relay("`entry` must be an array"))?
                        }
                        None => Vec::new(),
                    },
                };
                Ok(PrefetchValue::Bundle(resources))
            }
            Some(_) => {
                // serde skipped the fields as text, at any depth: what is kept is bounded here (a
                // Bundle's own fields and a wrapper's `response` are dropped, so not checked).
                self.check_depth(fields.iter().map(|(_, raw)| *raw))?;
                Ok(PrefetchValue::Resource(Resource::from_fields(
                    &fields,
                    self.origin,
                )))
            }
            None => {
                // CDS Hooks 1.0 wrapped each answer as `{"response": {...}, "resource": {...}}`.
                if let Some((_, raw)) = fields.iter().find(|(k, _)| k == "resource") {
                    return read_item(raw.get(), self.inner()?)
                        .map_err(|_| self.relay("`resource` is not a FHIR resource"));
                }
                Err(de::Error::custom(
                    "is not a FHIR resource (no `resourceType`)",
                ))
            }
        }
    }
}

impl ItemSeed<'_> {
    /// Refuses fields (of a resource, counted from the resource itself) that nest too deeply.
    fn check_depth<'f, E: de::Error>(
        self,
        fields: impl Iterator<Item = &'f RawValue>,
    ) -> Result<(), E> {
        for raw in fields {
            let text = raw.get();
            match scan_kept(text, MAX_JSON_DEPTH - 1) {
                Scan::Plain => {}
                Scan::TooDeep => return Err(self.refuse(TooDeep::Json)),
                // Only suspicious text is parsed in full: the reader keeps fields as raw text,
                // which serde_json does not check for lone surrogates or numbers out of range.
                Scan::Suspect => {
                    if serde_json::from_str::<serde_json::Value>(text).is_err() {
                        return Err(self.refuse(TooDeep::Unrepresentable));
                    }
                }
            }
        }
        Ok(())
    }

    /// An error from a nested read: a refusal travels as such (already recorded), anything else
    /// becomes `message`.
    fn relay<E: de::Error>(self, message: &str) -> E {
        match self.refused.get() {
            Some(why) => E::custom(why),
            None => E::custom(message),
        }
    }
}

/// A Bundle's `entry` array: the resources of its entries, in order.
struct EntriesSeed<'r> {
    /// The seed for each entry's resource.
    item: ItemSeed<'r>,
}

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Vec<Resource>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = Vec<Resource>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of Bundle entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut resources = Vec::with_capacity(seq.size_hint().unwrap_or(16));
        while let Some(item) = seq.next_element_seed(EntrySeed { item: self.item })? {
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
struct EntrySeed<'r> {
    item: ItemSeed<'r>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = Option<PrefetchValue>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = Option<PrefetchValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Bundle entry")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut resource = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if key == "resource" {
                resource = Some(map.next_value_seed(self.item)?);
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(resource)
    }
}

/// The `prefetch` object of a hook request: key -> answer, every key read.
pub struct PrefetchField(pub Prefetch);

impl<'de> Deserialize<'de> for PrefetchField {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let read = PrefetchSeed {
            reads: &PrefetchReads::All,
        }
        .deserialize(deserializer)?;
        Ok(PrefetchField(read.answers))
    }
}

/// The `prefetch` object of a hook request, reading the keys `reads` names and only validating the
/// others (as JSON, in the same pass: nothing of them is kept).
pub struct PrefetchSeed<'r> {
    pub reads: &'r PrefetchReads,
}

impl<'de> DeserializeSeed<'de> for PrefetchSeed<'_> {
    type Value = ReadPrefetch;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PrefetchSeed<'_> {
    type Value = ReadPrefetch;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(ReadPrefetch::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut read = ReadPrefetch::default();
        while let Some(key) = map.next_key::<String>()? {
            if !self.reads.reads(&key) {
                // Checked as JSON (syntax, UTF-8) and dropped: serde skips it without recursing.
                // (The request reader adds where the error is.)
                map.next_value::<&'de RawValue>().map_err(|_| {
                    de::Error::custom(format_args!(
                        "`prefetch.{}` is not valid JSON",
                        excerpt(&key)
                    ))
                })?;
                read.ignored.push(key);
                continue;
            }
            let refused = Cell::new(None);
            let seed = ItemSeed {
                origin: Origin::Prefetch,
                enclosing: 0,
                refused: &refused,
            };
            // The key is the caller's: only a bounded, printable prefix goes into a message.
            let value = map.next_value_seed(seed).map_err(|_| {
                de::Error::custom(match refused.get() {
                    Some(why) => why.at(format_args!("prefetch.{}", excerpt(&key))),
                    None => format!(
                        "`prefetch.{}` must be a FHIR resource (JSON object with a `resourceType`) or null",
                        excerpt(&key)
                    ),
                })
            })?;
            read.answers.insert(key, value);
        }
        read.ignored.sort_unstable();
        read.ignored.dedup();
        Ok(read)
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

    /// `levels` Bundles, each the only entry of the one around it, the innermost holding a
    /// Patient. `entry_first` writes `entry` before `resourceType` (the re-read path).
    fn nested_bundles(levels: usize, entry_first: bool) -> String {
        let mut text =
            r#"{"resourceType":"Patient","id":"p1","birthDate":"1958-03-14"}"#.to_owned();
        for _ in 0..levels {
            text = if entry_first {
                format!(
                    r#"{{"entry":[{{"resource":{text}}}],"resourceType":"Bundle","type":"collection"}}"#
                )
            } else {
                format!(
                    r#"{{"resourceType":"Bundle","type":"collection","entry":[{{"resource":{text}}}]}}"#
                )
            };
        }
        text
    }

    /// `levels` CDS Hooks 1.0 wrappers around a Patient.
    fn nested_wrappers(levels: usize) -> String {
        let mut text = r#"{"resourceType":"Patient","id":"p1"}"#.to_owned();
        for _ in 0..levels {
            text = format!(r#"{{"response":{{"status":"200 OK"}},"resource":{text}}}"#);
        }
        text
    }

    fn read_one(text: &str) -> Result<PrefetchValue, ReadError> {
        PrefetchValue::from_json(text, Origin::Prefetch)
    }

    #[test]
    fn bundles_and_wrappers_nest_up_to_the_limit_and_no_deeper() {
        for entry_first in [false, true] {
            let ok = read_one(&nested_bundles(MAX_NESTING, entry_first));
            assert!(
                matches!(&ok, Ok(PrefetchValue::Bundle(r)) if r.len() == 1),
                "{entry_first}: {ok:?}"
            );
            let refused = read_one(&nested_bundles(MAX_NESTING + 1, entry_first));
            assert_eq!(refused.err(), Some(ReadError::TooDeep(TooDeep::Nesting)));
        }
        let ok = read_one(&nested_wrappers(MAX_NESTING));
        assert!(matches!(ok, Ok(PrefetchValue::Resource(_))), "{ok:?}");
        let refused = read_one(&nested_wrappers(MAX_NESTING + 1));
        assert_eq!(refused.err(), Some(ReadError::TooDeep(TooDeep::Nesting)));
    }

    #[test]
    fn hostile_nesting_is_refused_without_recursing() {
        // The reported crashes: ~4,000 wrappers in 52 KB, ~3,000 Bundles with `entry` first.
        let wrappers = "{\"resource\":".repeat(4_000) + "null" + "}".repeat(4_000).as_str();
        assert!(wrappers.len() > 50_000);
        assert_eq!(
            read_one(&wrappers).err(),
            Some(ReadError::TooDeep(TooDeep::Nesting))
        );
        assert_eq!(
            read_one(&nested_bundles(3_000, true)).err(),
            Some(ReadError::TooDeep(TooDeep::Nesting))
        );
        assert_eq!(
            read_one(&nested_bundles(3_000, false)).err(),
            Some(ReadError::TooDeep(TooDeep::Nesting))
        );
        let mixed = (0..3_000).fold(r#"{"resourceType":"Patient"}"#.to_owned(), |inner, i| {
            if i % 2 == 0 {
                format!(r#"{{"resource":{inner}}}"#)
            } else {
                format!(r#"{{"entry":[{{"resource":{inner}}}],"resourceType":"Bundle"}}"#)
            }
        });
        assert_eq!(
            read_one(&mixed).err(),
            Some(ReadError::TooDeep(TooDeep::Nesting))
        );
    }

    #[test]
    fn kept_json_is_bounded_in_depth() {
        let deep = |levels: usize| "[".repeat(levels) + "]".repeat(levels).as_str();
        // The resource is level 1: a field may open MAX_JSON_DEPTH - 1 more.
        let at_limit = format!(
            r#"{{"resourceType":"Observation","id":"o1","extension":{}}}"#,
            deep(MAX_JSON_DEPTH - 1)
        );
        let ok = read_one(&at_limit);
        let Ok(PrefetchValue::Resource(resource)) = &ok else {
            panic!("{ok:?}")
        };
        assert!(resource.get("extension").is_some_and(|v| v.is_array()));
        for levels in [MAX_JSON_DEPTH, 100_000] {
            let refused = format!(
                r#"{{"resourceType":"Observation","id":"o1","valueString":"[[[","extension":{}}}"#,
                deep(levels)
            );
            assert_eq!(
                read_one(&refused).err(),
                Some(ReadError::TooDeep(TooDeep::Json))
            );
            let in_bundle =
                format!(r#"{{"resourceType":"Bundle","entry":[{{"resource":{refused}}}]}}"#);
            assert_eq!(
                read_one(&in_bundle).err(),
                Some(ReadError::TooDeep(TooDeep::Json))
            );
            // A Bundle's own fields are dropped, not kept: skipped at any depth.
            let bundle_field = format!(r#"{{"resourceType":"Bundle","meta":{}}}"#, deep(levels));
            assert!(matches!(
                read_one(&bundle_field),
                Ok(PrefetchValue::Bundle(r)) if r.is_empty()
            ));
        }
    }

    #[test]
    fn prefetch_refusals_name_the_key_the_limit_and_only_a_prefix_of_the_key() {
        let long_key = "k".repeat(70_000);
        let body = format!(
            r#"{{"{long_key}": {}}}"#,
            nested_bundles(MAX_NESTING + 1, true)
        );
        let err = serde_json::from_str::<PrefetchField>(&body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("`prefetch.kkkk")
                && err.contains("…` nests Bundles or resource wrappers deeper than 16 levels"),
            "{}",
            err.get(..200).unwrap_or(&err)
        );
        assert!(err.len() < 300, "{}", err.len());
        let body = format!(
            r#"{{"opioids": {{"resourceType":"Condition","note":{}}}}}"#,
            "[".repeat(100_000) + "]".repeat(100_000).as_str()
        );
        let err = serde_json::from_str::<PrefetchField>(&body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("`prefetch.opioids` nests JSON deeper than 64 levels"),
            "{err}"
        );
    }
}
