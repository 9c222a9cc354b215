//! The CDC opioid pack's order services on real requests.
//!
//! - `fixtures`: every order-select/order-sign test case of `rules/opioid-cds/tests/` (the guide's
//!   cases, converted), parse + evaluate, one iteration = all cases;
//! - `synthea`: larger Synthea patients from `../shared/data/synthea/` (when present), each with an
//!   extended-release oxycodone draft order, through every opioid order-sign service: parse, and
//!   evaluate (index + rules + cards) measured apart.
//!
//! Before timing, a breakdown of one evaluation per service is printed (parse, index, each rule), so
//! the report says which part dominates. Run with `cargo bench --bench opioid`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal, parse_evaluation_time};
use cardinal::patient::PatientContext;
use criterion::{BatchSize, Criterion};
use serde_json::{Value, json};

const ORDER_SIGN_SERVICES: [&str; 10] = [
    "opioidcds-01",
    "opioidcds-02",
    "opioidcds-03",
    "opioidcds-04-05",
    "opioidcds-06",
    "opioidcds-07",
    "opioidcds-08",
    "opioidcds-09",
    "opioidcds-10-order-sign",
    "opioidcds-08-order-sign",
];

struct Case {
    name: String,
    service: String,
    body: Vec<u8>,
    options: CallOptions,
}

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture_cases(cardinal: &Cardinal) -> Vec<Case> {
    let dir = project().join("rules/opioid-cds/tests");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    paths.sort();
    let mut cases = Vec::new();
    for path in paths
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
    {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let Ok(case) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let Some(service) = case["service"].as_str() else {
            continue;
        };
        let Ok(found) = cardinal.service(service) else {
            continue;
        };
        if !matches!(found.hook(), "order-sign" | "order-select") {
            continue;
        }
        if case["expect"]["status"].as_u64().is_some_and(|s| s != 200) {
            continue;
        }
        let at = case["evaluation_time"]
            .as_str()
            .and_then(parse_evaluation_time);
        cases.push(Case {
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            service: service.to_owned(),
            body: serde_json::to_vec(&case["request"]).unwrap_or_default(),
            options: CallOptions {
                evaluation_time: at,
                ..CallOptions::default()
            },
        });
    }
    cases
}

/// A Synthea transaction bundle as the opioid services' prefetch, plus a 30-day extended-release
/// oxycodone draft order (RxNorm 1049502), signed now.
fn synthea_request(bundle: &Value) -> Option<Vec<u8>> {
    let mut by_type: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for entry in bundle["entry"].as_array()? {
        let resource = &entry["resource"];
        if let Some(ty) = resource["resourceType"].as_str() {
            by_type.entry(ty).or_default().push(resource);
        }
    }
    let patient = *by_type.get("Patient")?.first()?;
    let patient_id = patient["id"].as_str()?;
    let search = |types: &[&str]| {
        let entries: Vec<Value> = types
            .iter()
            .flat_map(|t| by_type.get(t).into_iter().flatten())
            .map(|r| json!({"resource": r}))
            .collect();
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
    };
    let draft = json!({
        "resourceType": "MedicationRequest", "id": "draft-oxycodone", "status": "draft", "intent": "order",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/medicationrequest-category", "code": "community"}]}],
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1049502",
            "display": "12 HR Oxycodone Hydrochloride 10 MG Extended Release Oral Tablet"}]},
        "subject": {"reference": format!("Patient/{patient_id}")},
        "authoredOn": chrono::Utc::now().format("%Y-%m-%d").to_string(),
        "dosageInstruction": [{"timing": {"repeat": {"frequency": 2, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet", "system": "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm", "code": "TAB"}}]}],
        "dispenseRequest": {"expectedSupplyDuration": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"}}
    });
    let request = json!({
        "hook": "order-sign",
        "hookInstance": "4cf01c0b-4a1d-4f5c-b2a4-4e0d5d3a7f10",
        "context": {"userId": "Practitioner/example", "patientId": patient_id,
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": draft}]}},
        "prefetch": {
            "patient": patient,
            "conditions": search(&["Condition"]),
            "encounters": search(&["Encounter"]),
            "medicationRequests": search(&["MedicationRequest", "Medication"]),
            "medicationDispenses": search(&["MedicationDispense"]),
            "procedures": search(&["Procedure"]),
            "observations": search(&["Observation"]),
            "carePlans": search(&["CarePlan"]),
        }
    });
    serde_json::to_vec(&request).ok()
}

/// The largest Synthea patients (by compressed size), when the corpus is present.
fn synthea_patients(limit: usize) -> Vec<(String, Vec<u8>)> {
    let dir = project().join("../shared/data/synthea");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        eprintln!(
            "synthea: {} is absent; only the fixture cases are measured",
            dir.display()
        );
        return Vec::new();
    };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.metadata().ok()?.len(), e.path())))
        .filter(|(_, p)| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    files.reverse();
    let mut out = Vec::new();
    for (_, path) in files.into_iter().take(limit) {
        let mut text = String::new();
        let Ok(file) = std::fs::File::open(&path) else {
            continue;
        };
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_err()
        {
            continue;
        }
        let Ok(bundle) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .split('_')
                    .take(2)
                    .collect::<Vec<_>>()
                    .join("_")
            })
            .unwrap_or_default();
        if let Some(body) = synthea_request(&bundle) {
            out.push((name, body));
        }
    }
    out
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One evaluation per service, timed by part, printed as a table.
fn breakdown(cardinal: &Cardinal, label: &str, body: &[u8]) {
    let started = Instant::now();
    let request = match HookRequest::from_json_bytes(body) {
        Ok(r) => r,
        Err(e) => panic!("{label}: {e}"),
    };
    let parse = started.elapsed();
    let index_started = Instant::now();
    drop(black_box(PatientContext::build(
        request.context.clone(),
        request.prefetch.clone(),
    )));
    let index = index_started.elapsed();
    eprintln!(
        "{label}: {} KB, parse {:.0} us, index {:.0} us",
        body.len() / 1024,
        micros(parse),
        micros(index)
    );
    for service in ORDER_SIGN_SERVICES {
        let request = request.clone();
        let evaluation = match cardinal.evaluate(service, request, CallOptions::default()) {
            Ok(e) => e,
            Err(e) => panic!("{label} {service}: {e}"),
        };
        let rules: Vec<String> = evaluation
            .outcomes
            .iter()
            .map(|o| {
                format!(
                    "{} {} {:.0} us",
                    o.rule_id,
                    o.verdict.as_str(),
                    micros(o.duration)
                )
            })
            .collect();
        eprintln!(
            "  {service}: evaluate {:.0} us ({}), {} cards",
            micros(evaluation.duration),
            rules.join(", "),
            evaluation.response.cards.len()
        );
    }
}

fn benches(c: &mut Criterion) {
    let cardinal = match Cardinal::load(Config {
        rules_dir: project().join("rules"),
        ..Config::default()
    }) {
        Ok(c) => c,
        Err(e) => panic!("rules failed to load:\n{e}"),
    };
    let cases = fixture_cases(&cardinal);
    assert!(
        !cases.is_empty(),
        "no opioid order test cases in rules/opioid-cds/tests"
    );
    let evaluate = |case: &Case| {
        let request = HookRequest::from_json_bytes(&case.body)
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        cardinal
            .evaluate(&case.service, request, case.options.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", case.name))
    };
    for case in &cases {
        let evaluation = evaluate(case);
        assert!(
            evaluation.response.extension.diagnostics.is_empty(),
            "{}: rule errors {:?}",
            case.name,
            evaluation.response.extension.diagnostics
        );
    }
    let mut group = c.benchmark_group("fixtures");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(format!("all {} order cases", cases.len()), |b| {
        b.iter(|| {
            for case in &cases {
                black_box(evaluate(case));
            }
        })
    });
    group.finish();

    let patients = synthea_patients(3);
    for (name, body) in &patients {
        breakdown(&cardinal, name, body);
    }
    let mut group = c.benchmark_group("synthea");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    for (name, body) in &patients {
        group.bench_function(format!("{name}/parse"), |b| {
            b.iter(|| black_box(HookRequest::from_json_bytes(body)))
        });
        let request = HookRequest::from_json_bytes(body).unwrap_or_else(|e| panic!("{name}: {e}"));
        for service in ["opioidcds-04-05", "opioidcds-10-order-sign"] {
            group.bench_function(format!("{name}/{service}/evaluate"), |b| {
                b.iter_batched(
                    || request.clone(),
                    |r| black_box(cardinal.evaluate(service, r, CallOptions::default())),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
