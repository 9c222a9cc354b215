//! `cardinal check`: every problem in a rules directory at once, each as
//! `file:line:column: severity: message` with a hint, so an informaticist fixes them in one pass
//! instead of discovering them one patient at a time.
//!
//! Errors are what makes a rule set refuse to load (manifests, syntax, value sets; see
//! [`crate::registry`]) and mistakes that would fail or silently misread on a real patient:
//! calls to functions nobody defines ([`functions`]), FHIR elements R4 does not have ([`fhir`],
//! [`script`]), card literals the card validator refuses ([`cards`]). Warnings are what loads and
//! runs but reads badly or may fail for some patients: card text ([`text`]), duplicate services
//! ([`duplicates`]), a value that may be absent read without a guard ([`script`]).

mod cards;
mod duplicates;
mod fhir;
mod functions;
mod script;
mod suggest;
mod text;

pub use duplicates::duplicate_rules;
pub use text::lint_source;

pub(crate) use suggest::closest as closest_name;

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::engine::{ApiType, CompileError, ScriptChecker};
use crate::registry::{self, Registry};
use crate::rule_set::RuleSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The rule set does not load, or a rule would fail or misread on a real patient.
    Error,
    /// It loads and runs, but reads badly or may fail for some patients.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
        }
    }
}

/// One problem, `path:line:column: severity: message`, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    #[serde(rename = "file")]
    pub path: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (a missing file, a whole manifest).
    pub line: usize,
    pub column: usize,
    pub severity: Severity,
    /// Which check found it: `load`, `unknown-function`, `unknown-element`, `unknown-property`,
    /// `absent-value`, `card`, `card-text`, `duplicate-service`.
    pub check: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Kept for callers of the card-text and duplicate-service checks.
pub type Warning = Finding;

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        write!(f, ": {}: {}", self.severity.as_str(), self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

impl From<&CompileError> for Finding {
    fn from(e: &CompileError) -> Self {
        // Load errors carry their suggestion at the end of the message.
        let (message, hint) = match e.message.split_once("; did you mean ") {
            Some((message, rest)) => (message.to_owned(), Some(format!("did you mean {rest}"))),
            None => (e.message.clone(), None),
        };
        Self {
            path: e.path.clone(),
            line: e.line.unwrap_or(0),
            column: e.column.unwrap_or(0),
            severity: Severity::Error,
            check: "load",
            message,
            hint,
        }
    }
}

/// What `cardinal check` found.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The rules directory checked.
    pub dir: PathBuf,
    /// Whether the rule set loads (no load errors).
    pub loads: bool,
    pub services: usize,
    pub rules: usize,
    pub candidates: usize,
    /// The rule set's content version, when it loads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_set: Option<String>,
    /// The shipped value sets, as `cardinal check` has always reported them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminology: Option<String>,
    pub errors: usize,
    pub warnings: usize,
    pub findings: Vec<Finding>,
    /// The services load errors are in (their ids), for an operator deciding what a refused rule set
    /// would have changed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub affected_services: Vec<String>,
}

impl Report {
    /// Exit status: 0 clean (or warnings only), 1 when errors were found (or warnings, when they
    /// are denied).
    pub fn failed(&self, deny_warnings: bool) -> bool {
        self.errors > 0 || (deny_warnings && self.warnings > 0)
    }

    /// The human report: (stdout, stderr).
    pub fn text(&self) -> (String, String) {
        let mut out = String::new();
        let mut err = String::new();
        if let Some(version) = &self.rule_set {
            out.push_str(&format!(
                "ok: {} services, {} rules{} in {} (rule set {version})\n",
                self.services,
                self.rules,
                if self.candidates > 0 {
                    format!(", {} candidates", self.candidates)
                } else {
                    String::new()
                },
                self.dir.display(),
            ));
        }
        if let Some(terminology) = &self.terminology {
            out.push_str(&format!("terminology: {terminology}\n"));
        }
        for finding in &self.findings {
            err.push_str(&format!("{finding}\n"));
        }
        let mut counts = Vec::new();
        if self.errors > 0 {
            counts.push(format!("{} error(s)", self.errors));
        }
        if self.warnings > 0 {
            counts.push(format!("{} warning(s)", self.warnings));
        }
        if !counts.is_empty() {
            err.push_str(&format!("{} in {}", counts.join(", "), self.dir.display()));
            if !self.affected_services.is_empty() {
                err.push_str(&format!(
                    "; services affected: {}",
                    self.affected_services.join(", ")
                ));
            }
            err.push('\n');
        }
        (out, err)
    }

    /// The machine-readable report (`--format json`).
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Checks the rules directory of `config`: loads it as the server would (every load error), then
/// runs every check on every rule and library file, whether or not the set loads.
pub fn check(config: &Config) -> Report {
    let dir = config.rules_dir.clone();
    let loaded = crate::evaluator::remote_terminology(config)
        .and_then(|remote| RuleSet::load(config, remote));
    let mut findings = Vec::new();
    let mut report = Report {
        dir: dir.clone(),
        loads: loaded.is_ok(),
        services: 0,
        rules: 0,
        candidates: 0,
        rule_set: None,
        terminology: None,
        errors: 0,
        warnings: 0,
        findings: Vec::new(),
        affected_services: Vec::new(),
    };
    match &loaded {
        Ok(rule_set) => {
            let registry = rule_set.registry();
            report.services = registry.len();
            report.rules = registry.rule_count();
            report.candidates = registry.services().map(|s| s.candidates.len()).sum();
            report.rule_set = Some(rule_set.version().to_owned());
            if let Some(local) = rule_set.engine().terminology().local_source()
                && local.report().files > 0
            {
                report.terminology = Some(local.report().to_string());
            }
            findings.extend(duplicate_rules(registry));
        }
        Err(errors) => {
            findings.extend(errors.0.iter().map(Finding::from));
            report.affected_services = errors.affected_services();
        }
    }
    findings.extend(source_findings(&dir));
    findings.sort();
    findings.dedup();
    report.errors = findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .count();
    report.warnings = findings.len() - report.errors;
    report.findings = findings;
    report
}

/// Every finding of the source checks for the rules below `dir`, loaded as `registry` (which only
/// the duplicate-service check needs).
pub fn lint(dir: &Path, registry: &Registry) -> Vec<Finding> {
    let mut findings = source_findings(dir);
    findings.extend(duplicate_rules(registry));
    findings.sort();
    findings.dedup();
    findings
}

/// The source checks on the text of one rule file of the service whose manifest is `manifest` (the
/// playground's edited rule, not yet saved), knowing the functions of the service's `include`
/// files. A text that does not parse is left to the loader's error.
pub fn rule_source_findings(manifest: &Path, path: &Path, text: &str) -> Vec<Finding> {
    let mut findings = lint_source(path, text);
    let checker = ScriptChecker::new();
    let Ok(ast) = checker.parse(text) else {
        return findings;
    };
    let api = script::Api {
        functions: checker.functions().clone(),
        patient: checker.properties(ApiType::Patient),
        resource: checker.properties(ApiType::Resource),
    };
    let library_functions: BTreeSet<String> = service_files(manifest)
        .map(|service| service.libraries)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| checker.parse(&fs::read_to_string(p).ok()?).ok())
        .flat_map(|ast| functions::defined(&ast))
        .collect();
    findings.extend(functions::check(&api, path, &ast, &library_functions));
    findings.extend(script::check(&api, path, &ast));
    findings.sort();
    findings.dedup();
    findings
}

/// The rule and library files of one service, read from its manifest leniently (a manifest with
/// errors still names its files).
struct ServiceFiles {
    rules: Vec<PathBuf>,
    libraries: Vec<PathBuf>,
}

fn strings(table: &toml::Table, key: &str) -> Vec<String> {
    table
        .get(key)
        .and_then(toml::Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn rhai_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "rhai"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn service_files(manifest: &Path) -> Option<ServiceFiles> {
    let dir = manifest.parent()?;
    let table: toml::Table = fs::read_to_string(manifest).ok()?.parse().ok()?;
    let libraries: Vec<PathBuf> = strings(&table, "include")
        .iter()
        .map(|f| dir.join(f))
        .collect();
    let named = strings(&table, "rule_files");
    let mut rules: Vec<PathBuf> = if named.is_empty() {
        rhai_in(dir)
            .into_iter()
            .filter(|p| !libraries.contains(p))
            .collect()
    } else {
        named.iter().map(|f| dir.join(f)).collect()
    };
    rules.extend(rhai_in(&dir.join(registry::CANDIDATES_DIR)));
    Some(ServiceFiles { rules, libraries })
}

fn manifests(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths.into_iter().filter(|p| !registry::is_hidden(p)) {
        if path.is_dir() {
            manifests(&path, found);
        } else if path
            .file_name()
            .is_some_and(|n| n == registry::MANIFEST_FILE)
        {
            found.push(path);
        }
    }
}

fn rhai_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with('.') || name == crate::rule_tests::TESTS_DIR {
            continue;
        }
        if path.is_dir() {
            rhai_files(&path, out);
        } else if path.extension().is_some_and(|x| x == "rhai") {
            out.push(path);
        }
    }
}

/// The card-text checks on every `.rhai` file, and the syntax-tree checks on every service's rule
/// and library files. A file that does not parse is left to the loader's error.
fn source_findings(dir: &Path) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut files = Vec::new();
    rhai_files(dir, &mut files);
    for path in &files {
        if let Ok(text) = fs::read_to_string(path) {
            findings.extend(lint_source(path, &text));
        }
    }
    let checker = ScriptChecker::new();
    let api = script::Api {
        functions: checker.functions().clone(),
        patient: checker.properties(ApiType::Patient),
        resource: checker.properties(ApiType::Resource),
    };
    let parse = |path: &Path| {
        let text = fs::read_to_string(path).ok()?;
        checker.parse(&text).ok()
    };
    let mut found = Vec::new();
    manifests(dir, &mut found);
    for manifest in found {
        let Some(service) = service_files(&manifest) else {
            continue;
        };
        let libraries: Vec<(PathBuf, rhai::AST)> = service
            .libraries
            .iter()
            .filter_map(|p| Some((p.clone(), parse(p)?)))
            .collect();
        let library_functions: BTreeSet<String> = libraries
            .iter()
            .flat_map(|(_, ast)| functions::defined(ast))
            .collect();
        let rules = service
            .rules
            .iter()
            .filter_map(|p| Some((p.clone(), parse(p)?)));
        for (path, ast) in libraries.iter().cloned().chain(rules) {
            findings.extend(functions::check(&api, &path, &ast, &library_functions));
            findings.extend(script::check(&api, &path, &ast));
        }
    }
    findings
}
