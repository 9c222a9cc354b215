//! Optional corpus run: every service of the opioid pack on every Synthea patient of
//! `../shared/data/synthea/` (when present). Real-world records exercise paths the guide's test cases
//! do not (missing fields, other units, many resources): no rule may fail on them.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;
#[path = "support/synthea.rs"]
mod synthea;

use std::collections::BTreeMap;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal, parse_evaluation_time};

#[test]
fn every_opioid_service_runs_without_rule_errors_on_the_synthea_corpus() {
    let patients = synthea::load_bundles(usize::MAX);
    if patients.is_empty() {
        eprintln!(
            "SKIPPED: the Synthea corpus ({}) is absent; the opioid pack's own test cases cover it",
            synthea::corpus_dir().display()
        );
        return;
    }
    let cardinal = Cardinal::load(Config {
        rules_dir: common::project_path("rules"),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("rules: {e}"));
    let today = "2026-11-20";
    let options = CallOptions {
        evaluation_time: parse_evaluation_time(today),
        ..CallOptions::default()
    };
    let mut cards: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    for (name, bundle) in &patients {
        for service in common::OPIOID_SERVICES {
            let hook = cardinal.service(service).map(|s| s.hook().to_owned());
            let hook = hook.unwrap_or_else(|e| panic!("{e}"));
            let Some(body) = synthea::opioid_request(bundle, &hook, today) else {
                failures.push(format!("{name}: no Patient in the bundle"));
                continue;
            };
            let request = HookRequest::from_value(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            match cardinal.evaluate(service, request, options.clone()) {
                Ok(evaluation) => {
                    *cards.entry(service).or_default() += evaluation.response.cards.len();
                    for d in &evaluation.response.extension.diagnostics {
                        failures.push(format!(
                            "{name} {service}: rule {} {} at {:?}:{:?}: {}",
                            d.rule_id, d.kind, d.line, d.column, d.message
                        ));
                    }
                }
                Err(e) => failures.push(format!("{name} {service}: refused: {e}")),
            }
        }
    }
    eprintln!(
        "{} Synthea patients; cards per service: {cards:?}",
        patients.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The draft order is an adult's opioid: the order services must have found something to say.
    assert!(cards.get("hello-world-patient-view") == Some(&patients.len()));
}
