//! Deterministic rule budgets: work is counted in operations, so the same request gets the same
//! cards on an idle and on a saturated machine; native helpers charge their work, so a loop over a
//! large native scan is stopped by the operation limit; and work nothing counts is stopped by the
//! wall-clock backstop. Everything runs in-process through `Cardinal::evaluate`, the servers' path.
// Test code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::engine::Verdict;
use cardinal::evaluator::{CallOptions, Cardinal, Evaluation, parse_evaluation_time};
use common::{project_path, request_fixture};
use serde_json::Value;

/// A request to evaluate: service, body, pinned evaluation time.
#[derive(Clone)]
struct Call {
    service: String,
    request: Value,
    options: CallOptions,
}

fn evaluate(cardinal: &Cardinal, call: &Call) -> Evaluation {
    let request = HookRequest::from_value(call.request.clone()).expect("valid request");
    cardinal
        .evaluate(&call.service, request, call.options.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", call.service))
}

/// What a clinician sees, minus what legitimately differs per call (uuids, trace ids): the
/// response as JSON without those keys, plus each rule's verdict and operation count.
fn fingerprint(evaluation: &Evaluation) -> String {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|k, _| !matches!(k.as_str(), "uuid" | "traceId" | "trace_id"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut response = serde_json::to_value(&evaluation.response).expect("response as JSON");
    strip(&mut response);
    let rules: Vec<String> = evaluation
        .outcomes
        .iter()
        .map(|o| format!("{} {} {}", o.rule_id, o.verdict.as_str(), o.operations))
        .collect();
    format!("{response}\n{rules:?}")
}

fn pinned(date: &str) -> CallOptions {
    CallOptions {
        evaluation_time: parse_evaluation_time(date),
        ..CallOptions::default()
    }
}

/// The opioid MME case (`opioidcds-04-05`, the warning card that went missing under load) and the
/// starter packs' request fixtures.
fn calls() -> Vec<Call> {
    let suites = cardinal::rule_tests::discover(&project_path("rules/opioid-cds"))
        .unwrap_or_else(|e| panic!("opioid test cases: {e:?}"));
    let mme = suites
        .into_iter()
        .flat_map(|suite| suite.cases)
        .find(|case| case.path.ends_with("rec-04-05-mme-greater-than-fifty.json"))
        .expect("the rec-04-05 MME case");
    let mut calls = vec![Call {
        service: mme.service.clone(),
        options: CallOptions {
            evaluation_time: mme.evaluation_time(),
            ..CallOptions::default()
        },
        request: mme.request,
    }];
    for (fixture, service) in [
        ("metformin-egfr-low", "metformin-renal"),
        ("warfarin-active-ibuprofen-ordered", "warfarin-nsaid"),
        ("ibuprofen-ordered-no-warfarin", "warfarin-nsaid"),
        ("patient-view-greeting", "patient-greeting"),
    ] {
        calls.push(Call {
            service: service.into(),
            request: request_fixture(fixture),
            options: pinned("2026-11-01"),
        });
    }
    calls
}

#[test]
fn the_same_requests_get_the_same_cards_on_a_saturated_machine() {
    // Shipped limits, except the wall-clock backstop: this test build is unoptimised and shares the
    // machine, and the backstop is the one limit that is time by design (it stops only work nothing
    // counts, far above a normal call in a release build).
    let mut config = Config::default().development();
    config.sandbox.backstop_ms = 30_000;
    let cardinal = Cardinal::load(config).unwrap_or_else(|e| panic!("{e}"));
    let calls = calls();
    let idle: Vec<String> = calls
        .iter()
        .map(|c| fingerprint(&evaluate(&cardinal, c)))
        .collect();
    // The MME warning is the card that went missing under load.
    assert!(
        idle[0].contains("\"indicator\":\"warning\"") && idle[0].contains("total MME: 180.0"),
        "{}",
        idle[0]
    );

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let burners: Vec<_> = (0..cores * 2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect();
    let evaluators: Vec<_> = (0..cores * 2)
        .map(|t| {
            let cardinal = cardinal.clone();
            let calls = calls.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                for round in 0..10 {
                    for k in 0..calls.len() {
                        // Threads start at different requests so different rules overlap.
                        let i = (k + t + round) % calls.len();
                        seen.push((i, fingerprint(&evaluate(&cardinal, &calls[i]))));
                    }
                }
                seen
            })
        })
        .collect();
    let results: Vec<(usize, String)> = evaluators
        .into_iter()
        .flat_map(|h| h.join().expect("evaluator thread"))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for burner in burners {
        burner.join().expect("burner thread");
    }
    assert_eq!(results.len(), cores * 2 * 10 * calls.len());
    for (i, loaded) in &results {
        assert_eq!(
            loaded, &idle[*i],
            "{}: a loaded evaluation differs from the idle one",
            calls[*i].service
        );
    }
}

/// One service of `tests/fixtures/rules-budget/`, with the given backstop.
fn budget_service(name: &str, backstop_ms: u64) -> Cardinal {
    let mut config = Config {
        rules_dir: project_path(&format!("tests/fixtures/rules-budget/{name}")),
        ..Config::default().development()
    };
    config.sandbox.backstop_ms = backstop_ms;
    Cardinal::load(config).unwrap_or_else(|e| panic!("{e}"))
}

fn patient_view() -> Call {
    Call {
        service: String::new(),
        request: request_fixture("patient-view-greeting"),
        options: pinned("2026-11-01"),
    }
}

fn error_of<'a>(evaluation: &'a Evaluation, rule: &str) -> &'a cardinal::engine::RuleError {
    let outcome = evaluation
        .outcomes
        .iter()
        .find(|o| o.rule_id == rule)
        .unwrap_or_else(|| panic!("no outcome for {rule}"));
    match &outcome.verdict {
        Verdict::Error(e) => e,
        other => panic!("{rule}: expected an error, got {other:?}"),
    }
}

#[test]
fn a_loop_over_a_native_scan_is_stopped_by_the_operation_limit_after_the_same_work() {
    // The backstop is out of the way: this is about operations.
    let cardinal = budget_service("native-scan", 600_000);
    let call = Call {
        service: "native-scan".into(),
        ..patient_view()
    };
    let first = evaluate(&cardinal, &call);
    let scan = first
        .outcomes
        .iter()
        .find(|o| o.rule_id == "a-native-scan")
        .expect("scan outcome");
    let error = error_of(&first, "a-native-scan");
    assert_eq!(error.kind.as_str(), "operations", "{error:?}");
    assert_eq!(error.line, Some(7), "stopped at the helper call: {error:?}");
    // Stopped by the limit, not by a clock: just past 1,000,000 operations.
    let limit = cardinal.config().sandbox.max_operations;
    assert!(
        scan.operations > limit && scan.operations < limit + 200_000,
        "{}",
        scan.operations
    );
    println!(
        "native scan stopped after {} operations in {:?}",
        scan.operations, scan.duration
    );
    // The other rule of the service still fires, and the stopped rule is a diagnostic.
    let summaries: Vec<&str> = first
        .response
        .cards
        .iter()
        .map(|c| c.summary.as_str())
        .collect();
    assert_eq!(summaries, ["normal rule ran for female"]);
    let diagnostics = &first.response.extension.diagnostics;
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(
        (
            diagnostics[0].rule_id.as_str(),
            diagnostics[0].kind.as_str()
        ),
        ("a-native-scan", "operations")
    );
    // Deterministic: the same operations and the same answer every time.
    for _ in 0..2 {
        let again = evaluate(&cardinal, &call);
        assert_eq!(fingerprint(&again), fingerprint(&first));
    }
}

#[test]
fn work_no_count_covers_is_stopped_by_the_backstop() {
    let backstop = Duration::from_millis(500);
    let cardinal = budget_service("backstop", backstop.as_millis() as u64);
    let call = Call {
        service: "backstop".into(),
        ..patient_view()
    };
    let started = Instant::now();
    let evaluation = evaluate(&cardinal, &call);
    let elapsed = started.elapsed();
    let runaway = evaluation
        .outcomes
        .iter()
        .find(|o| o.rule_id == "b-uncharged")
        .expect("runaway outcome");
    let error = error_of(&evaluation, "b-uncharged");
    assert_eq!(error.kind.as_str(), "timeout", "{error:?}");
    // Well under its operation limit: nothing counted the work.
    assert!(
        runaway.operations < cardinal.config().sandbox.max_operations,
        "{}",
        runaway.operations
    );
    let overrun = evaluation.duration.saturating_sub(backstop);
    println!(
        "backstop {backstop:?}: the call stopped after {:?} (rule {:?}, {} operations); overrun {overrun:?} \
         ({:.1}% of the backstop); whole evaluate() {elapsed:?}",
        evaluation.duration,
        runaway.duration,
        runaway.operations,
        overrun.as_secs_f64() * 100.0 / backstop.as_secs_f64(),
    );
    // Only a sanity bound: timing on a shared machine is not asserted.
    assert!(
        evaluation.duration < backstop * 5,
        "{:?}",
        evaluation.duration
    );
    // The rule before it keeps its card; the rule after it was not run (the backstop had passed).
    let summaries: Vec<&str> = evaluation
        .response
        .cards
        .iter()
        .map(|c| c.summary.as_str())
        .collect();
    assert_eq!(summaries, ["ran before the runaway rule"]);
    let after = error_of(&evaluation, "c-after");
    assert_eq!(after.kind.as_str(), "timeout", "{after:?}");
    assert!(after.message.contains("not run"), "{after:?}");
}
