//! The rule-authoring playground (`cardinal serve --dev` only, on the admin listener): an author
//! picks a service, one of its rule files and a test case, edits the rule (and the case) in the
//! browser, and on each change sees what `cardinal check`, `cardinal test` and `cardinal explain`
//! would say — without saving a file and without touching the rule set that serves.
//!
//! An edited rule is compiled as a reload would compile it (its service loaded again, the edited
//! text in place of the file), into a detached rule set that shares every other service with the
//! serving one; the case runs on [`Cardinal::detached`]. Saving writes the rule file and the case
//! (both confined to the rules directory) and asks for a reload, which runs every test case before
//! the new set serves, as any change to the rules directory does.
//!
//! The page is [`PAGE`]; the HTTP routes are in `transport/playground.rs`.

pub mod markdown;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cds_hooks::{Card, excerpt};
use crate::evaluator::Cardinal;
use crate::explain::ExplainReport;
use crate::lint::{self, Finding};
use crate::registry::{self, CdsService, MANIFEST_FILE, Overlay};
use crate::rule_set::RuleSet;
use crate::rule_tests::scaffold::{self, NewCase};
use crate::rule_tests::{self, ALIASES_FILE, Aliases, TESTS_DIR, TestCase};

/// The playground page: plain HTML and one script, no build step.
pub const PAGE: &str = include_str!("page.html");

/// Largest rule source accepted (the largest shipped rule is under 20 KiB).
pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Largest test case accepted.
pub const MAX_CASE_BYTES: usize = 1024 * 1024;
/// Largest patient record accepted for a new case (a Synthea patient is a few MiB at most).
pub const MAX_PATIENT_BYTES: usize = 8 * 1024 * 1024;

/// Why a playground call was refused. Names the author's files and services, never patient data.
#[derive(Debug, thiserror::Error)]
pub enum PlaygroundError {
    #[error("unknown CDS service `{0}`")]
    UnknownService(String),
    #[error("`{rule}` is not a rule file of service `{service}` (its files: {files})")]
    NotARule {
        rule: String,
        service: String,
        files: String,
    },
    #[error("the {what} is {size} bytes; at most {limit} are accepted")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("case file `{path}`: {why}")]
    CasePath { path: String, why: &'static str },
    #[error("the test case does not read: {0}")]
    Case(String),
    #[error(
        "the edited rule does not load ({0} error(s)); it is not saved, so the serving rules stay as they are"
    )]
    DoesNotLoad(usize),
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("no case from this patient: {0}")]
    NewCase(String),
}

impl PlaygroundError {
    /// Whether the caller's input is at fault (400) rather than the server (500).
    pub fn is_input(&self) -> bool {
        !matches!(self, Self::Write { .. })
    }
}

/// A service as the page lists it: its rule files (with their text) and its test cases.
#[derive(Debug, Serialize)]
pub struct ServiceEntry {
    pub id: String,
    pub hook: String,
    pub title: Option<String>,
    pub rules: Vec<FileEntry>,
    pub cases: Vec<FileEntry>,
}

/// A file relative to the rules directory, and its text.
#[derive(Debug, Serialize)]
pub struct FileEntry {
    pub file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub text: String,
}

/// Every service of the serving rule set, with its rule files and test cases.
pub fn services(cardinal: &Cardinal) -> Vec<ServiceEntry> {
    let rule_set = cardinal.rule_set();
    // A directory with an unreadable case lists no cases; `cardinal test` names the file.
    let suites = rule_tests::discover(rule_set.dir()).unwrap_or_default();
    rule_set
        .registry()
        .services()
        .map(|service| ServiceEntry {
            id: service.id().to_owned(),
            hook: service.hook().to_owned(),
            title: service.manifest.title.clone(),
            rules: service
                .rules
                .iter()
                .chain(&service.candidates)
                .filter_map(|rule| {
                    Some(FileEntry {
                        file: rule.file.clone(),
                        description: None,
                        text: std::fs::read_to_string(&rule.path).ok()?,
                    })
                })
                .collect(),
            cases: suites
                .iter()
                .flat_map(|suite| &suite.cases)
                .filter(|case| case.service == service.id())
                .filter_map(|case| {
                    Some(FileEntry {
                        file: rule_set.relative_path(&case.path),
                        description: case.description.clone(),
                        text: std::fs::read_to_string(&case.path).ok()?,
                    })
                })
                .collect(),
        })
        .collect()
}

/// `POST /playground/evaluate`: the edited rule and, optionally, a test case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateRequest {
    pub service: String,
    /// The rule file, relative to the rules directory (as [`services`] lists it).
    pub rule: String,
    /// The edited text of the rule file.
    pub source: String,
    /// A test case (full or compact format) to run the edited rule on.
    #[serde(default)]
    pub case: Option<String>,
    /// Where the case lives (relative to the rules directory), for its `aliases.toml` and its name.
    #[serde(default)]
    pub case_file: Option<String>,
}

/// One finding on the edited rule set: `file:line:column`, relative to the rules directory.
#[derive(Debug, Serialize)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem has no place in the file.
    pub line: usize,
    pub column: usize,
    pub severity: &'static str,
    pub check: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// A card as the EHR would show it: the card, and its `detail` as sanitized HTML.
#[derive(Debug, Serialize)]
pub struct RenderedCard {
    pub card: Card,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail_html: Option<String>,
}

/// What the case did on the edited rules.
#[derive(Debug, Serialize)]
pub struct CaseRun {
    /// 200, or the status the call was refused with.
    pub status: u16,
    /// Whether the case's expectations hold.
    pub passed: bool,
    pub mismatches: Vec<String>,
    pub cards: Vec<RenderedCard>,
    /// Every rule's verdict, conditions (with compared values), facts, prints and work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<ExplainReport>,
    /// Each rule's verdict in `cardinal explain`'s words (`NOT FIRED: condition "..." was false
    /// (5.2 mmol/L > 5.5)`), in the order of `explain.rules`.
    pub verdicts: Vec<String>,
    /// The same, as `cardinal explain` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain_text: Option<String>,
    /// Why the call was refused, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct EvaluateResponse {
    /// Whether the edited rule set loads (no error among the load diagnostics).
    pub loads: bool,
    /// Load errors and `cardinal check`'s findings on the edited file, the edited file's first.
    pub diagnostics: Vec<Diagnostic>,
    /// The case's run, when a case was given and the rules load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<CaseRun>,
    /// Why the case could not run (it does not read, or names another service).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_error: Option<String>,
    /// The serving rule set's version: the edit does not change it.
    pub serving: String,
}

fn check_size(what: &'static str, text: &str, limit: usize) -> Result<(), PlaygroundError> {
    if text.len() > limit {
        return Err(PlaygroundError::TooLarge {
            what,
            size: text.len(),
            limit,
        });
    }
    Ok(())
}

/// The service and the path of its rule file `rule` (as listed: relative to the rules directory).
/// Only files the service already runs can be edited, so no request names a path of its own.
fn rule_of(
    rule_set: &RuleSet,
    service: &str,
    rule: &str,
) -> Result<(Arc<CdsService>, PathBuf), PlaygroundError> {
    let service = rule_set
        .service(service)
        .cloned()
        .ok_or_else(|| PlaygroundError::UnknownService(excerpt(service)))?;
    let path = service
        .rules
        .iter()
        .chain(&service.candidates)
        .find(|r| r.file == rule)
        .map(|r| r.path.clone())
        .ok_or_else(|| PlaygroundError::NotARule {
            rule: excerpt(rule),
            service: service.id().to_owned(),
            files: service
                .rules
                .iter()
                .chain(&service.candidates)
                .map(|r| r.file.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    Ok((service, path))
}

/// The edited rule set: the serving one with the edited rule's service loaded again (the edited
/// text in place of its file), or every load error.
fn edited_set(
    rule_set: &RuleSet,
    service: &CdsService,
    path: &Path,
    source: &str,
) -> Result<RuleSet, registry::LoadErrors> {
    let manifest = service.dir.join(MANIFEST_FILE);
    let edited = registry::load_service_with(
        rule_set.dir(),
        &manifest,
        rule_set.engine(),
        Overlay { path, text: source },
    )?;
    Ok(RuleSet::from_parts(
        format!("{}-edited", rule_set.version()),
        rule_set.dir(),
        rule_set.registry().with_service(edited),
        rule_set.engine().clone(),
    ))
}

fn diagnostic(rule_set: &RuleSet, finding: Finding) -> Diagnostic {
    Diagnostic {
        file: rule_set.relative_path(&finding.path),
        line: finding.line,
        column: finding.column,
        severity: finding.severity.as_str(),
        check: finding.check,
        message: finding.message,
        hint: finding.hint,
    }
}

/// A case path as written by the author: relative, inside a `tests/` folder that exists below the
/// rules directory, a `.json` file. `..`, absolute paths and links out of the directory are refused.
fn case_path(rules_dir: &Path, file: &str) -> Result<PathBuf, PlaygroundError> {
    let refuse = |why| PlaygroundError::CasePath {
        path: excerpt(file),
        why,
    };
    let relative = Path::new(file);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(refuse(
            "must be a path relative to the rules directory, without `..`",
        ));
    }
    if relative.extension().is_none_or(|x| x != "json") {
        return Err(refuse("a test case is a `.json` file"));
    }
    let Some(name) = relative.file_name() else {
        return Err(refuse("names no file"));
    };
    if name.to_string_lossy().starts_with('.') {
        return Err(refuse("a hidden file is not read as a test case"));
    }
    let Some(folder) = relative.parent() else {
        return Err(refuse("must be inside a `tests/` folder of a service"));
    };
    if folder.file_name().is_none_or(|n| n != TESTS_DIR) {
        return Err(refuse("must be inside a `tests/` folder of a service"));
    }
    let root = rules_dir
        .canonicalize()
        .map_err(|_| refuse("the rules directory cannot be read"))?;
    let folder = rules_dir
        .join(folder)
        .canonicalize()
        .map_err(|_| refuse("its `tests/` folder does not exist"))?;
    if !folder.starts_with(&root) {
        return Err(refuse("leads out of the rules directory"));
    }
    let path = folder.join(name);
    // An existing file may be a link: it must stay inside too.
    if let Ok(target) = path.canonicalize()
        && !target.starts_with(&root)
    {
        return Err(refuse("leads out of the rules directory"));
    }
    Ok(path)
}

/// The aliases of the `tests/` folder a case lives in (none for an unsaved case).
fn aliases_for(case_file: Option<&Path>) -> Aliases {
    case_file
        .and_then(Path::parent)
        .map(|dir| dir.join(ALIASES_FILE))
        .filter(|p| p.is_file())
        .and_then(|p| Aliases::read(&p).ok())
        .unwrap_or_default()
}

/// Compiles the edited rule beside the serving set, lints it and runs the case on it (blocking:
/// call it off the async runtime).
pub fn evaluate(
    cardinal: &Cardinal,
    request: &EvaluateRequest,
) -> Result<EvaluateResponse, PlaygroundError> {
    check_size("rule source", &request.source, MAX_SOURCE_BYTES)?;
    if let Some(case) = &request.case {
        check_size("test case", case, MAX_CASE_BYTES)?;
    }
    let rule_set = cardinal.rule_set();
    let (service, path) = rule_of(&rule_set, &request.service, &request.rule)?;
    let manifest = service.dir.join(MANIFEST_FILE);
    let mut findings = lint::rule_source_findings(&manifest, &path, &request.source);
    let edited = edited_set(&rule_set, &service, &path, &request.source);
    let loads = edited.is_ok();
    let edited = match edited {
        Ok(set) => Some(set),
        Err(errors) => {
            findings.extend(errors.0.iter().map(Finding::from));
            None
        }
    };
    findings.sort();
    findings.dedup();
    let mut diagnostics: Vec<Diagnostic> = findings
        .into_iter()
        .map(|f| diagnostic(&rule_set, f))
        .collect();
    // The edited file's first: that is where the author is looking.
    diagnostics.sort_by_key(|d| d.file != request.rule);
    let mut response = EvaluateResponse {
        loads,
        diagnostics,
        case: None,
        case_error: None,
        serving: rule_set.version().to_owned(),
    };
    let (Some(edited), Some(text)) = (edited, request.case.as_deref()) else {
        return Ok(response);
    };
    let case_file = match request.case_file.as_deref() {
        Some(file) if !file.is_empty() => Some(case_path(rule_set.dir(), file)?),
        _ => None,
    };
    let named = case_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("playground-case.json"));
    let case = match TestCase::parse(text, &named) {
        Ok(case) => case,
        Err(e) => {
            response.case_error = Some(e.to_string());
            return Ok(response);
        }
    };
    if case.service != request.service {
        response.case_error = Some(format!(
            "the case calls service `{}`, not `{}`",
            excerpt(&case.service),
            request.service
        ));
        return Ok(response);
    }
    let detached = cardinal.detached(Arc::new(edited));
    let (actual, report) = rule_tests::evaluate_case(&detached, &case);
    let mismatches = rule_tests::compare(&case.expect, &actual, &aliases_for(case_file.as_deref()));
    let cards = actual
        .response
        .as_ref()
        .map(|response| {
            response
                .cards
                .iter()
                .map(|card| RenderedCard {
                    detail_html: card.detail.as_deref().map(markdown::to_html),
                    card: card.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    response.case = Some(CaseRun {
        status: actual.status,
        passed: mismatches.is_empty(),
        mismatches: mismatches.iter().map(ToString::to_string).collect(),
        cards,
        verdicts: report
            .as_ref()
            .map(|r| r.rules.iter().map(|rule| rule.verdict_line()).collect())
            .unwrap_or_default(),
        explain_text: report.as_ref().map(ToString::to_string),
        explain: report,
        message: actual.message,
    });
    Ok(response)
}

/// `POST /playground/save`: the edited rule and, optionally, the case to write beside it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaveRequest {
    pub service: String,
    pub rule: String,
    pub source: String,
    #[serde(default)]
    pub case: Option<String>,
    /// Where to write the case: relative to the rules directory, inside an existing `tests/` folder.
    #[serde(default)]
    pub case_file: Option<String>,
}

/// What was written (relative to the rules directory).
#[derive(Debug, Serialize)]
pub struct Saved {
    pub written: Vec<String>,
}

/// Writes `text` to `path` through a hidden temporary file in the same folder, so a reload never
/// reads half a file.
fn write_atomically(path: &Path, text: &str, shown: &str) -> Result<(), PlaygroundError> {
    let error = |e: std::io::Error| PlaygroundError::Write {
        path: shown.to_owned(),
        reason: e.to_string(),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.playground"));
    std::fs::write(&temporary, text).map_err(error)?;
    std::fs::rename(&temporary, path).map_err(|e| {
        let _ = std::fs::remove_file(&temporary);
        error(e)
    })
}

/// Checks that the edited rule loads and the case reads, then writes both (blocking). The caller
/// then reloads: the new set serves only once every test case passes on it.
pub fn save(cardinal: &Cardinal, request: &SaveRequest) -> Result<Saved, PlaygroundError> {
    check_size("rule source", &request.source, MAX_SOURCE_BYTES)?;
    let rule_set = cardinal.rule_set();
    let (service, path) = rule_of(&rule_set, &request.service, &request.rule)?;
    let case = match (&request.case_file, &request.case) {
        (Some(file), Some(text)) if !file.is_empty() => {
            check_size("test case", text, MAX_CASE_BYTES)?;
            let case_path = case_path(rule_set.dir(), file)?;
            TestCase::parse(text, &case_path).map_err(|e| PlaygroundError::Case(e.to_string()))?;
            Some((case_path, file.clone(), text.clone()))
        }
        (None, Some(_)) | (Some(_), Some(_)) => {
            return Err(PlaygroundError::CasePath {
                path: String::new(),
                why: "a case to save needs `case_file`",
            });
        }
        _ => None,
    };
    if let Err(errors) = edited_set(&rule_set, &service, &path, &request.source) {
        return Err(PlaygroundError::DoesNotLoad(errors.0.len()));
    }
    // The rule file is one the service runs, below the rules directory; a link out of it is refused.
    let root = rule_set.dir().canonicalize().ok();
    let target = path.canonicalize().ok();
    if !matches!((&root, &target), (Some(root), Some(target)) if target.starts_with(root)) {
        return Err(PlaygroundError::NotARule {
            rule: excerpt(&request.rule),
            service: service.id().to_owned(),
            files: "its files inside the rules directory".into(),
        });
    }
    let mut written = Vec::new();
    write_atomically(&path, &request.source, &request.rule)?;
    written.push(request.rule.clone());
    if let Some((case_path, shown, text)) = case {
        write_atomically(&case_path, &text, &shown)?;
        written.push(shown);
    }
    Ok(Saved { written })
}

/// `POST /playground/new-case`: a sample patient to start a case from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCaseRequest {
    pub service: String,
    /// A FHIR Bundle (one patient, as Synthea writes them) or a Patient resource, as JSON text.
    pub patient: String,
    /// The order being signed or selected (order-select, order-sign).
    #[serde(default)]
    pub draft: Option<serde_json::Value>,
    /// The evaluation time to pin (RFC 3339 or `YYYY-MM-DD`); default: today.
    #[serde(default)]
    pub at: Option<String>,
}

/// The new compact case (its expectations: what the serving rules answer now), where to save it,
/// and notes for the author.
#[derive(Debug, Serialize)]
pub struct NewCaseResponse {
    pub case: String,
    pub suggested_file: String,
    pub notes: Vec<String>,
}

/// The `tests/` folder nearest to a service (its own, or a pack's above it), relative to the rules
/// directory: where its new cases go.
fn tests_folder(rule_set: &RuleSet, service: &CdsService) -> String {
    let mut dir = Some(service.dir.as_path());
    while let Some(here) = dir {
        if here.join(TESTS_DIR).is_dir() {
            return rule_set.relative_path(&here.join(TESTS_DIR));
        }
        if here == rule_set.dir() {
            break;
        }
        dir = here.parent();
    }
    rule_set.relative_path(&service.dir.join(TESTS_DIR))
}

/// A compact case from a sample patient, as `cardinal test new` writes it (blocking).
pub fn new_case(
    cardinal: &Cardinal,
    request: &NewCaseRequest,
) -> Result<NewCaseResponse, PlaygroundError> {
    check_size("patient record", &request.patient, MAX_PATIENT_BYTES)?;
    let rule_set = cardinal.rule_set();
    let service = rule_set
        .service(&request.service)
        .cloned()
        .ok_or_else(|| PlaygroundError::UnknownService(excerpt(&request.service)))?;
    let asked = NewCase {
        service: &request.service,
        from: Path::new("sample patient"),
        draft: request.draft.clone(),
        at: request.at.as_deref(),
    };
    let made = scaffold::new_case_from_text(cardinal, &asked, &request.patient)
        .map_err(|e| PlaygroundError::NewCase(e.to_string()))?;
    let value =
        serde_json::to_value(&made.case).map_err(|e| PlaygroundError::NewCase(e.to_string()))?;
    Ok(NewCaseResponse {
        case: rule_tests::compact::to_pretty_json(&value),
        suggested_file: format!("{}/new-case.json", tests_folder(&rule_set, &service)),
        notes: made.notes,
    })
}
