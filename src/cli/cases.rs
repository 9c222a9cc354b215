//! `cardinal test compact` and `cardinal test new`: writing test cases in the compact format, and
//! reading compact cases for `test` and `explain`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde_json::Value;

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::rule_tests::compact::{self, CompactCase};
use cardinal::rule_tests::scaffold::{self, NewCase};
use cardinal::rule_tests::{TestCase, TestSuite};

#[derive(Subcommand)]
pub enum TestAction {
    /// Print a test case in the compact format (context, resources by type, expectations),
    /// checked: it expands to the same context and prefetch resources as the case.
    Compact {
        /// A test-case file (full format).
        file: PathBuf,
        /// Rules directory holding the case's service (default: the configured one).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Write a compact test case for SERVICE from a patient record, its expectations filled with
    /// what the service answers now (edit them into what it should answer).
    New {
        /// The service the case calls.
        service: String,
        /// A FHIR Bundle of one patient (`.json` or `.json.gz`, e.g. a Synthea patient) or a
        /// Patient resource.
        #[arg(long)]
        from: PathBuf,
        /// The order being signed or selected (a FHIR resource), for order-sign and order-select.
        #[arg(long)]
        draft: Option<PathBuf>,
        /// Where to write the case (default: standard output). An existing file is not replaced.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Evaluation time to pin: RFC 3339 or YYYY-MM-DD (default: today).
        #[arg(long)]
        at: Option<String>,
        /// Rules directory (default: the configured one).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
}

pub fn run(action: TestAction, config: &Config) -> ExitCode {
    let result = match action {
        TestAction::Compact { file, rules } => compact_command(
            &file,
            &rules.unwrap_or_else(|| config.rules_dir.clone()),
            config,
        ),
        TestAction::New {
            service,
            from,
            draft,
            out,
            at,
            rules,
        } => new_command(
            &NewArgs {
                service,
                from,
                draft,
                out,
                at,
            },
            &rules.unwrap_or_else(|| config.rules_dir.clone()),
            config,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("cardinal test: {message}");
            ExitCode::from(2)
        }
    }
}

fn load(dir: &Path, config: &Config) -> Result<Cardinal, String> {
    super::load_rules(dir, config).map_err(|errors| {
        format!(
            "{}\n{} error(s) in {}",
            errors.join("\n"),
            errors.len(),
            dir.display()
        )
    })
}

fn compact_command(file: &Path, dir: &Path, config: &Config) -> Result<(), String> {
    let case = TestCase::read(file).map_err(|e| e.to_string())?;
    if case.compact.is_some() {
        return Err(format!("{}: already in the compact format", file.display()));
    }
    let cardinal = load(dir, config)?;
    let service = cardinal.service(&case.service).map_err(|_| {
        format!(
            "{}: no service `{}` in {}",
            file.display(),
            case.service,
            dir.display()
        )
    })?;
    let template = CompactCase {
        description: case.description.clone(),
        service: case.service.clone(),
        evaluation_time: case.evaluation_time.clone(),
        hook: None,
        hook_instance: None,
        fhir_server: None,
        fhir_authorization: None,
        context: Default::default(),
        resources: Default::default(),
        prefetch: Default::default(),
        not_sent: Vec::new(),
        expect: case.expect.clone(),
        provenance: case.provenance.clone(),
    };
    let converted = compact::from_request(&case.request, &service, template)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    for note in &converted.kept_as_written {
        eprintln!("{}: {note}", file.display());
    }
    print!("{}", pretty(&converted.case)?);
    Ok(())
}

fn pretty(case: &CompactCase) -> Result<String, String> {
    serde_json::to_value(case)
        .map(|v| compact::to_pretty_json(&v))
        .map_err(|e| format!("cannot write the case: {e}"))
}

struct NewArgs {
    service: String,
    from: PathBuf,
    draft: Option<PathBuf>,
    out: Option<PathBuf>,
    at: Option<String>,
}

fn new_command(args: &NewArgs, dir: &Path, config: &Config) -> Result<(), String> {
    if let Some(out) = &args.out
        && out.exists()
    {
        return Err(format!("{} exists: not replaced", out.display()));
    }
    let draft = match &args.draft {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| format!("{}:{}:{}: not JSON", path.display(), e.line(), e.column()))?;
            Some(value)
        }
    };
    let cardinal = load(dir, config)?;
    let scaffold = scaffold::new_case(
        &cardinal,
        &NewCase {
            service: &args.service,
            from: &args.from,
            draft,
            at: args.at.as_deref(),
        },
    )
    .map_err(|e| e.to_string())?;
    for note in &scaffold.notes {
        eprintln!("note: {note}");
    }
    let text = pretty(&scaffold.case)?;
    match &args.out {
        None => print!("{text}"),
        Some(out) => {
            if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("{}: cannot create: {e}", parent.display()))?;
            }
            std::fs::write(out, text)
                .map_err(|e| format!("{}: cannot write: {e}", out.display()))?;
            eprintln!(
                "wrote {} ({} cards expected); run `cardinal test` to check it",
                out.display(),
                scaffold.case.expect.cards.as_ref().map_or(0, Vec::len)
            );
        }
    }
    Ok(())
}

/// The compact cases that cannot be expanded against their service (`path: message`), so
/// `cardinal test` reports them as unreadable test files rather than as failures. A case whose
/// service is unknown is left to the run, which reports it like a full case's.
pub fn unexpandable(cardinal: &Cardinal, suites: &[TestSuite]) -> Vec<String> {
    suites
        .iter()
        .flat_map(|s| &s.cases)
        .filter_map(|case| {
            let compact = case.compact.as_ref()?;
            let service = cardinal.service(&case.service).ok()?;
            compact
                .expand(&service)
                .err()
                .map(|e| format!("{}: {e}", case.path.display()))
        })
        .collect()
}

/// `explain --request` with a compact case: its request, expanded by its service.
pub fn expand_if_compact(file: &Path, value: Value, cardinal: &Cardinal) -> Result<Value, String> {
    let is_compact = value.get("hook").is_none()
        && value.get("request").is_none()
        && value.get("context").is_some();
    if !is_compact {
        return Ok(value);
    }
    let case = TestCase::read(file).map_err(|e| e.to_string())?;
    let service = cardinal
        .service(&case.service)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    case.request_for(&service)
        .map_err(|e| format!("{}: {e}", file.display()))
}
