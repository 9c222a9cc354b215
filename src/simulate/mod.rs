//! `cardinal simulate`: a dress rehearsal of a rule set on a population before it goes live.
//!
//! Before a rule goes live informaticists ask how often it will fire, for whom, whether that is fair,
//! and whether it can see the data it needs. For each patient ([`input`], [`record`]) every service
//! runs as an EHR would call it: `patient-view` once; `order-select` and `order-sign` once per
//! medication request active on the simulated day, as the draft order; prefetch answered from the
//! patient's record by the service's own templates ([`search`]). Evaluation is the service's, on one
//! rule-set snapshot, with budgets in operations only (no wall-clock limit), so the same population
//! gives the same figures on any machine and at any load. Counts ([`tally`]) add up across workers and
//! shards; [`report`] derives rates, intervals, disparities and blind spots from them.

pub mod command;
pub mod input;
pub mod record;
pub mod report;
pub mod search;
pub mod tally;

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::cds_hooks::HookRequest;
use crate::config::Config;
use crate::engine::{RuleMode, Verdict};
use crate::evaluator::{CallOptions, Cardinal};
use crate::fhir::{Prefetch, Resource};
use crate::registry::{CdsService, LoadErrors};
use crate::rule_set::RuleSet;

pub use command::{CommandError, SimulateArgs};
pub use input::{InputError, Shard};
pub use record::PatientRecord;
pub use tally::Tally;

/// Why a simulation could not run at all (a patient that cannot be read is reported, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("the rule set does not load:\n{0}")]
    Rules(#[from] LoadErrors),
    #[error("cannot read the patients at {path}: {source}")]
    Patients {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration (rules directory, terminology); its wall-clock limits are lifted.
    pub config: Config,
    pub patients: PathBuf,
    pub at: DateTime<Utc>,
    pub shard: Shard,
    /// Worker threads (default: every core).
    pub threads: usize,
    /// A progress line on stderr (only when stderr is a terminal).
    pub progress: bool,
}

/// The user every simulated call is made as.
const SIMULATION_USER: &str = "Practitioner/cardinal-simulation";

/// Hooks the simulation knows how to call from a patient's record.
const SIMULATED_HOOKS: &[&str] = &["patient-view", "order-select", "order-sign"];

enum Job {
    Bundle(PathBuf),
    Record(Box<PatientRecord>),
}

/// Runs the simulation and returns its counts.
pub fn run(options: &Options) -> Result<Tally, SimulateError> {
    let mut config = options.config.clone();
    config.allow_evaluation_time_override = true;
    // Determinism: budgets in operations only. The backstop stays as a last resort for work no
    // operation counts (an hour), never as a limit a loaded machine would hit.
    config.sandbox.backstop_ms = 3_600_000;
    let cardinal = Cardinal::load(config)?;
    let rule_set = cardinal.rule_set();
    let inputs = input::discover(&options.patients, options.shard).map_err(|source| {
        SimulateError::Patients {
            path: options.patients.display().to_string(),
            source,
        }
    })?;
    let mut total = Tally {
        at: options
            .at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        rule_set: rule_set.version().to_owned(),
        shards: BTreeSet::from([format!("{}/{}", options.shard.index, options.shard.count)]),
        ..Tally::default()
    };
    // Largest files first: the workers finish together instead of one waiting on the biggest.
    let mut bundles = inputs.bundles;
    bundles.sort_by_cached_key(|p| std::cmp::Reverse(std::fs::metadata(p).map_or(0, |m| m.len())));
    let mut jobs: Vec<Job> = bundles.into_iter().map(Job::Bundle).collect();
    if !inputs.ndjson.is_empty() {
        let (records, errors) = input::read_ndjson(&inputs.ndjson, options.shard, options.at);
        total.input_errors.extend(errors);
        jobs.extend(records.into_iter().map(|r| Job::Record(Box::new(r))));
    }
    let count = jobs.len();
    let queue = Mutex::new(jobs.into_iter());
    let done = AtomicUsize::new(0);
    let finished = AtomicBool::new(false);
    let threads = options.threads.max(1);
    let parts: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut part = Tally::default();
                    loop {
                        let job = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                        let Some(job) = job else { break };
                        let record = match job {
                            Job::Bundle(path) => input::read_bundle(&path, options.at),
                            Job::Record(record) => Ok(*record),
                        };
                        match record {
                            Ok(record) => simulate_patient(
                                &cardinal, &rule_set, &record, options.at, &mut part,
                            ),
                            Err(e) => part.input_errors.push(e),
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    part
                })
            })
            .collect();
        if options.progress && std::io::stderr().is_terminal() {
            scope.spawn(|| {
                while !finished.load(Ordering::Relaxed) {
                    eprint!("\r{} / {count} patients", done.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(200));
                }
                eprintln!("\r{count} / {count} patients");
            });
        }
        let parts = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect();
        finished.store(true, Ordering::Relaxed);
        parts
    });
    for part in &parts {
        total.absorb(part);
    }
    Ok(total)
}

/// The medication requests in force on the simulated day: each becomes a draft order.
fn active_orders(record: &PatientRecord, at: DateTime<Utc>) -> Vec<Resource> {
    record
        .resources
        .iter()
        .filter(|r| r.resource_type() == "MedicationRequest")
        .filter(|r| r.status() == Some("active"))
        .filter(|r| r.instant().is_none_or(|t| t <= at))
        .cloned()
        .collect()
}

/// One simulated call's context, and the resource kept out of the record (its draft order).
fn calls_for(
    service: &CdsService,
    record: &PatientRecord,
    orders: &[Resource],
) -> Vec<(Map<String, Value>, Option<String>)> {
    let mut base = Map::new();
    base.insert("userId".into(), Value::from(SIMULATION_USER));
    base.insert("patientId".into(), Value::from(record.patient_id.clone()));
    match service.hook() {
        "order-select" | "order-sign" => orders
            .iter()
            .map(|order| {
                let mut draft = order.json().clone();
                if let Some(object) = draft.as_object_mut() {
                    object.insert("status".into(), Value::from("draft"));
                }
                let reference = order.reference();
                let mut context = base.clone();
                if service.hook() == "order-select" {
                    context.insert("selections".into(), json!([reference.clone()]));
                }
                context.insert(
                    "draftOrders".into(),
                    json!({"resourceType": "Bundle", "type": "collection",
                           "entry": [{"resource": draft}]}),
                );
                (context, reference)
            })
            .collect(),
        _ => vec![(base, None)],
    }
}

/// What one patient did to one rule, over all of the patient's calls.
#[derive(Default)]
struct RuleSeen {
    version: String,
    mode: String,
    calls: u64,
    fired_calls: u64,
    cards: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    stopped_by: BTreeMap<String, u64>,
    unknown_elements: BTreeSet<String>,
    disagreements: u64,
}

fn simulate_patient(
    cardinal: &Cardinal,
    rule_set: &Arc<RuleSet>,
    record: &PatientRecord,
    at: DateTime<Utc>,
    tally: &mut Tally,
) {
    tally.patients.add_patient(&record.demographics);
    let orders = active_orders(record, at);
    for service in rule_set.registry().services() {
        if !SIMULATED_HOOKS.contains(&service.hook()) {
            continue;
        }
        let calls = calls_for(service, record, &orders);
        if calls.is_empty() {
            continue;
        }
        let mut fired = false;
        let mut rules: BTreeMap<String, RuleSeen> = BTreeMap::new();
        for (n, (context, draft)) in calls.into_iter().enumerate() {
            let resources: Vec<Resource> = record
                .resources
                .iter()
                .filter(|r| draft.is_none() || r.reference() != draft)
                .cloned()
                .collect();
            let mut prefetch = Prefetch::new();
            for key in service.prefetch.keys() {
                let Ok(url) = key.template.render(&context) else {
                    continue;
                };
                let answer = search::answer(&url, &record.patient, &resources);
                for parameter in answer.unsupported {
                    *tally.unsupported_searches.entry(parameter).or_default() += 1;
                }
                prefetch.insert(key.key.clone(), answer.value);
            }
            let request = HookRequest {
                hook: service.hook().to_owned(),
                hook_instance: format!("simulation-{}-{n}", record.patient_id),
                fhir_server: None,
                fhir_authorization: None,
                context,
                prefetch,
                ignored_prefetch: Vec::new(),
                extension: None,
            };
            let options = CallOptions {
                evaluation_time: Some(at),
                rule_set: Some(rule_set.clone()),
                ..CallOptions::default()
            };
            tally.calls += 1;
            let service_tally = tally.services.entry(service.id().to_owned()).or_default();
            service_tally.calls += 1;
            let evaluation = match cardinal.evaluate(service.id(), request, options) {
                Ok(evaluation) => evaluation,
                Err(e) => {
                    tally.evaluation_errors.push(tally::EvaluationError {
                        source: record.source.clone(),
                        service: service.id().to_owned(),
                        rule: String::new(),
                        kind: format!("refused ({})", e.http_status()),
                    });
                    continue;
                }
            };
            fired |= !evaluation.response.cards.is_empty();
            for d in &evaluation.disagreements {
                rules.entry(d.rule_id.clone()).or_default().disagreements += 1;
            }
            for outcome in &evaluation.outcomes {
                let key = match outcome.mode {
                    RuleMode::Candidate => format!("{}@candidate", outcome.rule_id),
                    _ => outcome.rule_id.clone(),
                };
                let seen = rules.entry(key).or_default();
                seen.version.clone_from(&outcome.rule_version);
                seen.mode = outcome.mode.as_str().to_owned();
                seen.calls += 1;
                match &outcome.verdict {
                    Verdict::Fired => {
                        seen.fired_calls += 1;
                        for card in &outcome.cards {
                            *seen
                                .cards
                                .entry(card.indicator.as_str().to_owned())
                                .or_default() += 1;
                        }
                    }
                    Verdict::NotFired => {
                        let (condition, unknown) = stop_reason(outcome);
                        *seen.stopped_by.entry(condition).or_default() += 1;
                        seen.unknown_elements.extend(unknown);
                    }
                    Verdict::Error(e) => {
                        *seen.errors.entry(e.kind.as_str().to_owned()).or_default() += 1;
                        tally.evaluation_errors.push(tally::EvaluationError {
                            source: record.source.clone(),
                            service: service.id().to_owned(),
                            rule: outcome.rule_id.clone(),
                            kind: e.kind.as_str().to_owned(),
                        });
                    }
                }
            }
        }
        let service_tally = tally.services.entry(service.id().to_owned()).or_default();
        service_tally.hook = service.hook().to_owned();
        service_tally.evaluated.add_patient(&record.demographics);
        if fired {
            service_tally.fired.add_patient(&record.demographics);
        }
        for (key, seen) in rules {
            let rule = service_tally.rules.entry(key.clone()).or_default();
            rule.rule_id = key.trim_end_matches("@candidate").to_owned();
            rule.version = seen.version;
            rule.mode = seen.mode;
            rule.evaluated.add_patient(&record.demographics);
            if seen.fired_calls > 0 {
                rule.fired.add_patient(&record.demographics);
            }
            rule.calls += seen.calls;
            rule.fired_calls += seen.fired_calls;
            rule.disagreements += seen.disagreements;
            for (k, n) in seen.cards {
                *rule.cards.entry(k).or_default() += n;
            }
            for (k, n) in seen.errors {
                *rule.errors.entry(k).or_default() += n;
            }
            for (k, n) in seen.stopped_by {
                *rule.stopped_by.entry(k).or_default() += n;
            }
            for element in seen.unknown_elements {
                *rule.unknown_elements.entry(element).or_default() += 1;
            }
        }
    }
}

/// The condition that stopped a rule that did not fire (`finished without a card` when none did),
/// and, when it could not be decided, the absent elements that left it so: a rule that is blind
/// rather than silent.
fn stop_reason(outcome: &crate::engine::RuleOutcome) -> (String, Vec<String>) {
    match outcome.conditions.iter().find(|c| !c.met) {
        Some(condition) if condition.is_unknown() => (
            format!("{} (unknown: data absent)", condition.name),
            condition.unknown.clone(),
        ),
        Some(condition) => (condition.name.clone(), Vec::new()),
        None => ("finished without a card".to_owned(), Vec::new()),
    }
}
