//! The rule set: one immutable snapshot of the rules directory — its services, compiled rules and
//! candidates, the value sets and data tables shipped with them — with a content version.
//!
//! A call takes the current snapshot once, on arrival, and uses only it, so every response is
//! produced by exactly one version, which it names (`X-Cardinal-Rule-Set`). A reload builds a new
//! snapshot beside the one serving and swaps it in atomically ([`RuleSets`]); calls in flight finish
//! on the old one. What must outlive reloads — the terminology server's client and cache, metrics,
//! HTTP clients — is not in the snapshot: it belongs to `Cardinal`.

mod version;

pub use version::of_dir as content_version;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::engine::{CompileError, RuleEngine};
use crate::registry::{self, CdsService, LoadErrors, Registry};
use crate::terminology::{LocalTerminology, RemoteTerminology, Terminology, TerminologyError};

/// One load of a rules directory. Immutable; shared by the calls that took it.
pub struct RuleSet {
    version: String,
    registry: Registry,
    engine: RuleEngine,
    dir: PathBuf,
    loaded_at: DateTime<Utc>,
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("version", &self.version)
            .field("services", &self.registry.len())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How many times a load is retried when the directory changed while it was read.
const CONSISTENT_LOAD_ATTEMPTS: usize = 3;

impl RuleSet {
    /// Loads and compiles `config.rules_dir`, with the shipped value sets and, when configured, the
    /// long-lived terminology server client `remote`. Every error is reported at once.
    pub fn load(
        config: &Config,
        remote: Option<Arc<RemoteTerminology>>,
    ) -> Result<Self, LoadErrors> {
        let dir = &config.rules_dir;
        let version_error = |e: std::io::Error| {
            LoadErrors(vec![CompileError {
                path: dir.clone(),
                line: None,
                column: None,
                message: format!("cannot read the rules directory: {e}"),
            }])
        };
        // The version must describe the files that were compiled: if they changed while being read
        // (an editor saving, a ConfigMap update), load again.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let before = content_version(dir).map_err(version_error)?;
            let engine = engine(config, remote.clone())?;
            let registry = registry::load(dir, &engine)?;
            let after = content_version(dir).map_err(version_error)?;
            if before == after || attempts >= CONSISTENT_LOAD_ATTEMPTS {
                return Ok(Self {
                    version: after,
                    registry,
                    engine,
                    dir: dir.clone(),
                    loaded_at: Utc::now(),
                });
            }
        }
    }

    /// A rule set from parts already built (tests, benchmarks).
    pub fn from_parts(
        version: impl Into<String>,
        dir: impl Into<PathBuf>,
        registry: Registry,
        engine: RuleEngine,
    ) -> Self {
        Self {
            version: version.into(),
            registry,
            engine,
            dir: dir.into(),
            loaded_at: Utc::now(),
        }
    }

    /// Expands, once, the remote value sets its rules name (when a terminology server is
    /// configured and `pre_expand` is on), so membership needs no per-code call. Failures are
    /// logged, never fatal.
    pub fn pre_expand(&self) {
        self.engine
            .terminology()
            .pre_expand(&self.registry.value_sets());
    }

    /// The content version (12 hex digits of a SHA-256 of the directory's files).
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn engine(&self) -> &RuleEngine {
        &self.engine
    }

    pub fn service(&self, id: &str) -> Option<&Arc<CdsService>> {
        self.registry.get(id)
    }

    /// The rules directory it was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn loaded_at(&self) -> DateTime<Utc> {
        self.loaded_at
    }

    /// A rule file's path relative to the rules directory (its file name when it is elsewhere), so
    /// reports never carry the server's absolute paths.
    pub fn relative_path(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir)
            .ok()
            .or_else(|| path.file_name().map(Path::new))
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/")
    }
}

/// The rule engine for `config`: sandbox limits plus the terminology sources (the value sets
/// shipped with the rules, and the remote terminology server when configured).
fn engine(
    config: &Config,
    remote: Option<Arc<RemoteTerminology>>,
) -> Result<RuleEngine, LoadErrors> {
    let load_errors = |errors: Vec<TerminologyError>| {
        LoadErrors(
            errors
                .into_iter()
                .map(|e| CompileError {
                    path: config.rules_dir.clone(),
                    line: None,
                    column: None,
                    message: e.to_string(),
                })
                .collect(),
        )
    };
    let local = LocalTerminology::load_rules_dir(&config.rules_dir).map_err(load_errors)?;
    let report = local.report();
    if report.files > 0 {
        tracing::info!(
            value_sets = report.value_sets,
            codes = report.codes,
            code_systems = report.code_systems,
            load_ms = report.elapsed.as_secs_f64() * 1000.0,
            approx_bytes = report.approx_bytes,
            "terminology loaded"
        );
    }
    let terminology = Terminology::assemble(&config.terminology, local, remote);
    Ok(RuleEngine::with_terminology(
        config.sandbox.clone(),
        Arc::new(terminology),
    ))
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// A change in the rules directory.
    Watch,
    /// An admin call (HTTP or gRPC).
    Admin,
    /// A rule saved from the playground (`serve --dev`).
    Playground,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Watch => "watch",
            Self::Admin => "admin",
            Self::Playground => "playground",
        }
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ReloadResult {
    /// The new set loaded, compiled and passed its test cases; it now serves.
    Swapped { from: String, to: String },
    /// The files are those of the set already serving.
    Unchanged { version: String },
    /// The new set was refused; the previous one keeps serving.
    Rejected {
        serving: String,
        /// Every `file:line:column` error and failing test case.
        errors: Vec<String>,
        /// Services whose files have errors.
        affected_services: Vec<String>,
    },
}

impl ReloadResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Swapped { .. } => "swapped",
            Self::Unchanged { .. } => "unchanged",
            Self::Rejected { .. } => "rejected",
        }
    }
}

/// One reload, for `/readyz`, the admin calls and the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub trigger: Trigger,
    #[serde(flatten)]
    pub result: ReloadResult,
    /// RFC 3339.
    pub finished_at: String,
    pub duration_ms: u64,
    /// Test cases run against the new set before it was swapped in.
    pub test_cases: usize,
}

impl ReloadReport {
    pub fn new(trigger: Trigger, result: ReloadResult, took: Duration, test_cases: usize) -> Self {
        Self {
            trigger,
            result,
            finished_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
            test_cases,
        }
    }
}

/// The rule set serving now, swapped atomically; reloads are serialised and the last one's report is
/// kept.
pub struct RuleSets {
    current: ArcSwap<RuleSet>,
    serial: Mutex<()>,
    last_reload: Mutex<Option<ReloadReport>>,
}

impl fmt::Debug for RuleSets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSets")
            .field("current", &self.current.load().version())
            .finish_non_exhaustive()
    }
}

impl RuleSets {
    pub fn new(initial: RuleSet) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            serial: Mutex::new(()),
            last_reload: Mutex::new(None),
        }
    }

    /// A holder of one set that is never reloaded (a set under test before its swap).
    pub fn from_shared(set: Arc<RuleSet>) -> Self {
        Self {
            current: ArcSwap::new(set),
            serial: Mutex::new(()),
            last_reload: Mutex::new(None),
        }
    }

    /// The set serving now. A call takes it once and keeps it to the end.
    pub fn current(&self) -> Arc<RuleSet> {
        self.current.load_full()
    }

    /// Makes `next` the set new calls take.
    pub fn swap(&self, next: Arc<RuleSet>) {
        self.current.store(next);
    }

    /// Held for the whole of a reload: reloads never overlap.
    pub fn serialise(&self) -> MutexGuard<'_, ()> {
        self.serial.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, report: ReloadReport) {
        *self.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
    }

    pub fn last_reload(&self) -> Option<ReloadReport> {
        self.last_reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
