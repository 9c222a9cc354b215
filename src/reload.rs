//! Hot reload of the rule set, gated by the rules' own tests. (SIGHUP reaches [`reload_async`]
//! through the binary's one signal handler, which reloads the TLS certificate too.)
//!
//! Informaticists change rules every week; restarting a CDS service for it is not acceptable, and
//! neither is serving half a rule set. A reload — on SIGHUP, on a change in the rules directory
//! (including a Kubernetes ConfigMap update, which swaps a `..data` link), or on an admin call —
//! loads and compiles the whole directory beside the set serving, runs its test cases (`cardinal
//! test`) against it, and swaps it in only when all of that succeeds. A rejected set is logged with
//! every error, counted, and shown on `/readyz`; the previous set keeps serving. Reloads never
//! overlap, and a burst of file events becomes one reload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::evaluator::Cardinal;
use crate::rule_set::{ReloadReport, ReloadResult, RuleSet, Trigger, content_version};
use crate::rule_tests;

/// Why the rules directory cannot be watched.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch the rules directory {path}: {source}")]
pub struct WatchError {
    path: String,
    #[source]
    source: notify::Error,
}

/// Reloads the rules directory now (blocking: it compiles and runs test cases). Serialised with
/// every other reload.
pub fn reload(cardinal: &Cardinal, trigger: Trigger) -> ReloadReport {
    let rule_sets = cardinal.rule_sets();
    let _one_at_a_time = rule_sets.serialise();
    let started = Instant::now();
    let serving = cardinal.rule_set();
    let (result, test_cases) = attempt(cardinal, &serving);
    let report = ReloadReport::new(trigger, result, started.elapsed(), test_cases);
    cardinal
        .metrics()
        .rule_set_reload(trigger.as_str(), report.result.as_str(), started.elapsed());
    log(&report);
    rule_sets.record(report.clone());
    report
}

/// [`reload`] on the blocking pool, for async callers (admin calls, the watcher, the signal).
pub async fn reload_async(cardinal: &Cardinal, trigger: Trigger) -> ReloadReport {
    let this = cardinal.clone();
    match tokio::task::spawn_blocking(move || reload(&this, trigger)).await {
        Ok(report) => report,
        Err(_) => {
            cardinal.metrics().panic("reload");
            let result = ReloadResult::Rejected {
                serving: cardinal.rule_set().version().to_owned(),
                errors: vec!["the reload failed unexpectedly".into()],
                affected_services: Vec::new(),
            };
            ReloadReport::new(trigger, result, Duration::ZERO, 0)
        }
    }
}

fn attempt(cardinal: &Cardinal, serving: &Arc<RuleSet>) -> (ReloadResult, usize) {
    let config = cardinal.config();
    let unchanged = || ReloadResult::Unchanged {
        version: serving.version().to_owned(),
    };
    let rejected = |errors: Vec<String>, affected_services: Vec<String>| ReloadResult::Rejected {
        serving: serving.version().to_owned(),
        errors,
        affected_services,
    };
    // Hashing is cheap next to compiling: most file events (an editor's temporary files, a
    // ConfigMap re-sync) change nothing.
    if content_version(&config.rules_dir).is_ok_and(|v| v == serving.version()) {
        return (unchanged(), 0);
    }
    let next = match RuleSet::load(config, cardinal.remote_terminology().cloned()) {
        Ok(set) => Arc::new(set),
        Err(errors) => {
            let affected = errors.affected_services();
            return (
                rejected(errors.0.iter().map(ToString::to_string).collect(), affected),
                0,
            );
        }
    };
    if next.version() == serving.version() {
        return (unchanged(), 0);
    }
    let (failures, cases) = run_test_cases(cardinal, &next);
    if !failures.is_empty() {
        let mut affected: Vec<String> = failures.iter().map(|(s, _)| s.clone()).collect();
        affected.sort();
        affected.dedup();
        return (
            rejected(failures.into_iter().map(|(_, e)| e).collect(), affected),
            cases,
        );
    }
    next.pre_expand();
    cardinal.rule_sets().swap(next.clone());
    (
        ReloadResult::Swapped {
            from: serving.version().to_owned(),
            to: next.version().to_owned(),
        },
        cases,
    )
}

/// Runs every test case below the new set's directory against it. Returns (service, error) for
/// every unreadable case file and failing case, and how many cases ran.
fn run_test_cases(cardinal: &Cardinal, next: &Arc<RuleSet>) -> (Vec<(String, String)>, usize) {
    let suites = match rule_tests::discover(next.dir()) {
        Ok(suites) => suites,
        Err(errors) => {
            return (
                errors
                    .iter()
                    .map(|e| (String::from("(test cases)"), e.to_string()))
                    .collect(),
                0,
            );
        }
    };
    let on_next = cardinal.detached(next.clone());
    let mut failures = Vec::new();
    let mut cases = 0;
    for suite in &suites {
        for case in &suite.cases {
            cases += 1;
            let result = rule_tests::run_case(&on_next, case, &suite.aliases);
            if !result.passed() {
                let what: Vec<String> = result.mismatches.iter().map(ToString::to_string).collect();
                failures.push((
                    case.service.clone(),
                    format!(
                        "{}: test case failed: {}",
                        next.relative_path(&case.path),
                        what.join("; ")
                    ),
                ));
            }
        }
    }
    (failures, cases)
}

/// Versions, counts and file locations only: test cases are synthetic, but their mismatch text
/// stays in `/readyz` and the admin answer, not in the log pipeline.
fn log(report: &ReloadReport) {
    match &report.result {
        ReloadResult::Swapped { from, to } => tracing::info!(
            trigger = report.trigger.as_str(),
            from = %from,
            to = %to,
            test_cases = report.test_cases,
            duration_ms = report.duration_ms,
            "rule set reloaded"
        ),
        ReloadResult::Unchanged { version } => tracing::debug!(
            trigger = report.trigger.as_str(),
            version = %version,
            "rule set unchanged"
        ),
        ReloadResult::Rejected {
            serving,
            errors,
            affected_services,
        } => {
            tracing::error!(
                trigger = report.trigger.as_str(),
                serving = %serving,
                errors = errors.len(),
                affected_services = ?affected_services,
                "rule set rejected; the previous set keeps serving"
            );
            for error in errors {
                // `file:line:column: message` or `case file: test case failed: ...`; the location
                // is what an informaticist needs to find it.
                let location = error.split(": ").next().unwrap_or_default();
                tracing::error!(location = %location, "rule set error");
            }
        }
    }
}

/// Watches the rules directory; keep the returned watcher alive as long as changes should reload.
/// Events are debounced: a reload starts once the directory has been quiet for `debounce`.
pub fn watch(
    cardinal: Cardinal,
    debounce: Duration,
) -> Result<notify::RecommendedWatcher, WatchError> {
    let dir = cardinal.config().rules_dir.clone();
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading files (our own reloads) must not trigger reloads.
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError {
        path: dir.display().to_string(),
        source,
    })?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|source| WatchError {
            path: dir.display().to_string(),
            source,
        })?;
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Quiet period: every further event restarts it.
            while let Ok(Some(())) = tokio::time::timeout(debounce, rx.recv()).await {}
            reload_async(&cardinal, Trigger::Watch).await;
        }
    });
    Ok(watcher)
}
