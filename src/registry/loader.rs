//! Finds every `service.toml` below the rules directory and compiles its rules. All errors are
//! collected, so an informaticist sees every broken file at once.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::engine::{CompileError, RuleEngine, RuleSource};
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

fn error(path: &Path, message: impl Into<String>) -> CompileError {
    CompileError {
        path: path.to_path_buf(),
        line: None,
        column: None,
        message: message.into(),
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
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
    for path in paths {
        if path.is_dir() {
            find_manifests(&path, found, errors);
        } else if path.file_name().is_some_and(|n| n == MANIFEST_FILE) {
            found.push(path);
        }
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

fn parse_manifest(path: &Path, text: &str) -> Result<Manifest, CompileError> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
        CompileError {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })?;
    manifest.validate().map_err(|m| error(path, m))?;
    Ok(manifest)
}

fn load_service(
    engine: &RuleEngine,
    manifest_path: &Path,
    errors: &mut Vec<CompileError>,
) -> Option<CdsService> {
    let dir = manifest_path.parent()?.to_path_buf();
    let text = read(manifest_path, errors)?;
    let manifest = match parse_manifest(manifest_path, &text) {
        Ok(m) => m,
        Err(e) => {
            errors.push(e);
            return None;
        }
    };
    let before = errors.len();
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
    for include in &manifest.include {
        let path = dir.join(include);
        if let Some(text) = read(&path, errors) {
            match engine.compile_library(&path, &text) {
                Ok(_) => {
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
    let mut rule_files: Vec<PathBuf> = fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
        .filter(|p| !manifest.include.iter().any(|inc| dir.join(inc) == *p))
        .collect();
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
        let Some(source) = read(&path, errors) else {
            continue;
        };
        let id = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let settings = manifest.rules.get(&id).cloned().unwrap_or_default();
        if settings.disabled {
            continue;
        }
        let rule = RuleSource {
            version: settings.version.unwrap_or_else(|| manifest.version.clone()),
            id,
            path,
            source,
            library: library.clone(),
        };
        match engine.compile(&rule) {
            Ok(compiled) => rules.push(compiled),
            Err(errs) => errors.extend(errs),
        }
    }
    (errors.len() == before).then_some(CdsService {
        manifest,
        rules,
        dir,
        prefetch,
    })
}

/// Loads every service below `dir`. Fails with every error found when any file is broken.
pub fn load(dir: &Path, engine: &RuleEngine) -> Result<Registry, LoadErrors> {
    let mut errors = Vec::new();
    let mut manifests = Vec::new();
    find_manifests(dir, &mut manifests, &mut errors);
    let mut services = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for path in manifests {
        if let Some(service) = load_service(engine, &path, &mut errors) {
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
    fn line_and_column_are_one_based() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
