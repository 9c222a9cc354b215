//! Where the population comes from: FHIR R4 Bundles (one patient per file, gzip or not, a file or a
//! folder of them — Synthea writes these) and Bulk FHIR NDJSON exports (one resource type per file,
//! as `$export` writes them). Bundles stream one file at a time; an NDJSON export is grouped by
//! patient in memory (only the patients of this shard), so large exports are run in shards.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::fhir::{Origin, PrefetchValue};

use super::record::{PatientRecord, reference_map, rewrite_references};

/// A patient's data that could not be used: which file, and what was wrong (never the data).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct InputError {
    pub source: String,
    pub message: String,
}

/// `--shard i/n`: this run takes the patients whose stable hash falls in slot `i` of `n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ALL: Self = Self { index: 1, count: 1 };

    /// `i/n` with 1 ≤ i ≤ n.
    pub fn parse(text: &str) -> Option<Self> {
        let (i, n) = text.split_once('/')?;
        let (index, count) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
        (count >= 1 && (1..=count).contains(&index)).then_some(Self { index, count })
    }

    /// Whether the item named `key` (a file name, a patient id) belongs to this shard. The hash is
    /// stable across machines and runs, so shards partition the population exactly.
    pub fn takes(&self, key: &str) -> bool {
        // FNV-1a, 64 bit.
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        hash % u64::from(self.count) == u64::from(self.index - 1)
    }
}

/// The population to simulate, as found on disk.
#[derive(Debug, Default)]
pub struct Inputs {
    /// Bundle files of this shard, in path order.
    pub bundles: Vec<PathBuf>,
    /// NDJSON files (all of them: patients are sharded after grouping).
    pub ndjson: Vec<PathBuf>,
}

fn kind(path: &Path) -> Option<bool> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    if name.ends_with(".ndjson") || name.ends_with(".ndjson.gz") {
        Some(true)
    } else if name.ends_with(".json") || name.ends_with(".json.gz") {
        Some(false)
    } else {
        None
    }
}

/// The Bundle and NDJSON files at `path` (a file, or a folder and its sub-folders).
pub fn discover(path: &Path, shard: Shard) -> std::io::Result<Inputs> {
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, &mut files)?;
    } else {
        // Opening it now reports a missing file as such.
        File::open(path)?;
        files.push(path.to_path_buf());
    }
    files.sort();
    let mut inputs = Inputs::default();
    for file in files {
        match kind(&file) {
            Some(true) => inputs.ndjson.push(file),
            Some(false) => {
                let name = file
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                if shard.takes(&name) {
                    inputs.bundles.push(file);
                }
            }
            None => {}
        }
    }
    Ok(inputs)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

fn open(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"))
    {
        Ok(Box::new(flate2::read::GzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

fn source_name(path: &Path) -> String {
    path.display().to_string()
}

/// The skeleton of a Bundle: enough to map every `fullUrl` to `Type/id`, read without building the
/// resources (serde skips the rest).
#[derive(serde::Deserialize)]
struct Skeleton {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    #[serde(default)]
    entry: Vec<EntrySkeleton>,
}

#[derive(serde::Deserialize)]
struct EntrySkeleton {
    #[serde(rename = "fullUrl")]
    full_url: Option<String>,
    resource: Option<ResourceSkeleton>,
}

#[derive(serde::Deserialize)]
struct ResourceSkeleton {
    #[serde(rename = "resourceType")]
    resource_type: Option<String>,
    id: Option<String>,
}

/// Replaces every `"urn:uuid:…"` string the map knows with its `Type/id`, in one pass over the text.
fn rewrite_urn_references(text: &str, map: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = memchr::memmem::find(rest.as_bytes(), b"\"urn:uuid:") {
        let (before, from) = rest.split_at(at + 1);
        out.push_str(before);
        match from.find('"') {
            Some(end) => {
                let (key, after) = from.split_at(end);
                out.push_str(map.get(key).map_or(key, String::as_str));
                rest = after;
            }
            None => {
                rest = from;
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One Bundle file as one patient, as of `at`. Read in three light passes — its skeleton, the
/// reference rewrite, Cardinal's one-pass FHIR reader — rather than as a JSON tree: patients can be
/// megabytes, and reading them is most of a simulation's work.
pub fn read_bundle(path: &Path, at: DateTime<Utc>) -> Result<PatientRecord, InputError> {
    let error = |message: String| InputError {
        source: source_name(path),
        message,
    };
    let mut text = String::new();
    open(path)
        .and_then(|mut r| r.read_to_string(&mut text))
        .map_err(|e| error(format!("cannot read: {e}")))?;
    bundle_from_text(&source_name(path), &text, at)
}

/// A Bundle's text as one patient, as of `at`; `source` names it in errors.
pub fn bundle_from_text(
    source: &str,
    text: &str,
    at: DateTime<Utc>,
) -> Result<PatientRecord, InputError> {
    let error = |message: String| InputError {
        source: source.to_owned(),
        message,
    };
    let skeleton: Skeleton = serde_json::from_str(text).map_err(|e| {
        let what = if e.is_data() {
            "not a FHIR Bundle"
        } else {
            "not JSON"
        };
        error(format!("{what} (line {}, column {})", e.line(), e.column()))
    })?;
    if skeleton.resource_type.as_deref() != Some("Bundle") {
        return Err(error("not a FHIR Bundle".into()));
    }
    let mut map = HashMap::new();
    for entry in skeleton.entry {
        let Some(ResourceSkeleton {
            resource_type: Some(ty),
            id: Some(id),
        }) = entry.resource
        else {
            continue;
        };
        let local = format!("{ty}/{id}");
        if let Some(url) = entry.full_url.filter(|u| u.starts_with("urn:uuid:")) {
            map.insert(url, local.clone());
        }
        map.insert(format!("urn:uuid:{id}"), local);
    }
    let text = rewrite_urn_references(text, &map);
    let resources = match PrefetchValue::from_json(&text, Origin::Prefetch) {
        Ok(PrefetchValue::Bundle(resources)) => resources,
        Ok(_) => return Err(error("not a FHIR Bundle".into())),
        Err(e) => return Err(error(format!("cannot be read: {e}"))),
    };
    PatientRecord::from_resources(source.to_owned(), resources, at)
        .map_err(|e| error(e.to_string()))
}

/// The patient a resource belongs to (`subject`, `patient` or `beneficiary` reference).
fn owner(resource: &Value) -> Option<String> {
    ["subject", "patient", "beneficiary"]
        .iter()
        .find_map(|field| {
            resource
                .get(*field)
                .and_then(|r| r.get("reference"))
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("Patient/"))
                .map(str::to_owned)
        })
}

/// Reads an NDJSON export and groups it by patient: the patients of this shard, each with their
/// resources and the unowned resources theirs reference (e.g. Medication). Unreadable lines are
/// reported and skipped.
pub fn read_ndjson(
    files: &[PathBuf],
    shard: Shard,
    at: DateTime<Utc>,
) -> (Vec<PatientRecord>, Vec<InputError>) {
    let mut errors = Vec::new();
    let mut by_patient: BTreeMap<String, (String, Vec<Value>)> = BTreeMap::new();
    let mut shared: HashMap<String, Value> = HashMap::new();
    for path in files {
        let reader = match open(path) {
            Ok(r) => BufReader::new(r),
            Err(e) => {
                errors.push(InputError {
                    source: source_name(path),
                    message: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        for (n, line) in reader.lines().enumerate() {
            let source = format!("{}:{}", source_name(path), n + 1);
            let line = match line {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => l,
                Err(e) => {
                    errors.push(InputError {
                        source,
                        message: format!("cannot read: {e}"),
                    });
                    break;
                }
            };
            let Ok(resource) = serde_json::from_str::<Value>(&line) else {
                errors.push(InputError {
                    source,
                    message: "not a JSON resource".into(),
                });
                continue;
            };
            let ty = resource
                .get("resourceType")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let id = resource
                .get("id")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let patient = if ty == "Patient" {
                id.clone()
            } else {
                owner(&resource)
            };
            match patient {
                Some(patient) if shard.takes(&patient) => {
                    let entry = by_patient
                        .entry(patient)
                        .or_insert_with(|| (source_name(path), Vec::new()));
                    if ty == "Patient" {
                        entry.0 = source;
                    }
                    entry.1.push(resource);
                }
                Some(_) => {}
                None => {
                    if let Some(id) = id {
                        shared.insert(format!("{ty}/{id}"), resource);
                    }
                }
            }
        }
    }
    let mut patients = Vec::new();
    for (_, (source, mut resources)) in by_patient {
        let mut referenced: Vec<Value> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for resource in &resources {
            collect_references(resource, &mut |reference| {
                if let Some(found) = shared.get(reference)
                    && seen.insert(reference.to_owned())
                {
                    referenced.push(found.clone());
                }
            });
        }
        resources.extend(referenced);
        let with_urls: Vec<(Option<String>, Value)> =
            resources.into_iter().map(|r| (None, r)).collect();
        let map = reference_map(&with_urls);
        let resources = with_urls
            .into_iter()
            .map(|(_, mut r)| {
                rewrite_references(&mut r, &map);
                r
            })
            .collect();
        match PatientRecord::new(source.clone(), resources, at) {
            Ok(record) => patients.push(record),
            Err(e) => errors.push(InputError {
                source,
                message: e.to_string(),
            }),
        }
    }
    (patients, errors)
}

fn collect_references(value: &Value, found: &mut impl FnMut(&str)) {
    match value {
        Value::Object(object) => {
            for (key, item) in object {
                match item {
                    Value::String(text) if key == "reference" => found(text),
                    other => collect_references(other, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_references(v, found)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::Shard;
    use proptest::prelude::*;

    proptest! {
        // Any text, any reference map: the rewrite never panics, and changes nothing it does not know.
        #[test]
        fn urn_rewrite_is_total(text in ".*", id in "[a-z0-9-]{0,8}") {
            let empty = std::collections::HashMap::new();
            prop_assert_eq!(super::rewrite_urn_references(&text, &empty), text.clone());
            let map = std::collections::HashMap::from([(format!("urn:uuid:{id}"), "Patient/p".to_owned())]);
            let rewritten = super::rewrite_urn_references(&text, &map);
            let quoted = format!("\"urn:uuid:{id}\"");
            prop_assert!(!rewritten.contains(&quoted));
        }

        // Any bytes as a patient file: a clear error or a patient, never a panic.
        #[test]
        fn any_file_reads_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("patient.json");
            std::fs::write(&path, &bytes).unwrap();
            let _ = super::read_bundle(&path, chrono::Utc::now());
        }
    }

    #[test]
    fn shards_partition_the_keys() {
        assert_eq!(Shard::parse("2/3"), Some(Shard { index: 2, count: 3 }));
        assert_eq!(Shard::parse("0/3"), None);
        assert_eq!(Shard::parse("4/3"), None);
        let shards: Vec<Shard> = (1..=3).map(|i| Shard { index: i, count: 3 }).collect();
        for key in ["a", "b", "patient-17", "Aaron697_Brekke496.json.gz"] {
            assert_eq!(shards.iter().filter(|s| s.takes(key)).count(), 1, "{key}");
            assert!(Shard::ALL.takes(key));
        }
    }
}
