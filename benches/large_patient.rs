//! A ~1 MB order-sign request (the largest Synthea patient, shipped in
//! `tests/fixtures/synthea-large/`) against what serde needs just to validate the same bytes.
//!
//! The body is pretty-printed with `resourceType` first, as EHRs send FHIR. On it: (a) `serde_json::from_slice::<IgnoredAny>`, (b) the request parse as the HTTP
//! transport does it for the service, (c) parse + the whole `Cardinal::call` for
//! `opioidcds-04-05` and `opioidcds-10-order-sign`. A table of CPU time per run and its ratio to (a) is
//! printed first, then criterion times each. The body is also written to
//! `target/large-patient-order-sign.json`, for `cardinal bench --request` against a real server
//! (README, "Performance"). Run with `cargo bench --bench large_patient`.
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
use criterion::Criterion;
use serde_json::Value;

// As the server: allocation is a good part of reading a large patient.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/synthea.rs"]
#[allow(dead_code)]
mod synthea;

const SERVICES: [&str; 2] = ["opioidcds-04-05", "opioidcds-10-order-sign"];
const FIXTURE: &str =
    "tests/fixtures/synthea-large/Fletcher_Hyatt_fe0562b5-f517-4951-8366-32fdab088930.json.gz";
/// The draft order's signing date and the pinned evaluation time: answers do not drift with the
/// calendar.
const TODAY: &str = "2026-11-20";

fn project() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The request body as an EHR would send it: pretty-printed, `resourceType` first in every object
/// (FHIR's convention; `serde_json::Value` would sort it after `entry`).
fn body() -> Vec<u8> {
    let path = project().join(FIXTURE);
    let bundle = synthea::read_bundle(&path)
        .unwrap_or_else(|| panic!("{}: not a gzip FHIR Bundle", path.display()));
    let request = synthea::opioid_request(&bundle, "order-sign", TODAY)
        .unwrap_or_else(|| panic!("{}: no Patient", path.display()));
    let mut out = Vec::new();
    write_fhir(&request, 0, &mut out);
    out.push(b'\n');
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), request);
    out
}

/// `value` as pretty JSON (two-space indent) with `resourceType` first.
fn write_fhir(value: &Value, indent: usize, out: &mut Vec<u8>) {
    let pad = |out: &mut Vec<u8>, n: usize| out.extend(std::iter::repeat_n(b' ', n));
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by_key(|(k, _)| k.as_str() != "resourceType");
            out.extend_from_slice(b"{\n");
            for (i, (key, value)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n");
                }
                pad(out, indent + 2);
                out.extend(serde_json::to_vec(key).unwrap());
                out.extend_from_slice(b": ");
                write_fhir(value, indent + 2, out);
            }
            out.push(b'\n');
            pad(out, indent);
            out.push(b'}');
        }
        Value::Array(items) if !items.is_empty() => {
            out.extend_from_slice(b"[\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b",\n");
                }
                pad(out, indent + 2);
                write_fhir(item, indent + 2, out);
            }
            out.push(b'\n');
            pad(out, indent);
            out.push(b']');
        }
        leaf => out.extend(serde_json::to_vec(leaf).unwrap()),
    }
}

/// The parse the HTTP transport does for a call to `service`.
fn parse(cardinal: &Cardinal, service: &str, body: &[u8]) -> HookRequest {
    let service = cardinal.service(service).unwrap();
    HookRequest::from_json_bytes_for(body, &service.prefetch.reads())
        .unwrap_or_else(|e| panic!("{e}"))
}

/// This process's CPU time (user + system), from `/proc/self/stat`: unlike wall time, what other
/// processes on the machine do does not count, and every thread of the call (the blocking pool's)
/// does.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<u64> = after_name
        .split(' ')
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 after the name. Clock ticks of
    // 10 ms (USER_HZ on Linux).
    Duration::from_millis((fields[11] + fields[12]) * 10)
}

/// CPU time per run of `f`, over at least two seconds of runs (the clock ticks in 10 ms).
fn cpu_per_run(mut f: impl FnMut()) -> Duration {
    f();
    let started = Instant::now();
    let before = process_cpu();
    let mut runs = 0u32;
    while started.elapsed() < Duration::from_secs(2) || runs < 20 {
        f();
        runs += 1;
    }
    (process_cpu() - before) / runs
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let cardinal = Cardinal::load(Config {
        rules_dir: project().join("rules"),
        ..Config::default().development()
    })
    .unwrap_or_else(|e| panic!("rules failed to load:\n{e}"));
    let body = body();
    let saved = project().join("target/large-patient-order-sign.json");
    if let Err(e) = std::fs::write(&saved, &body) {
        eprintln!("{}: {e}", saved.display());
    }
    let options = || CallOptions {
        evaluation_time: cardinal::evaluator::parse_evaluation_time(TODAY),
        ..CallOptions::default()
    };
    let call = |service: &str| {
        let request = parse(&cardinal, service, &body);
        runtime
            .block_on(cardinal.call(service, request, options()))
            .unwrap_or_else(|e| panic!("{service}: {e}"))
    };
    for service in SERVICES {
        let evaluation = call(service);
        assert!(
            evaluation.response.extension.diagnostics.is_empty(),
            "{service}: rule errors {:?}",
            evaluation.response.extension.diagnostics
        );
    }

    let validate = cpu_per_run(|| {
        black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap());
    });
    eprintln!(
        "large patient: {} KB order-sign body; CPU time per run, ratio to IgnoredAny",
        body.len() / 1024
    );
    eprintln!(
        "  (a) serde IgnoredAny                 {:>8.0} us  1.00x",
        micros(validate)
    );
    for service in SERVICES {
        let parsed = cpu_per_run(|| {
            black_box(parse(&cardinal, service, &body));
        });
        let called = cpu_per_run(|| {
            black_box(call(service));
        });
        eprintln!(
            "  (b) parse for {service:<24} {:>8.0} us  {:.2}x",
            micros(parsed),
            micros(parsed) / micros(validate)
        );
        eprintln!(
            "  (c) parse + call {service:<21} {:>8.0} us  {:.2}x",
            micros(called),
            micros(called) / micros(validate)
        );
    }

    let mut group = c.benchmark_group("large_patient");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(30);
    group.bench_function("ignored_any", |b| {
        b.iter(|| black_box(serde_json::from_slice::<serde::de::IgnoredAny>(&body).unwrap()))
    });
    for service in SERVICES {
        group.bench_function(format!("{service}/parse"), |b| {
            b.iter(|| black_box(parse(&cardinal, service, &body)))
        });
        group.bench_function(format!("{service}/parse+call"), |b| {
            b.iter(|| black_box(call(service)))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
