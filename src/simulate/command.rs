//! The `cardinal simulate` command line: run (a shard of) a population, or merge shard reports.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::Config;
use crate::evaluator::parse_evaluation_time;

use super::report::Report;
use super::tally::{MergeError, Tally};
use super::{Options, Shard, SimulateError};

/// `cardinal simulate --rules DIR --patients PATH --at DATE [--shard i/n] [--json FILE] [--html FILE]`
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SimulateArgs {
    #[command(subcommand)]
    pub command: Option<SimulateCommand>,
    /// Rules directory (default: the configured one).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// FHIR R4 Bundles (a file or a folder; `.json` or `.json.gz`, one patient each) or a Bulk FHIR
    /// NDJSON export (`.ndjson[.gz]`, one resource type per file).
    #[arg(long)]
    pub patients: Option<PathBuf>,
    /// The simulated day ("now" for the rules; later data is left out): RFC 3339 or YYYY-MM-DD.
    #[arg(long)]
    pub at: Option<String>,
    /// Run only shard i of n (1-based), e.g. `--shard 2/8`; merge the reports afterwards.
    #[arg(long, default_value = "1/1")]
    pub shard: String,
    /// Write the report as JSON (with the raw counts, for `simulate merge`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Worker threads (default: every core).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, clap::Subcommand)]
pub enum SimulateCommand {
    /// Merge the JSON reports of shards into the report of one run.
    Merge {
        /// The shards' JSON reports.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        html: Option<PathBuf>,
    },
}

/// Why the command stopped.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a simulation report: {message}")]
    Report { path: String, message: String },
    #[error(transparent)]
    Merge(#[from] MergeError),
}

fn write(path: &Path, text: &str) -> Result<(), CommandError> {
    std::fs::write(path, text).map_err(|source| CommandError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Prints the table and writes the files asked for.
fn publish(report: &Report, json: Option<&Path>, html: Option<&Path>) -> Result<(), CommandError> {
    print!("{}", report.text());
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report).map_err(|e| CommandError::Write {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write(path, &text)?;
    }
    if let Some(path) = html {
        write(path, &report.html())?;
    }
    Ok(())
}

pub fn main(args: &SimulateArgs, config: &Config) -> Result<ExitCode, CommandError> {
    if let Some(SimulateCommand::Merge {
        reports,
        json,
        html,
    }) = &args.command
    {
        let mut total = Tally::default();
        for path in reports {
            let text = std::fs::read_to_string(path).map_err(|e| CommandError::Report {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            let report: Report = serde_json::from_str(&text).map_err(|e| CommandError::Report {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
            total.merge(&report.tally)?;
        }
        publish(&Report::from_tally(total), json.as_deref(), html.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    let patients = args
        .patients
        .clone()
        .ok_or_else(|| CommandError::Usage("--patients is required".into()))?;
    let at_text = args
        .at
        .as_deref()
        .ok_or_else(|| CommandError::Usage("--at is required (the simulated day)".into()))?;
    let at = parse_evaluation_time(at_text).ok_or_else(|| {
        CommandError::Usage(format!(
            "--at `{at_text}` is not an RFC 3339 date-time or a date"
        ))
    })?;
    let shard = Shard::parse(&args.shard).ok_or_else(|| {
        CommandError::Usage(format!(
            "--shard `{}` must be i/n with 1 ≤ i ≤ n",
            args.shard
        ))
    })?;
    let mut config = config.clone();
    if let Some(rules) = &args.rules {
        config.rules_dir.clone_from(rules);
    }
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(std::num::NonZeroUsize::get)
            .unwrap_or(2)
    });
    let started = std::time::Instant::now();
    let tally = super::run(&Options {
        config,
        patients,
        at,
        shard,
        threads,
        progress: true,
    })?;
    let elapsed = started.elapsed();
    let report = Report::from_tally(tally);
    publish(&report, args.json.as_deref(), args.html.as_deref())?;
    eprintln!(
        "{} patients in {:.1} s ({:.0} patients/s, {} threads)",
        report.patients,
        elapsed.as_secs_f64(),
        report.patients as f64 / elapsed.as_secs_f64().max(1e-9),
        threads
    );
    Ok(ExitCode::SUCCESS)
}
