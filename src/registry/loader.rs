//! Finds every `service.toml` below the rules directory and compiles its rules. All errors are
//! collected, so an informaticist sees every broken file at once.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::engine::{CompileError, DataTable, DataTables, RuleEngine, RuleSource};
use crate::prefetch::PrefetchPlan;

use super::manifest::Manifest;
use super::{CdsService, Registry};

pub const MANIFEST_FILE: &str = "service.toml";

/// Everything wrong with a rules directory, one `file:line:column: message` per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors(pub Vec<CompileError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

impl std::error::Error for LoadErrors {}

impl LoadErrors {
    /// The services the errors are in (their ids, or their folders when the manifest itself cannot
    /// be read), so an operator knows what a refused rule set would have changed.
    pub fn affected_services(&self) -> Vec<String> {
        let mut affected: Vec<String> = self.0.iter().filter_map(|e| service_of(&e.path)).collect();
        affected.sort();
        affected.dedup();
        affected
    }
}

/// The service a file belongs to: the id in the nearest `service.toml` above it.
fn service_of(path: &Path) -> Option<String> {
    let mut dir = if path.is_dir() { path } else { path.parent()? };
    loop {
        let manifest = dir.join(MANIFEST_FILE);
        if manifest.is_file() {
            let id = fs::read_to_string(&manifest)
                .ok()
                .and_then(|text| text.parse::<toml::Table>().ok())
                .and_then(|t| t.get("id").and_then(|v| v.as_str()).map(str::to_owned));
            return Some(id.unwrap_or_else(|| dir.display().to_string()));
        }
        dir = dir.parent()?;
    }
}

fn error(path: &Path, message: impl Into<String>) -> CompileError {
    CompileError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: message.into(),
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Hidden entries (`.git`, and the `..data` links of a Kubernetes ConfigMap volume) hold no services.
pub(crate) fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn find_manifests(dir: &Path, found: &mut Vec<PathBuf>, errors: &mut Vec<CompileError>) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            errors.push(error(dir, format!("cannot read directory: {e}")));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| !is_hidden(p)) {
        if path.is_dir() {
            find_manifests(&path, found, errors);
        } else if path.file_name().is_some_and(|n| n == MANIFEST_FILE) {
            found.push(path);
        }
    }
}

/// A rule or library file's text that replaces what is on disk (the playground's edited rule).
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Overlay<'_> {
    fn covers(&self, path: &Path) -> bool {
        lexical(self.path) == lexical(path)
    }
}

/// The file's text: the overlay's when it covers the file, else what is on disk.
fn read_source(
    path: &Path,
    overlay: Option<Overlay<'_>>,
    errors: &mut Vec<CompileError>,
) -> Option<String> {
    match overlay {
        Some(o) if o.covers(path) => Some(o.text.to_owned()),
        _ => read(path, errors),
    }
}

fn read(path: &Path, errors: &mut Vec<CompileError>) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) => {
            errors.push(error(path, format!("cannot read file: {e}")));
            None
        }
    }
}

/// The manifest and every problem in it. The manifest comes back even with problems (their
/// entries left out) so the rest of the service can still be checked; the service is not loaded.
fn parse_manifest(path: &Path, text: &str) -> (Option<Manifest>, Vec<CompileError>) {
    let (manifest, problems) = super::lenient::parse(text);
    let errors = problems
        .into_iter()
        .map(|(place, message)| CompileError {
            path: path.to_path_buf(),
            line: place.map(|p| p.0),
            column: place.map(|p| p.1),
            message,
        })
        .collect();
    (manifest, errors)
}

/// JSON data files already read, by path: packs share tables between services.
type DataCache = HashMap<PathBuf, Arc<DataTable>>;

fn load_data(
    dir: &Path,
    manifest_path: &Path,
    tables: &std::collections::BTreeMap<String, String>,
    cache: &mut DataCache,
    errors: &mut Vec<CompileError>,
) -> DataTables {
    let mut loaded = DataTables::new();
    for (name, file) in tables {
        let path = dir.join(file);
        let key = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(value) = cache.get(&key) {
            loaded.insert(name.clone(), value.clone());
            continue;
        }
        let Some(text) = read(&path, errors) else {
            continue;
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(value) => {
                let value = Arc::new(DataTable::new(value));
                cache.insert(key, value.clone());
                loaded.insert(name.clone(), value);
            }
            Err(e) => errors.push(CompileError {
                path: path.clone(),
                line: Some(e.line()),
                column: Some(e.column()),
                message: format!(
                    "data table `{name}` (named in {}): {e}",
                    manifest_path.display()
                ),
            }),
        }
    }
    loaded
}

/// Value-set URLs written as string literals in a rule or library file, with their positions.
fn value_set_literals(text: &str) -> Vec<(String, usize, usize)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("//") {
            continue;
        }
        let mut rest = line;
        let mut offset = 0;
        while let Some((_, after)) = rest.split_once("\"http") {
            let start = rest.len() - after.len() - "\"http".len();
            let Some((tail, next)) = after.split_once('"') else {
                break;
            };
            let literal = format!("http{tail}");
            if literal.contains("/ValueSet/") {
                found.push((literal, n + 1, offset + start + 2));
            }
            offset += rest.len() - next.len();
            rest = next;
        }
    }
    found
}

/// Checks that every value set a file names can be answered; returns the URLs.
fn check_value_sets(
    engine: &RuleEngine,
    path: &Path,
    text: &str,
    errors: &mut Vec<CompileError>,
) -> Vec<String> {
    let mut urls = Vec::new();
    for (url, line, column) in value_set_literals(text) {
        if !engine.terminology().knows_value_set(&url) {
            errors.push(CompileError {
                path: path.to_path_buf(),
                line: Some(line),
                column: Some(column),
                message: format!(
                    "value set `{url}` is not in any `valuesets/` folder of the rules and no terminology server is configured"
                ),
            });
        }
        urls.push(url);
    }
    urls
}

fn load_service(
    engine: &RuleEngine,
    manifest_path: &Path,
    data_cache: &mut DataCache,
    overlay: Option<Overlay<'_>>,
    errors: &mut Vec<CompileError>,
) -> Option<CdsService> {
    let dir = manifest_path.parent()?.to_path_buf();
    let text = read(manifest_path, errors)?;
    let before = errors.len();
    let (manifest, problems) = parse_manifest(manifest_path, &text);
    errors.extend(problems);
    let manifest = manifest?;
    let data = load_data(&dir, manifest_path, &manifest.data, data_cache, errors);
    let mut value_sets = Vec::new();
    let prefetch = match PrefetchPlan::compile(
        &manifest.hook,
        &manifest.prefetch,
        &manifest.optional_prefetch,
    ) {
        Ok(plan) => plan,
        Err(plan_errors) => {
            for e in plan_errors {
                let (line, column) = line_col(&text, e.offset_in(&text));
                errors.push(CompileError {
                    path: manifest_path.to_path_buf(),
                    line: Some(line),
                    column: Some(column),
                    message: e.message,
                });
            }
            PrefetchPlan::default()
        }
    };
    // Library files are concatenated in order, so later ones may use earlier ones' functions.
    let mut library_source = String::new();
    let mut library_path = manifest_path.to_path_buf();
    let mut library_files = Vec::new();
    for include in &manifest.include {
        let path = dir.join(include);
        if let Some(text) = read_source(&path, overlay, errors) {
            value_sets.extend(check_value_sets(engine, &path, &text, errors));
            match engine.compile_library(&path, &text) {
                Ok(_) => {
                    library_files.push((path.clone(), library_source.matches('\n').count() + 1));
                    library_source.push_str(&text);
                    library_source.push('\n');
                    library_path = path;
                }
                Err(e) => errors.push(e),
            }
        }
    }
    let library = if library_source.is_empty() {
        None
    } else {
        match engine.compile_library(&library_path, &library_source) {
            Ok(ast) => Some(ast),
            Err(e) => {
                errors.push(e);
                None
            }
        }
    };
    let mut rule_files: Vec<PathBuf> = if manifest.rule_files.is_empty() {
        fs::read_dir(&dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
            .filter(|p| !manifest.include.iter().any(|inc| dir.join(inc) == *p))
            .collect()
    } else {
        manifest.rule_files.iter().map(|f| dir.join(f)).collect()
    };
    rule_files.sort();
    if rule_files.is_empty() {
        errors.push(error(manifest_path, "service has no `.rhai` rule files"));
    }
    for id in manifest.rules.keys() {
        if !rule_files
            .iter()
            .any(|p| p.file_stem().is_some_and(|s| s == id.as_str()))
        {
            errors.push(error(
                manifest_path,
                format!("`[rules.{id}]` names no rule file `{id}.rhai`"),
            ));
        }
    }
    let mut rules = Vec::new();
    for path in rule_files {
        let Some(source) = read_source(&path, overlay, errors) else {
            continue;
        };
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        value_sets.extend(check_value_sets(engine, &path, &source, errors));
        let settings = manifest.rules.get(&id).cloned().unwrap_or_default();
        if settings.disabled {
            continue;
        }
        let rule = RuleSource {
            version: settings.version.unwrap_or_else(|| manifest.version.clone()),
            mode: settings.mode.unwrap_or(manifest.mode).rule_mode(),
            id,
            path,
            source,
            library: library.clone(),
            library_files: library_files.clone(),
        };
        match engine.compile(&rule) {
            Ok(compiled) => rules.push(compiled),
            Err(errs) => errors.extend(errs),
        }
    }
    let candidates = load_candidates(
        engine,
        &dir,
        manifest_path,
        &manifest,
        &rules,
        library.as_ref(),
        &library_files,
        &mut value_sets,
        overlay,
        errors,
    );
    value_sets.sort();
    value_sets.dedup();
    (errors.len() == before).then_some(CdsService {
        manifest,
        rules,
        candidates,
        dir,
        data: Arc::new(data),
        value_sets,
        prefetch,
    })
}

/// The folder of a service's candidate rule versions.
pub const CANDIDATES_DIR: &str = "candidates";

/// Compiles `candidates/<rule id>.rhai`: each must name an active rule of the service and carry its
/// own version (`[candidates.<rule id>] version`).
#[allow(clippy::too_many_arguments)]
fn load_candidates(
    engine: &RuleEngine,
    dir: &Path,
    manifest_path: &Path,
    manifest: &Manifest,
    rules: &[crate::engine::CompiledRule],
    library: Option<&Arc<rhai::AST>>,
    library_files: &[(PathBuf, usize)],
    value_sets: &mut Vec<String>,
    overlay: Option<Overlay<'_>>,
    errors: &mut Vec<CompileError>,
) -> Vec<crate::engine::CompiledRule> {
    let candidates_dir = dir.join(CANDIDATES_DIR);
    let mut files: Vec<PathBuf> = match fs::read_dir(&candidates_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    for id in manifest.candidates.keys() {
        if !files.iter().any(|p| stem(p) == *id) {
            errors.push(error(
                manifest_path,
                format!("`[candidates.{id}]` names no file `{CANDIDATES_DIR}/{id}.rhai`"),
            ));
        }
    }
    let mut compiled = Vec::new();
    for path in files {
        let id = stem(&path);
        if !rules.iter().any(|r| r.id == id) {
            errors.push(error(
                &path,
                format!(
                    "candidate `{id}` has no active rule `{id}` in this service to be compared with"
                ),
            ));
            continue;
        }
        let Some(spec) = manifest.candidates.get(&id) else {
            errors.push(error(
                &path,
                format!(
                    "candidate `{id}` needs a version of its own: add `[candidates.{id}]` with `version = \"...\"` to {}",
                    manifest_path.display()
                ),
            ));
            continue;
        };
        let Some(source) = read_source(&path, overlay, errors) else {
            continue;
        };
        value_sets.extend(check_value_sets(engine, &path, &source, errors));
        let rule = RuleSource {
            id,
            version: spec.version.clone(),
            mode: crate::engine::RuleMode::Candidate,
            path,
            source,
            library: library.cloned(),
            library_files: library_files.to_vec(),
        };
        match engine.compile(&rule) {
            Ok(rule) => compiled.push(rule),
            Err(errs) => errors.extend(errs),
        }
    }
    compiled
}

/// `path` with `.` and `..` resolved in the text (`rules/a/../lib/x.rhai` is `rules/lib/x.rhai`),
/// without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Reports name files relative to the rules directory, never with the server's own paths.
fn name_files(dir: &Path, service: &mut CdsService) {
    let root = lexical(dir);
    let relative = |path: &Path| {
        let path = lexical(path);
        path.strip_prefix(&root)
            .ok()
            .or_else(|| path.file_name().map(Path::new))
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/")
    };
    for rule in service
        .rules
        .iter_mut()
        .chain(service.candidates.iter_mut())
    {
        rule.file = relative(&rule.path);
        let files: Vec<(String, usize)> = rule
            .library_files
            .iter()
            .map(|(f, line)| (relative(Path::new(f)), *line))
            .collect();
        rule.library_files = files;
    }
}

/// Loads the one service whose manifest is `manifest_path` (below the rules directory `dir`), with
/// `overlay`'s text in place of one of its files: the playground compiles an edited rule this way,
/// beside the serving set, as a reload would.
pub fn load_service_with(
    dir: &Path,
    manifest_path: &Path,
    engine: &RuleEngine,
    overlay: Overlay<'_>,
) -> Result<CdsService, LoadErrors> {
    let mut errors = Vec::new();
    let loaded = load_service(
        engine,
        manifest_path,
        &mut DataCache::new(),
        Some(overlay),
        &mut errors,
    );
    match loaded {
        Some(mut service) if errors.is_empty() => {
            name_files(dir, &mut service);
            Ok(service)
        }
        _ => Err(LoadErrors(errors)),
    }
}

/// Loads every service below `dir`. Fails with every error found when any file is broken.
pub fn load(dir: &Path, engine: &RuleEngine) -> Result<Registry, LoadErrors> {
    let mut errors = Vec::new();
    let mut manifests = Vec::new();
    find_manifests(dir, &mut manifests, &mut errors);
    let mut services = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    let mut data_cache = DataCache::new();
    for path in manifests {
        if let Some(service) = load_service(engine, &path, &mut data_cache, None, &mut errors) {
            if let Some(first) = seen.get(service.id()) {
                errors.push(error(
                    &path,
                    format!(
                        "service id `{}` is already used by {}",
                        service.id(),
                        first.display()
                    ),
                ));
                continue;
            }
            seen.insert(service.id().to_owned(), path);
            services.push(service);
        }
    }
    for service in &mut services {
        name_files(dir, service);
    }
    if errors.is_empty() {
        Ok(Registry::new(services))
    } else {
        Err(LoadErrors(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::line_col;

    #[test]
    fn value_set_literals_are_found_with_positions() {
        let text = "// \"http://x/ValueSet/commented\"\nconst A = \"http://x/ValueSet/a\"; let b = \"http://x/other\";\nin_valueset(c, \"https://y/ValueSet/b|2\")";
        let found = super::value_set_literals(text);
        assert_eq!(
            found,
            vec![
                ("http://x/ValueSet/a".to_owned(), 2, 12),
                ("https://y/ValueSet/b|2".to_owned(), 3, 17)
            ]
        );
    }

    #[test]
    fn hidden_folders_are_skipped() -> Result<(), Box<dyn std::error::Error>> {
        // A ConfigMap volume: the files, plus the same files again under `..data` and a timestamped
        // hidden folder. Each service must be found once.
        let dir = tempfile::tempdir()?;
        for sub in ["greeting", "..data/greeting", "..2026_11_25/greeting"] {
            let d = dir.path().join(sub);
            std::fs::create_dir_all(&d)?;
            std::fs::write(
                d.join("service.toml"),
                "id = \"g\"\nhook = \"patient-view\"\ndescription = \"d\"\nversion = \"1\"\n",
            )?;
            std::fs::write(
                d.join("hello.rhai"),
                "card(#{summary: \"hi\", indicator: \"info\"});",
            )?;
        }
        let engine = crate::engine::RuleEngine::new(Default::default());
        let registry = super::load(dir.path(), &engine).map_err(|e| e.to_string())?;
        assert_eq!(registry.len(), 1);
        Ok(())
    }

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
