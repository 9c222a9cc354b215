//! Firing report over the Synthea corpus (`../shared/data/synthea/`, 39 gzip bundles): every shipped
//! service on every patient, and a table of how often each service fired and where its rules stopped.
//!
//! Ignored by default (it reads a corpus outside the project and asserts nothing about clinical
//! content); run it with
//!
//! ```sh
//! cargo test --test synthea_firing -- --ignored --nocapture
//! ```
//!
//! How the requests are made, per patient ("now" is the start of the patient's latest encounter, the
//! visit at which a clinician would open the chart or sign an order):
//! - patient-view services get the whole record;
//! - order-select / order-sign services are called once per *active* MedicationRequest of the
//!   record, that order being the draft (status `draft`, removed from the record);
//! - and once more with a synthetic draft (30-day extended-release oxycodone, category community),
//!   so the opioid rules see an order they are about;
//! - and, reported apart, with that draft without `category`, as Synthea writes every order: which
//!   conditions the rules then cannot decide.
//!
//! Each prefetch key a service declares gets the record's resources of the type its template names
//! (`Patient/...` gets the Patient); search parameters are not applied, so the rules see a superset of
//! what a FHIR server would return and must do their own filtering.
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
use cardinal::explain::{ExplainReport, RuleVerdict};
use serde_json::{Value, json};

/// Per service: calls, calls with at least one card, cards, rule errors.
#[derive(Default)]
struct Counts {
    calls: usize,
    fired: usize,
    cards: usize,
    errors: usize,
}

/// The latest encounter start of the bundle, as `YYYY-MM-DD`.
fn last_visit(resources: &[Value]) -> Option<String> {
    resources
        .iter()
        .filter(|r| r["resourceType"] == "Encounter")
        .filter_map(|r| r["period"]["start"].as_str())
        .max()
        .map(|d| d.chars().take(10).collect())
}

fn searchset(resources: Vec<&Value>) -> Value {
    let entries: Vec<Value> = resources.iter().map(|r| json!({"resource": r})).collect();
    json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
}

/// The prefetch a service declares, filled from `record` by the resource type of each template.
fn prefetch_for(templates: &BTreeMap<String, String>, record: &[Value]) -> Value {
    let mut prefetch = serde_json::Map::new();
    for (key, template) in templates {
        let value = if template.starts_with("Patient/") {
            record
                .iter()
                .find(|r| r["resourceType"] == "Patient")
                .cloned()
                .unwrap_or(Value::Null)
        } else {
            let ty = template.split('?').next().unwrap_or_default();
            let mut types = vec![ty];
            if template.contains("_include=MedicationRequest:medication") {
                types.push("Medication");
            }
            searchset(
                record
                    .iter()
                    .filter(|r| types.iter().any(|t| r["resourceType"] == *t))
                    .collect(),
            )
        };
        prefetch.insert(key.clone(), value);
    }
    Value::Object(prefetch)
}

/// The synthetic opioid draft of `support/synthea.rs`.
fn oxycodone_draft(patient_id: &str, today: &str) -> Value {
    let bundle = json!({"entry": [{"resource": {"resourceType": "Patient", "id": patient_id}}]});
    let request = synthea::opioid_request(&bundle, "order-sign", today).unwrap();
    request["context"]["draftOrders"]["entry"][0]["resource"].clone()
}

#[test]
#[ignore = "reads ../shared/data/synthea; run with --ignored --nocapture for the firing table"]
fn synthea_firing_report() {
    let patients = synthea::load_bundles(usize::MAX);
    if patients.is_empty() {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !! NO SYNTHEA CORPUS at {}: nothing was run, no table was made.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            synthea::corpus_dir().display()
        );
        return;
    }
    let rules_dir = std::env::var_os("CARDINAL_REPORT_RULES")
        .map(Into::into)
        .unwrap_or_else(|| common::project_path("rules"));
    let cardinal = Cardinal::load(Config {
        rules_dir: rules_dir.clone(),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("rules: {e}"));
    let services: Vec<(String, String, BTreeMap<String, String>)> = cardinal
        .registry()
        .services()
        .map(|s| {
            let templates = s
                .manifest
                .prefetch
                .iter()
                .map(|(k, v)| (k.clone(), v.get_ref().clone()))
                .collect();
            (s.id().to_owned(), s.hook().to_owned(), templates)
        })
        .collect();

    let mut counts: BTreeMap<String, Counts> = BTreeMap::new();
    // (service, rule) -> condition that stopped it -> count
    let mut stops: BTreeMap<(String, String), BTreeMap<String, usize>> = BTreeMap::new();
    // (service, rule, condition) -> undecided elements -> count
    let mut unknowns: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    // The pass with the synthetic draft without category, per service.
    let mut uncategorized: BTreeMap<String, Counts> = BTreeMap::new();
    let mut active_orders = 0;
    for (_, bundle) in &patients {
        let record: Vec<Value> = bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"].clone())
            .collect();
        let Some(patient) = record.iter().find(|r| r["resourceType"] == "Patient") else {
            continue;
        };
        let patient_id = patient["id"].as_str().unwrap_or_default().to_owned();
        let Some(today) = last_visit(&record) else {
            continue;
        };
        let options = CallOptions {
            evaluation_time: parse_evaluation_time(&today),
            ..CallOptions::default()
        };
        let actives: Vec<&Value> = record
            .iter()
            .filter(|r| r["resourceType"] == "MedicationRequest" && r["status"] == "active")
            .collect();
        active_orders += actives.len();
        for (service, hook, templates) in &services {
            // (draft order, record without it, counted apart); `None` for patient-view.
            let mut calls: Vec<(Option<Value>, Vec<Value>, bool)> = Vec::new();
            if hook == "patient-view" {
                calls.push((None, record.clone(), false));
            } else {
                for order in &actives {
                    let mut draft = (*order).clone();
                    draft["status"] = json!("draft");
                    let rest = record
                        .iter()
                        .filter(|r| {
                            !(r["resourceType"] == "MedicationRequest" && r["id"] == order["id"])
                        })
                        .cloned()
                        .collect();
                    calls.push((Some(draft), rest, false));
                }
                let draft = oxycodone_draft(&patient_id, &today);
                calls.push((Some(draft.clone()), record.clone(), false));
                let mut bare = draft;
                bare.as_object_mut().unwrap().remove("category");
                calls.push((Some(bare), record.clone(), true));
            }
            for (draft, rest, apart) in calls {
                let mut context =
                    json!({"userId": "Practitioner/example", "patientId": patient_id});
                if let Some(draft) = &draft {
                    context["draftOrders"] = json!({"resourceType": "Bundle", "type": "collection",
                        "entry": [{"resource": draft}]});
                    if hook == "order-select" {
                        context["selections"] = json!([format!(
                            "MedicationRequest/{}",
                            draft["id"].as_str().unwrap_or_default()
                        )]);
                    }
                }
                let body = json!({
                    "hook": hook,
                    "hookInstance": "0b9e3b0e-6c3e-4d36-9f63-1c1e7a0f2b11",
                    "context": context,
                    "prefetch": prefetch_for(templates, &rest),
                });
                let request = HookRequest::from_value(body).unwrap_or_else(|e| panic!("{e}"));
                let entry = if apart {
                    uncategorized.entry(service.clone()).or_default()
                } else {
                    counts.entry(service.clone()).or_default()
                };
                entry.calls += 1;
                let evaluation = match cardinal.evaluate(service, request, options.clone()) {
                    Ok(e) => e,
                    Err(e) => panic!("{service}: refused: {e}"),
                };
                let cards = evaluation.response.cards.len();
                entry.cards += cards;
                entry.fired += usize::from(cards > 0);
                entry.errors += evaluation.response.extension.diagnostics.len();
                let report = ExplainReport::new(&cardinal, &evaluation);
                for rule in &report.rules {
                    if rule.verdict != RuleVerdict::NotFired {
                        continue;
                    }
                    let pass = if apart {
                        " (draft without category)"
                    } else {
                        ""
                    };
                    let stop = rule
                        .failed_condition
                        .clone()
                        .unwrap_or_else(|| "(finished without a card)".into());
                    *stops
                        .entry((format!("{service}{pass}"), rule.rule_id.clone()))
                        .or_default()
                        .entry(stop)
                        .or_default() += 1;
                    for c in &rule.conditions {
                        if !c.unknown.is_empty() {
                            let key = (
                                format!("{service}{pass}"),
                                rule.rule_id.clone(),
                                format!("{} [{}]", c.name, c.unknown.join(", ")),
                            );
                            *unknowns.entry(key).or_default() += 1;
                        }
                    }
                }
            }
        }
    }

    println!(
        "\nSynthea firing report: {} patients, {} active MedicationRequests (each one a draft), rules {}\n",
        patients.len(),
        active_orders,
        rules_dir.display()
    );
    println!("| service | hook | calls | calls with a card | cards | rule errors |");
    println!("|---|---|---:|---:|---:|---:|");
    for (service, hook, _) in &services {
        let c = counts
            .get(service)
            .unwrap_or(&Counts::default())
            .clone_counts();
        println!(
            "| {service} | {hook} | {} | {} | {} | {} |",
            c.calls, c.fired, c.cards, c.errors
        );
    }
    println!(
        "\nThe synthetic oxycodone draft without `category` (as Synthea writes orders), per order service:\n"
    );
    println!("| service | calls | calls with a card | cards | rule errors |");
    println!("|---|---:|---:|---:|---:|");
    for (service, c) in &uncategorized {
        println!(
            "| {service} | {} | {} | {} | {} |",
            c.calls, c.fired, c.cards, c.errors
        );
    }
    println!("\nWhere rules stopped (not fired), by the condition that stopped them:\n");
    println!("| service | rule | condition | calls |");
    println!("|---|---|---|---:|");
    for ((service, rule), conditions) in &stops {
        for (condition, n) in conditions {
            println!("| {service} | {rule} | {condition} | {n} |");
        }
    }
    println!("\nConditions undecided because data was absent (`unknown`), with the elements:\n");
    println!("| service | rule | condition [absent elements] | calls |");
    println!("|---|---|---|---:|");
    for ((service, rule, condition), n) in &unknowns {
        println!("| {service} | {rule} | {condition} | {n} |");
    }
    if unknowns.is_empty() {
        println!("| (none) | | | |");
    }
}

impl Counts {
    fn clone_counts(&self) -> Counts {
        Counts {
            calls: self.calls,
            fired: self.fired,
            cards: self.cards,
            errors: self.errors,
        }
    }
}
