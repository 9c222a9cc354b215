//! Value sets and code systems shipped with the rule packs: FHIR R4 `ValueSet` (expansion
//! `contains`, or `compose.include` with explicit concepts) and `CodeSystem` JSON files, loaded and
//! indexed once at start-up. Membership is two hash look-ups.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Subsumption, TerminologyError, TerminologySource};

/// Folders below the rules directory whose JSON files are terminology resources.
pub const TERMINOLOGY_DIRS: &[&str] = &["valuesets", "codesystems"];

/// One value set: system → codes.
#[derive(Debug, Default)]
pub(super) struct ValueSetIndex {
    codes: HashMap<Box<str>, HashSet<Box<str>>>,
}

impl ValueSetIndex {
    pub(super) fn contains(&self, system: &str, code: &str) -> bool {
        self.codes
            .get(system)
            .is_some_and(|codes| codes.contains(code))
    }

    pub(super) fn insert(&mut self, system: &str, code: &str) -> bool {
        self.codes
            .entry(system.into())
            .or_default()
            .insert(code.into())
    }

    pub(super) fn len(&self) -> usize {
        self.codes.values().map(HashSet::len).sum()
    }

    /// Approximate heap held: entry overhead of std's SwissTable plus the strings.
    pub(super) fn approx_bytes(&self) -> usize {
        self.codes
            .iter()
            .map(|(system, codes)| system.len() + codes.iter().map(|c| c.len() + 24).sum::<usize>())
            .sum::<usize>()
            + 64
    }
}

/// One code system's concepts: display, and parents for subsumption.
#[derive(Debug, Default)]
struct CodeSystemIndex {
    parents: HashMap<Box<str>, Vec<Box<str>>>,
}

/// What start-up loaded, for the log and `cardinal check`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub files: usize,
    pub value_sets: usize,
    pub codes: usize,
    pub code_systems: usize,
    pub concepts: usize,
    /// Value sets without an expansion or explicit concepts (intensional only): not answerable
    /// locally.
    pub skipped: Vec<String>,
    pub elapsed: Duration,
    /// Approximate heap held by the indexes.
    pub approx_bytes: usize,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} value sets ({} codes), {} code systems ({} concepts) from {} files in {:.1} ms, ~{:.1} MiB",
            self.value_sets,
            self.codes,
            self.code_systems,
            self.concepts,
            self.files,
            self.elapsed.as_secs_f64() * 1000.0,
            self.approx_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}

/// Local value sets and code systems, by canonical URL (and `url|version`).
#[derive(Debug, Default)]
pub struct LocalTerminology {
    value_sets: HashMap<Box<str>, std::sync::Arc<ValueSetIndex>>,
    displays: HashMap<Box<str>, HashMap<Box<str>, Box<str>>>,
    code_systems: HashMap<Box<str>, CodeSystemIndex>,
    /// Value-set id (last URL segment) → canonical URL; `None` when two value sets share the id.
    ids: HashMap<Box<str>, Option<Box<str>>>,
    report: LoadReport,
}

impl LocalTerminology {
    /// Loads every `valuesets/` and `codesystems/` folder below `rules_dir`.
    pub fn load_rules_dir(rules_dir: &Path) -> Result<Self, Vec<TerminologyError>> {
        let mut files = Vec::new();
        find_terminology_files(rules_dir, false, &mut files);
        Self::load_files(&files)
    }

    /// Loads the given ValueSet / CodeSystem JSON files (other resource types are an error).
    pub fn load_files(files: &[PathBuf]) -> Result<Self, Vec<TerminologyError>> {
        let started = Instant::now();
        let mut this = Self::default();
        let mut errors = Vec::new();
        for path in files {
            if let Err(e) = this.load_file(path) {
                errors.push(e);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        this.report.files = files.len();
        this.report.elapsed = started.elapsed();
        this.report.approx_bytes = this.approx_bytes();
        Ok(this)
    }

    pub fn report(&self) -> &LoadReport {
        &self.report
    }

    /// The canonical URL of a value set shipped with the rules, by its id (`sickle-cell-diseases`).
    /// `Err` names the URLs when the id is ambiguous.
    pub fn url_of_id(&self, id: &str) -> Option<Result<&str, Vec<&str>>> {
        match self.ids.get(id)? {
            Some(url) => Some(Ok(url)),
            None => Some(Err(self
                .value_sets
                .keys()
                .map(|k| &**k)
                .filter(|u| !u.contains('|') && u.rsplit('/').next() == Some(id))
                .collect())),
        }
    }

    pub fn has_value_set(&self, url: &str) -> bool {
        self.value_sets.contains_key(url)
    }

    /// Canonical URLs of the loaded value sets.
    pub fn value_set_urls(&self) -> impl Iterator<Item = &str> {
        self.value_sets.keys().map(|k| &**k)
    }

    /// Membership in a loaded value set; `None` when the value set is not loaded.
    pub fn contains(&self, url: &str, system: &str, code: &str) -> Option<bool> {
        self.value_sets.get(url).map(|vs| vs.contains(system, code))
    }

    /// Number of codes in a loaded value set.
    pub fn value_set_size(&self, url: &str) -> Option<usize> {
        self.value_sets.get(url).map(|vs| vs.len())
    }

    pub fn display(&self, system: &str, code: &str) -> Option<&str> {
        self.displays.get(system)?.get(code).map(|d| &**d)
    }

    fn load_file(&mut self, path: &Path) -> Result<(), TerminologyError> {
        let fail = |message: String| TerminologyError::Load {
            path: path.display().to_string(),
            message,
        };
        let text = fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
        match json.get("resourceType").and_then(Value::as_str) {
            Some("ValueSet") => self.add_value_set(&json).map_err(fail),
            Some("CodeSystem") => self.add_code_system(&json).map_err(fail),
            Some("Bundle") => {
                for entry in json
                    .get("entry")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(resource) = entry.get("resource") {
                        match resource.get("resourceType").and_then(Value::as_str) {
                            Some("ValueSet") => self.add_value_set(resource).map_err(fail)?,
                            Some("CodeSystem") => self.add_code_system(resource).map_err(fail)?,
                            _ => {}
                        }
                    }
                }
                Ok(())
            }
            other => Err(fail(format!(
                "expected a ValueSet or CodeSystem, found {}",
                other.unwrap_or("no resourceType")
            ))),
        }
    }

    fn add_display(&mut self, system: &str, code: &str, display: Option<&str>) {
        if let Some(display) = display {
            self.displays
                .entry(system.into())
                .or_default()
                .entry(code.into())
                .or_insert_with(|| display.into());
        }
    }

    fn add_value_set(&mut self, json: &Value) -> Result<(), String> {
        let url = json
            .get("url")
            .and_then(Value::as_str)
            .ok_or("ValueSet has no `url`")?;
        let mut index = ValueSetIndex::default();
        let mut entries: Vec<(String, String, Option<String>)> = Vec::new();
        if let Some(contains) = json
            .pointer("/expansion/contains")
            .and_then(Value::as_array)
        {
            collect_contains(contains, &mut entries);
        } else if let Some(includes) = json.pointer("/compose/include").and_then(Value::as_array) {
            for include in includes {
                let Some(system) = include.get("system").and_then(Value::as_str) else {
                    continue;
                };
                let concepts = include.get("concept").and_then(Value::as_array);
                if concepts.is_none() || include.get("filter").is_some() {
                    // Intensional definitions need a terminology server to expand.
                    self.report.skipped.push(url.to_owned());
                    return Ok(());
                }
                for concept in concepts.into_iter().flatten() {
                    if let Some(code) = concept.get("code").and_then(Value::as_str) {
                        let display = concept.get("display").and_then(Value::as_str);
                        entries.push((system.into(), code.into(), display.map(Into::into)));
                    }
                }
            }
        }
        for (system, code, display) in &entries {
            index.insert(system, code);
            self.add_display(system, code, display.as_deref());
        }
        self.report.value_sets += 1;
        self.report.codes += index.len();
        let index = std::sync::Arc::new(index);
        if let Some(version) = json.get("version").and_then(Value::as_str) {
            self.value_sets
                .insert(format!("{url}|{version}").into(), index.clone());
        }
        if !self.value_sets.contains_key(url) {
            let id = url.rsplit('/').next().unwrap_or(url);
            self.ids
                .entry(id.into())
                .and_modify(|known| *known = None)
                .or_insert_with(|| Some(url.into()));
        }
        self.value_sets.insert(url.into(), index);
        Ok(())
    }

    fn add_code_system(&mut self, json: &Value) -> Result<(), String> {
        let url = json
            .get("url")
            .and_then(Value::as_str)
            .ok_or("CodeSystem has no `url`")?
            .to_owned();
        let mut concepts = Vec::new();
        if let Some(list) = json.get("concept").and_then(Value::as_array) {
            collect_concepts(list, None, &mut concepts);
        }
        let mut index = CodeSystemIndex::default();
        for (code, display, parent) in &concepts {
            self.add_display(&url, code, display.as_deref());
            let parents = index.parents.entry(code.as_str().into()).or_default();
            if let Some(parent) = parent {
                parents.push(parent.as_str().into());
            }
        }
        self.report.code_systems += 1;
        self.report.concepts += concepts.len();
        self.code_systems.insert(url.into(), index);
        Ok(())
    }

    /// Whether `ancestor` is `code` or one of its ancestors.
    fn is_ancestor(index: &CodeSystemIndex, ancestor: &str, code: &str) -> bool {
        let mut stack = vec![code];
        let mut seen = HashSet::new();
        while let Some(current) = stack.pop() {
            if current == ancestor {
                return true;
            }
            if !seen.insert(current) {
                continue;
            }
            if let Some(parents) = index.parents.get(current) {
                stack.extend(parents.iter().map(|p| &**p));
            }
        }
        false
    }

    fn approx_bytes(&self) -> usize {
        let set_entries: usize = self.value_sets.values().map(|vs| vs.approx_bytes()).sum();
        let displays: usize = self
            .displays
            .values()
            .flat_map(|m| m.iter())
            .map(|(c, d)| c.len() + d.len() + 40)
            .sum();
        set_entries + displays
    }
}

impl TerminologySource for LocalTerminology {
    fn name(&self) -> &'static str {
        "local"
    }

    fn validate_code(
        &self,
        url: &str,
        system: &str,
        code: &str,
        _deadline: Instant,
    ) -> Result<Option<bool>, TerminologyError> {
        Ok(self.contains(url, system, code))
    }

    fn lookup_display(
        &self,
        system: &str,
        code: &str,
        _deadline: Instant,
    ) -> Result<Option<String>, TerminologyError> {
        Ok(self.display(system, code).map(str::to_owned))
    }

    fn subsumes(
        &self,
        system: &str,
        a: &str,
        b: &str,
        _deadline: Instant,
    ) -> Result<Option<Subsumption>, TerminologyError> {
        let Some(index) = self.code_systems.get(system) else {
            return Ok(None);
        };
        Ok(Some(if a == b {
            Subsumption::Equivalent
        } else if Self::is_ancestor(index, a, b) {
            Subsumption::Subsumes
        } else if Self::is_ancestor(index, b, a) {
            Subsumption::SubsumedBy
        } else {
            Subsumption::NotSubsumed
        }))
    }
}

pub(super) fn collect_contains(
    contains: &[Value],
    out: &mut Vec<(String, String, Option<String>)>,
) {
    for item in contains {
        if let (Some(system), Some(code)) = (
            item.get("system").and_then(Value::as_str),
            item.get("code").and_then(Value::as_str),
        ) {
            let display = item.get("display").and_then(Value::as_str);
            out.push((system.into(), code.into(), display.map(Into::into)));
        }
        if let Some(nested) = item.get("contains").and_then(Value::as_array) {
            collect_contains(nested, out);
        }
    }
}

fn collect_concepts(
    list: &[Value],
    parent: Option<&str>,
    out: &mut Vec<(String, Option<String>, Option<String>)>,
) {
    for concept in list {
        let Some(code) = concept.get("code").and_then(Value::as_str) else {
            continue;
        };
        let display = concept.get("display").and_then(Value::as_str);
        out.push((code.into(), display.map(Into::into), parent.map(Into::into)));
        // A `parent` property also declares the hierarchy.
        for property in concept
            .get("property")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if property.get("code").and_then(Value::as_str) == Some("parent")
                && let Some(p) = property.get("valueCode").and_then(Value::as_str)
            {
                out.push((code.into(), None, Some(p.into())));
            }
        }
        if let Some(children) = concept.get("concept").and_then(Value::as_array) {
            collect_concepts(children, Some(code), out);
        }
    }
}

/// JSON files in `valuesets/` and `codesystems/` folders below `dir`, sorted.
fn find_terminology_files(dir: &Path, inside: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Hidden entries: `.git`, or the `..data` links of a Kubernetes ConfigMap volume.
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            let named = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| TERMINOLOGY_DIRS.contains(&n));
            find_terminology_files(&path, inside || named, out);
        } else if inside && path.extension().is_some_and(|x| x == "json") {
            out.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(json: Value) -> LocalTerminology {
        let mut t = LocalTerminology::default();
        match json.get("resourceType").and_then(Value::as_str) {
            Some("CodeSystem") => t.add_code_system(&json).unwrap_or_default(),
            _ => t.add_value_set(&json).unwrap_or_default(),
        }
        t
    }

    #[test]
    fn expansion_and_compose_are_indexed() {
        let t = loaded(serde_json::json!({
            "resourceType": "ValueSet", "url": "http://example.org/vs", "version": "2",
            "expansion": {"contains": [
                {"system": "http://loinc.org", "code": "4548-4", "display": "Hemoglobin A1c"},
                {"system": "http://loinc.org", "code": "x", "contains": [
                    {"system": "http://loinc.org", "code": "17856-6"}]}]}
        }));
        assert_eq!(
            t.contains("http://example.org/vs", "http://loinc.org", "4548-4"),
            Some(true)
        );
        assert_eq!(
            t.contains("http://example.org/vs|2", "http://loinc.org", "17856-6"),
            Some(true)
        );
        assert_eq!(
            t.contains("http://example.org/vs", "http://snomed.info/sct", "4548-4"),
            Some(false)
        );
        assert_eq!(
            t.contains("http://example.org/other", "http://loinc.org", "4548-4"),
            None
        );
        assert_eq!(
            t.display("http://loinc.org", "4548-4"),
            Some("Hemoglobin A1c")
        );

        let t = loaded(serde_json::json!({
            "resourceType": "ValueSet", "url": "http://example.org/c",
            "compose": {"include": [{"system": "http://snomed.info/sct",
                "concept": [{"code": "44054006", "display": "Diabetes mellitus type 2"}]}]}
        }));
        assert_eq!(
            t.contains("http://example.org/c", "http://snomed.info/sct", "44054006"),
            Some(true)
        );
    }

    #[test]
    fn nested_code_system_concepts_subsume() {
        let t = loaded(serde_json::json!({
            "resourceType": "CodeSystem", "url": "http://example.org/cs",
            "concept": [{"code": "a", "display": "A", "concept": [
                {"code": "b", "concept": [{"code": "c"}]}]}, {"code": "d"}]
        }));
        let later = Instant::now();
        let s = |a: &str, b: &str| {
            t.subsumes("http://example.org/cs", a, b, later)
                .ok()
                .flatten()
        };
        assert_eq!(s("a", "c"), Some(Subsumption::Subsumes));
        assert_eq!(s("c", "a"), Some(Subsumption::SubsumedBy));
        assert_eq!(s("b", "b"), Some(Subsumption::Equivalent));
        assert_eq!(s("d", "c"), Some(Subsumption::NotSubsumed));
        assert_eq!(t.display("http://example.org/cs", "a"), Some("A"));
    }
}
