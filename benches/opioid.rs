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
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal};
use cardinal::patient::PatientContext;
use criterion::{BatchSize, Criterion};

#[path = "../tests/support/synthea.rs"]
mod synthea;

const ORDER_SIGN_SERVICES: [&str; 9] = [
    "opioidcds-01",
    "opioidcds-02",
    "opioidcds-03",
    "opioidcds-04-05",
    "opioidcds-06",
    "opioidcds-07",
    "opioidcds-08",
    "opioidcds-09",
    "opioidcds-10-order-sign",
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

/// The opioid pack's order-hook test cases that expect cards or silence (not a refusal), read by the
/// same discovery `cardinal test` uses.
fn fixture_cases(cardinal: &Cardinal) -> Vec<Case> {
    let suites = cardinal::rule_tests::discover(&project().join("rules/opioid-cds"))
        .unwrap_or_else(|e| panic!("opioid test cases: {e:?}"));
    suites
        .into_iter()
        .flat_map(|suite| suite.cases)
        .filter(|case| case.expect.status == 200)
        .filter(|case| {
            cardinal
                .service(&case.service)
                .is_ok_and(|s| matches!(s.hook(), "order-sign" | "order-select"))
        })
        .map(|case| Case {
            name: case
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            body: serde_json::to_vec(&case.request).unwrap_or_default(),
            options: CallOptions {
                evaluation_time: case.evaluation_time(),
                ..CallOptions::default()
            },
            service: case.service,
        })
        .collect()
}

/// The largest Synthea patients, as order-sign requests signed today, when the corpus is present.
fn synthea_patients(limit: usize) -> Vec<(String, Vec<u8>)> {
    let bundles = synthea::load_bundles(limit);
    if bundles.is_empty() {
        eprintln!(
            "synthea: {} is absent; only the fixture cases are measured",
            synthea::corpus_dir().display()
        );
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    bundles
        .iter()
        .filter_map(|(name, bundle)| {
            let request = synthea::opioid_request(bundle, "order-sign", &today)?;
            Some((name.clone(), serde_json::to_vec(&request).ok()?))
        })
        .collect()
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
    // The test cases pin their evaluation time, as `serve --dev` allows.
    let cardinal = match Cardinal::load(Config {
        allow_evaluation_time_override: true,
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
    // The case `cardinal bench` loads the server with: the in-process figure the server's CPU per
    // call is compared with.
    if let Some(case) = cases
        .iter()
        .find(|c| c.name.contains("rec-04-05-mme-greater-than-fifty"))
    {
        group.bench_function("rec-04-05-mme-greater-than-fifty", |b| {
            b.iter(|| black_box(evaluate(case)))
        });
    }
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
