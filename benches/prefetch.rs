//! What fetching missing prefetch costs a hook call: `Cardinal::call` on the `chart` test service
//! (tests/fixtures/rules-prefetch, five keys) for a Synthea patient, with every key sent (the
//! baseline), with one key (the eGFR search) fetched, and with all five fetched, from the test FHIR
//! server (tests/fhir-server: Medplum's FHIR router, in-memory) on 127.0.0.1. The difference to the
//! baseline is the added latency; `fhir_get_egfr` is the same search sent directly by a plain client,
//! the server's and loopback's share of it.
//!
//! Run with `cargo bench --bench prefetch` after `bash .ci/fhir-server-setup.sh`.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal};
use criterion::Criterion;
use serde_json::{Map, Value, json};

#[allow(dead_code)]
#[path = "../tests/common/fhir_server.rs"]
mod fhir_server;

use fhir_server::{FhirServer, FhirServerOptions};

const TOKEN: &str = "bench-token";
const PATIENT: &str = "4ef9f896-10bc-4479-acd6-1153e7318f14";
const PRACTITIONER: &str = "79a13b7d-a382-4b6a-a31a-57e763818a56";
const EGFR: &str = "Observation?patient=4ef9f896-10bc-4479-acd6-1153e7318f14&code=http://loinc.org|33914-3,http://loinc.org|62238-1&_sort=-date";

pub fn project_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn request(fhir: &FhirServer, prefetch: &Map<String, Value>) -> HookRequest {
    HookRequest::from_value(json!({
        "hook": "patient-view",
        "hookInstance": "0b6f7d8e-2f3c-4f4e-9a51-7c1d2e3f4a5b",
        "fhirServer": fhir.base,
        "fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "cardinal-bench"},
        "context": {"userId": format!("Practitioner/{PRACTITIONER}"), "patientId": PATIENT},
        "prefetch": prefetch,
    }))
    .unwrap_or_else(|e| panic!("request: {e}"))
}

fn bench(c: &mut Criterion) {
    if !FhirServer::is_installed() {
        eprintln!(
            "prefetch bench skipped: run `bash .ci/fhir-server-setup.sh` first (tests/fhir-server has no node_modules)"
        );
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let fhir = FhirServer::start(
        &fhir_server::synthea_fixtures(),
        FhirServerOptions {
            token: Some(TOKEN.into()),
            ..FhirServerOptions::default()
        },
    );
    let cardinal = Cardinal::load(Config {
        rules_dir: project_path("tests/fixtures/rules-prefetch"),
        ..Config::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));

    let urls = [
        ("patient", format!("Patient/{PATIENT}")),
        ("egfr", EGFR.to_owned()),
        ("conditions", format!("Condition?patient={PATIENT}")),
        (
            "medications",
            format!("MedicationRequest?patient={PATIENT}"),
        ),
        ("practitioner", format!("Practitioner/{PRACTITIONER}")),
    ];
    let mut all = Map::new();
    runtime.block_on(async {
        for (key, url) in &urls {
            all.insert((*key).to_owned(), fhir.get(url, Some(TOKEN)).await);
        }
    });
    let mut four = all.clone();
    four.remove("egfr");
    let cases = [
        ("all_sent", request(&fhir, &all)),
        ("one_fetched", request(&fhir, &four)),
        ("five_fetched", request(&fhir, &Map::new())),
    ];
    let call = |request: &HookRequest| {
        let evaluation = runtime
            .block_on(cardinal.call("chart", request.clone(), CallOptions::default()))
            .unwrap_or_else(|e| panic!("call: {e}"));
        assert_eq!(evaluation.response.cards.len(), 1);
        evaluation
    };
    // Every case answers the same.
    let summaries: Vec<String> = cases
        .iter()
        .map(|(_, r)| call(r).response.cards[0].summary.clone())
        .collect();
    assert!(summaries.windows(2).all(|w| w[0] == w[1]), "{summaries:?}");

    let direct = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let egfr_url = format!("{}/{EGFR}", fhir.base);

    let mut group = c.benchmark_group("prefetch");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for (name, request) in &cases {
        group.bench_function(*name, |b| b.iter(|| black_box(call(request))));
    }
    group.bench_function("fhir_get_egfr", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let response = direct
                    .get(&egfr_url)
                    .bearer_auth(TOKEN)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
                black_box(response.bytes().await.unwrap_or_else(|e| panic!("{e}")))
            })
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
