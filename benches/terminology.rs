//! What one "is this code in the value set?" costs a rule, by where the answer comes from: a value
//! set shipped with the rules (local), a remote value set expanded at start-up, a remote answer
//! from the cache, and an uncached remote answer (`ValueSet/$validate-code` over loopback HTTP to
//! the test terminology server of `tests/support/`).
//!
//! Run with `cargo bench --bench terminology`.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

#[path = "../tests/support/terminology_server.rs"]
mod terminology_server;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cardinal::terminology::{
    LocalTerminology, RemoteSettings, RemoteTerminology, Terminology, TerminologyConfig,
    TerminologySource,
};
use criterion::Criterion;
use terminology_server::TerminologyServer;

const HYPERTENSION: &str =
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.104.12.1011";
const SNOMED: &str = "http://snomed.info/sct";

fn fixture_files() -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/terminology/valuesets");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    files
}

fn remote(server: &TerminologyServer) -> RemoteTerminology {
    RemoteTerminology::new(&RemoteSettings::new(&server.base_url))
        .unwrap_or_else(|e| panic!("remote: {e}"))
}

fn check(answer: Result<Option<bool>, cardinal::terminology::TerminologyError>) -> bool {
    match answer {
        Ok(Some(member)) => member,
        other => panic!("unexpected answer: {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let server = TerminologyServer::start();
    let deadline = Instant::now() + Duration::from_secs(3600);

    let local = LocalTerminology::load_files(&fixture_files()).unwrap_or_else(|e| panic!("{e:?}"));

    let pre_expanded = remote(&server);
    let report = pre_expanded.pre_expand(&[HYPERTENSION.to_owned()]);
    assert_eq!(report.value_sets, 1, "{report}");

    let cached = remote(&server);
    assert!(check(cached.validate_code(
        HYPERTENSION,
        SNOMED,
        "59621000",
        deadline
    )));

    // The whole resolution path: local first (does not know the value set), then remote (cached).
    let terminology = Terminology::from_config(
        &TerminologyConfig {
            remote: Some(RemoteSettings {
                pre_expand: false,
                ..RemoteSettings::new(&server.base_url)
            }),
            ..TerminologyConfig::default()
        },
        LocalTerminology::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let answer = terminology
        .validate_code(HYPERTENSION, SNOMED, "59621000", deadline)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.source, "remote");

    let uncached = remote(&server);

    let mut group = c.benchmark_group("membership");
    group.bench_function("local value set", |b| {
        b.iter(|| {
            check(local.validate_code(
                black_box(HYPERTENSION),
                black_box(SNOMED),
                black_box("59621000"),
                deadline,
            ))
        })
    });
    group.bench_function("remote, pre-expanded at start-up", |b| {
        b.iter(|| {
            check(pre_expanded.validate_code(
                black_box(HYPERTENSION),
                black_box(SNOMED),
                black_box("59621000"),
                deadline,
            ))
        })
    });
    group.bench_function("remote, cached answer", |b| {
        b.iter(|| {
            check(cached.validate_code(
                black_box(HYPERTENSION),
                black_box(SNOMED),
                black_box("59621000"),
                deadline,
            ))
        })
    });
    group.bench_function("Terminology local then remote, cached answer", |b| {
        b.iter(|| {
            terminology
                .validate_code(
                    black_box(HYPERTENSION),
                    black_box(SNOMED),
                    black_box("59621000"),
                    deadline,
                )
                .map(|m| m.member)
        })
    });
    // Every iteration asks about a code never asked before: one $validate-code round trip.
    let mut n = 0u64;
    group.bench_function("remote, uncached ($validate-code on loopback)", |b| {
        b.iter(|| {
            n += 1;
            let code = format!("bench-{n}");
            check(uncached.validate_code(HYPERTENSION, SNOMED, &code, deadline))
        })
    });
    group.finish();
    let stats = uncached.stats();
    println!(
        "uncached: {} remote calls, mean {:.0} µs, max {:.0} µs (request + answer as the client saw it)",
        stats.remote_calls,
        stats.remote_latency_sum.as_secs_f64() * 1e6 / stats.remote_latency_count.max(1) as f64,
        stats.remote_latency_max.as_secs_f64() * 1e6
    );
}

fn main() {
    let mut criterion = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    bench(&mut criterion);
    criterion.final_summary();
}
