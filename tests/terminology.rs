//! Terminology against a real FHIR terminology server on 127.0.0.1:0 (`support/terminology_server.rs`,
//! serving real VSAC value sets): the four operations, caching (positive and negative), coalescing,
//! TTL expiry, timeouts, retries, stale-if-error, OperationOutcome errors, pre-expansion, resolution
//! order, the bearer token, calls from async threads, configuration, and what a rule sees end to end
//! through a real Cardinal HTTP server when the terminology server is slow or down. Also an optional
//! load of the whole eCQM corpus from `../shared/` when it is present.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;
#[path = "support/terminology_server.rs"]
mod terminology_server;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use cardinal::config::Config;
use cardinal::terminology::{
    LocalTerminology, RemoteSettings, RemoteTerminology, Secret, SourceKind, Subsumption,
    Terminology, TerminologyConfig, TerminologyError, TerminologySource,
};
use common::{TestServer, project_path};
use serde_json::{Value, json};
use terminology_server::{Op, Options, TerminologyServer};

const HYPERTENSION: &str =
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.104.12.1011";
const TYPE_1_DIABETES: &str =
    "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.103.12.1020";
const HBA1C: &str = "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.464.1003.198.12.1013";
const WARFARIN: &str = "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.113883.3.117.1.7.1.232";
const UNKNOWN_VS: &str = "http://cts.nlm.nih.gov/fhir/ValueSet/2.16.840.1.999999";
const SNOMED: &str = "http://snomed.info/sct";
const LOINC: &str = "http://loinc.org";
const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
const TEST_CS: &str = "http://cardinalcds.org/fhir/CodeSystem/test-conditions";
const DIAGNOSTICS: &str = "org.cardinalcds.diagnostics";

fn settings(server: &TerminologyServer) -> RemoteSettings {
    RemoteSettings {
        backoff_ms: 5,
        ..RemoteSettings::new(&server.base_url)
    }
}

fn remote(settings: &RemoteSettings) -> RemoteTerminology {
    RemoteTerminology::new(settings).expect("remote terminology")
}

fn later() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

fn member(source: &dyn TerminologySource, url: &str, system: &str, code: &str) -> Option<bool> {
    source
        .validate_code(url, system, code, later())
        .unwrap_or_else(|e| panic!("{url} {system}|{code}: {e}"))
}

/// A base URL where nothing listens.
/// A URL where nothing listens. Port 1 (tcpmux) is reserved and unused: a port freed by another
/// listener could be taken again at once by a server another test starts in parallel.
fn closed_port_url() -> String {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:1").is_err(),
        "something listens on 127.0.0.1:1; the down-server tests need it closed"
    );
    "http://127.0.0.1:1/fhir".to_owned()
}

// ---------------------------------------------------------------------------------------------
// The four operations
// ---------------------------------------------------------------------------------------------

#[test]
fn remote_operations_answer_from_the_servers_files() {
    let server = TerminologyServer::start();
    let remote = remote(&settings(&server));

    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(member(&remote, HYPERTENSION, ICD10CM, "I10"), Some(true));
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "44054006"),
        Some(false)
    );
    // The same code in another system is not a member.
    assert_eq!(
        member(&remote, HYPERTENSION, LOINC, "59621000"),
        Some(false)
    );
    assert_eq!(
        member(&remote, &format!("{HYPERTENSION}|20240106"), ICD10CM, "I10"),
        Some(true)
    );
    assert_eq!(member(&remote, WARFARIN, RXNORM, "855332"), Some(true));
    // Unknown to the server (404 + OperationOutcome not-found): this source does not know it.
    assert_eq!(member(&remote, UNKNOWN_VS, SNOMED, "59621000"), None);

    let display = |system: &str, code: &str| {
        remote
            .lookup_display(system, code, later())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        display(LOINC, "4548-4").as_deref(),
        Some("Hemoglobin A1c/Hemoglobin.total in Blood")
    );
    assert_eq!(
        display(TEST_CS, "diabetes-type-2").as_deref(),
        Some("Type 2 diabetes mellitus")
    );
    assert_eq!(display(TEST_CS, "no-such-code"), None);
    assert_eq!(display("http://example.org/unknown", "x"), None);

    let relation = |a: &str, b: &str| {
        remote
            .subsumes(TEST_CS, a, b, later())
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(
        relation("diabetes", "diabetes-type-2-ckd"),
        Some(Subsumption::Subsumes)
    );
    assert_eq!(
        relation("diabetes-type-2-ckd", "metabolic"),
        Some(Subsumption::SubsumedBy)
    );
    assert_eq!(
        relation("hypertension", "hypertension"),
        Some(Subsumption::Equivalent)
    );
    assert_eq!(
        relation("diabetes", "essential-hypertension"),
        Some(Subsumption::NotSubsumed)
    );
    assert_eq!(
        remote
            .subsumes("http://example.org/unknown", "a", "b", later())
            .ok(),
        Some(None)
    );

    // Through `Terminology`: a value set no source knows is a clear error.
    let terminology = Terminology::from_config(
        &TerminologyConfig {
            remote: Some(settings(&server)),
            ..TerminologyConfig::default()
        },
        LocalTerminology::default(),
    )
    .expect("terminology");
    match terminology.validate_code(UNKNOWN_VS, SNOMED, "59621000", later()) {
        Err(TerminologyError::UnknownValueSet(url)) => assert_eq!(url, UNKNOWN_VS),
        other => panic!("expected UnknownValueSet, got {other:?}"),
    }
    let answer = terminology
        .validate_code(HYPERTENSION, SNOMED, "59621000", later())
        .expect("member");
    assert!(answer.member);
    assert_eq!(answer.source, "remote");
    assert_eq!(
        terminology
            .subsumes(TEST_CS, "metabolic", "diabetes-type-1", later())
            .ok(),
        Some(Subsumption::Subsumes)
    );
}

// ---------------------------------------------------------------------------------------------
// Cache
// ---------------------------------------------------------------------------------------------

#[test]
fn answers_are_cached_negative_ones_too() {
    let server = TerminologyServer::start();
    let remote = remote(&settings(&server));
    for _ in 0..3 {
        assert_eq!(
            member(&remote, HYPERTENSION, SNOMED, "59621000"),
            Some(true)
        );
        assert_eq!(
            member(&remote, HYPERTENSION, SNOMED, "44054006"),
            Some(false)
        );
        assert_eq!(member(&remote, UNKNOWN_VS, SNOMED, "59621000"), None);
        assert!(
            remote
                .lookup_display(TEST_CS, "no-such-code", later())
                .expect("lookup")
                .is_none()
        );
        assert_eq!(
            remote
                .subsumes(TEST_CS, "diabetes", "diabetes-type-1", later())
                .expect("subsumes"),
            Some(Subsumption::Subsumes)
        );
    }
    assert_eq!(server.calls(Op::ValidateCode), 3);
    assert_eq!(server.calls(Op::Lookup), 1);
    assert_eq!(server.calls(Op::Subsumes), 1);
    let stats = remote.stats();
    assert_eq!((stats.hits, stats.misses), (10, 5), "{stats:?}");
    assert_eq!((stats.remote_calls, stats.remote_errors), (5, 0));
    assert_eq!(stats.remote_latency_count, 5);
    assert!(stats.remote_latency_sum >= stats.remote_latency_max);
    assert!(stats.remote_latency_max > Duration::ZERO);
}

#[test]
fn concurrent_misses_for_one_key_make_one_remote_call() {
    let server = TerminologyServer::start();
    server.set_delay(Duration::from_millis(200));
    let remote = Arc::new(remote(&settings(&server)));
    let barrier = Arc::new(Barrier::new(32));
    let threads: Vec<_> = (0..32)
        .map(|_| {
            let remote = remote.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                remote.validate_code(HYPERTENSION, SNOMED, "59621000", later())
            })
        })
        .collect();
    for thread in threads {
        let answer = thread.join().expect("thread");
        assert_eq!(answer.ok(), Some(Some(true)));
    }
    assert_eq!(server.calls(Op::ValidateCode), 1);
    let stats = remote.stats();
    assert_eq!(stats.remote_calls, 1);
    assert_eq!(stats.hits + stats.misses, 32, "{stats:?}");
}

#[test]
fn answers_expire_after_the_ttl() {
    let server = TerminologyServer::start();
    let remote = remote(&RemoteSettings {
        cache_ttl_secs: 1,
        ..settings(&server)
    });
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(server.calls(Op::ValidateCode), 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(server.calls(Op::ValidateCode), 2);
}

// ---------------------------------------------------------------------------------------------
// Failures: timeouts, retries, OperationOutcome, stale-if-error
// ---------------------------------------------------------------------------------------------

#[test]
fn a_slow_server_is_given_up_on_at_the_deadline_or_the_timeout() {
    let server = TerminologyServer::start();
    server.set_delay(Duration::from_millis(1500));
    let remote = remote(&settings(&server));

    // The rule's deadline (100 ms) is shorter than the configured timeout (2 s).
    let started = Instant::now();
    let answer = remote.validate_code(
        HYPERTENSION,
        SNOMED,
        "59621000",
        Instant::now() + Duration::from_millis(100),
    );
    let elapsed = started.elapsed();
    match answer {
        Err(TerminologyError::Timeout(what)) => assert!(what.contains(HYPERTENSION), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(elapsed < Duration::from_millis(400), "{elapsed:?}");

    // The configured timeout (150 ms) is shorter than the deadline.
    let remote = RemoteTerminology::new(&RemoteSettings {
        timeout_ms: 150,
        ..settings(&server)
    })
    .expect("remote");
    let started = Instant::now();
    let answer = remote.lookup_display(LOINC, "4548-4", later());
    assert!(
        matches!(answer, Err(TerminologyError::Timeout(_))),
        "{answer:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    // A deadline already passed sends nothing.
    let before = server.total_calls();
    let answer = remote.validate_code(HYPERTENSION, SNOMED, "1201005", Instant::now());
    assert!(matches!(answer, Err(TerminologyError::Timeout(_))));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(server.total_calls(), before);
}

#[test]
fn server_errors_are_retried_with_backoff_and_client_errors_are_not() {
    let server = TerminologyServer::start();
    let remote = remote(&settings(&server)); // 2 retries

    server.fail_next(2);
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(server.calls(Op::ValidateCode), 3);
    let stats = remote.stats();
    assert_eq!((stats.remote_calls, stats.remote_errors), (3, 2));

    server.fail_next(10);
    let answer = remote.validate_code(HYPERTENSION, SNOMED, "1201005", later());
    match answer {
        Err(TerminologyError::Server(text)) => {
            assert!(text.contains("HTTP 500"), "{text}");
            assert!(text.contains("injected failure"), "{text}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert_eq!(server.calls(Op::ValidateCode), 6);
    server.fail_next(0);

    // A 400 OperationOutcome is final: one request.
    server.set_operation_outcome(Some("bad request"));
    assert!(
        remote
            .validate_code(HYPERTENSION, SNOMED, "19769006", later())
            .is_err()
    );
    assert_eq!(server.calls(Op::ValidateCode), 7);

    // Connection refused is retried too (3 attempts), then reported clearly.
    let down = remote_to(&closed_port_url());
    match down.validate_code(HYPERTENSION, SNOMED, "59621000", later()) {
        Err(TerminologyError::Server(text)) => {
            assert!(text.contains("cannot connect"), "{text}")
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
    assert_eq!(down.stats().remote_calls, 3);
}

fn remote_to(base_url: &str) -> RemoteTerminology {
    remote(&RemoteSettings {
        backoff_ms: 5,
        ..RemoteSettings::new(base_url)
    })
}

#[test]
fn an_operation_outcome_is_a_clear_server_error() {
    let server = TerminologyServer::start();
    server.set_operation_outcome(Some("ValueSet expansion is too costly for this server"));
    let remote = remote(&settings(&server));
    let error = remote
        .validate_code(HYPERTENSION, SNOMED, "59621000", later())
        .expect_err("an OperationOutcome");
    let TerminologyError::Server(text) = &error else {
        panic!("expected a server error, got {error:?}");
    };
    assert!(
        text.contains("error: ValueSet expansion is too costly for this server"),
        "{text}"
    );
    assert!(text.contains("ValueSet/$validate-code"), "{text}");
    assert!(text.contains(HYPERTENSION), "{text}");
    // The code asked about is patient data: not in the message.
    assert!(!error.to_string().contains("59621000"), "{error}");
    assert_eq!(server.calls(Op::ValidateCode), 1);

    // Errors are not cached: once the server recovers, the answer comes.
    server.set_operation_outcome(None);
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
}

#[test]
fn the_last_known_answer_is_served_when_the_server_goes_down() {
    let mut server = TerminologyServer::start();
    let remote = remote(&RemoteSettings {
        cache_ttl_secs: 1,
        ..settings(&server)
    });
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "44054006"),
        Some(false)
    );
    server.stop();
    std::thread::sleep(Duration::from_millis(1100));

    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "44054006"),
        Some(false)
    );
    let stats = remote.stats();
    assert_eq!(stats.stale_answers, 2, "{stats:?}");
    assert!(stats.remote_errors >= 2);
    // A question never answered before has nothing to fall back on.
    assert!(
        remote
            .validate_code(HYPERTENSION, SNOMED, "1201005", later())
            .is_err()
    );
}

// ---------------------------------------------------------------------------------------------
// Pre-expansion and resolution order
// ---------------------------------------------------------------------------------------------

fn expansion_codes(file: &str) -> Vec<(String, String)> {
    let path = project_path(&format!("tests/fixtures/terminology/valuesets/{file}"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    let json: Value = serde_json::from_str(&text).expect("json");
    json["expansion"]["contains"]
        .as_array()
        .expect("contains")
        .iter()
        .map(|c| {
            (
                c["system"].as_str().unwrap_or_default().to_owned(),
                c["code"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn pre_expanded_value_sets_need_no_per_code_calls() {
    let server = TerminologyServer::start_with(Options {
        page_size: 20,
        ..Options::default()
    });
    let remote = remote(&settings(&server));
    let report = remote.pre_expand(&[
        TYPE_1_DIABETES.to_owned(),
        HYPERTENSION.to_owned(),
        UNKNOWN_VS.to_owned(),
    ]);
    assert_eq!(report.requested, 3);
    assert_eq!(report.value_sets, 2, "{report}");
    assert_eq!(report.codes, 133 + 17);
    assert_eq!(report.unknown, vec![UNKNOWN_VS.to_owned()]);
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // 133 codes at 20 per page: 7 pages; 17 codes: 1 page; the unknown value set: 1 request.
    assert_eq!(server.calls(Op::Expand), 7 + 1 + 1);

    let codes = expansion_codes("valueset-2.16.840.1.113883.3.464.1003.103.12.1020.json");
    assert_eq!(codes.len(), 133);
    for (system, code) in &codes {
        assert_eq!(member(&remote, TYPE_1_DIABETES, system, code), Some(true));
    }
    assert_eq!(
        member(&remote, TYPE_1_DIABETES, SNOMED, "59621000"),
        Some(false)
    );
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(server.calls(Op::ValidateCode), 0);
    assert!(remote.is_pre_expanded(TYPE_1_DIABETES));
    let stats = remote.stats();
    assert_eq!(
        (stats.pre_expanded_value_sets, stats.pre_expanded_codes),
        (2, 150)
    );
    // Already expanded: not asked again.
    assert_eq!(remote.pre_expand(&[HYPERTENSION.to_owned()]).requested, 0);
}

#[test]
fn a_failed_pre_expansion_is_reported_and_membership_still_works() {
    let server = TerminologyServer::start();
    let remote = remote(&settings(&server));
    server.set_operation_outcome(Some("expansion disabled"));
    let report = remote.pre_expand(&[HYPERTENSION.to_owned()]);
    assert_eq!(report.value_sets, 0);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].0, HYPERTENSION);
    assert!(
        report.failed[0].1.contains("expansion disabled"),
        "{:?}",
        report.failed
    );
    server.set_operation_outcome(None);
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(server.calls(Op::ValidateCode), 1);
}

#[test]
fn pre_expansion_gives_up_on_a_failing_server() {
    let server = TerminologyServer::start();
    server.fail_next(1000);
    let remote = remote(&RemoteSettings {
        retries: 0,
        ..settings(&server)
    });
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://example.org/fhir/ValueSet/vs-{i}"))
        .collect();
    let report = remote.pre_expand(&urls);
    assert_eq!(report.failed.len(), 20, "{report}");
    // Eight failures in a row (plus those already in flight), then the rest is not tried.
    let asked = server.calls(Op::Expand);
    assert!((8..=11).contains(&asked), "{asked} expansions asked");
    assert!(
        report.failed.iter().any(|(_, e)| e.contains("not tried")),
        "{:?}",
        report.failed
    );
}

fn with_remote(server: &TerminologyServer, order: Vec<SourceKind>) -> Terminology {
    let local = LocalTerminology::load_rules_dir(&project_path("tests/fixtures/rules-terminology"))
        .unwrap_or_else(|e| panic!("{e:?}"));
    Terminology::from_config(
        &TerminologyConfig {
            order,
            remote: Some(settings(server)),
        },
        local,
    )
    .expect("terminology")
}

#[test]
fn local_value_sets_answer_first_by_default() {
    let server = TerminologyServer::start();
    let terminology = with_remote(&server, TerminologyConfig::default().order);
    assert_eq!(terminology.source_names(), vec!["local", "remote"]);

    let hba1c = terminology
        .validate_code(HBA1C, LOINC, "4548-4", later())
        .expect("hba1c");
    assert_eq!((hba1c.member, hba1c.source), (true, "local"));
    let not_hba1c = terminology
        .validate_code(HBA1C, LOINC, "2345-7", later())
        .expect("glucose");
    assert_eq!((not_hba1c.member, not_hba1c.source), (false, "local"));
    assert_eq!(server.total_calls(), 0);

    let htn = terminology
        .validate_code(HYPERTENSION, SNOMED, "59621000", later())
        .expect("hypertension");
    assert_eq!((htn.member, htn.source), (true, "remote"));

    // Pre-expansion skips what the local source answers first.
    let report = terminology
        .pre_expand(&[HBA1C.to_owned(), WARFARIN.to_owned()])
        .expect("a remote source with pre_expand");
    assert_eq!((report.requested, report.value_sets), (1, 1));
    assert_eq!(server.calls(Op::Expand), 1);

    // Remote first: the server answers even for the pack's value set.
    let terminology = with_remote(&server, vec![SourceKind::Remote, SourceKind::Local]);
    let hba1c = terminology
        .validate_code(HBA1C, LOINC, "4548-4", later())
        .expect("hba1c");
    assert_eq!((hba1c.member, hba1c.source), (true, "remote"));
    assert!(terminology.stats().is_some());
    assert!(
        Terminology::local(LocalTerminology::default())
            .stats()
            .is_none()
    );
}

// ---------------------------------------------------------------------------------------------
// Secrets, threads, configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn the_bearer_token_is_sent_and_never_shown() {
    const TOKEN: &str = "s3cret-terminology-token";
    let server = TerminologyServer::start_with(Options {
        token: Some(TOKEN.into()),
        ..Options::default()
    });
    let with_token = RemoteSettings {
        bearer_token: Some(Secret::new(TOKEN)),
        ..settings(&server)
    };
    let remote = remote(&with_token);
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    assert_eq!(
        server
            .state
            .unauthorized
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert!(!format!("{with_token:?}").contains(TOKEN));
    assert!(!format!("{remote:?}").contains(TOKEN));
    let config = Config {
        terminology: TerminologyConfig {
            remote: Some(with_token.clone()),
            ..TerminologyConfig::default()
        },
        ..Config::default().development()
    };
    assert!(!format!("{config:?}").contains(TOKEN));

    // A wrong token: a clear 401, without either token in the message.
    let wrong = remote_settings_with_token(&server, "wrong-token");
    let error = RemoteTerminology::new(&wrong)
        .expect("remote")
        .validate_code(HYPERTENSION, SNOMED, "59621000", later())
        .expect_err("unauthorised");
    let text = error.to_string();
    assert!(text.contains("HTTP 401"), "{text}");
    assert!(
        !text.contains(TOKEN) && !text.contains("wrong-token"),
        "{text}"
    );
}

fn remote_settings_with_token(server: &TerminologyServer, token: &str) -> RemoteSettings {
    RemoteSettings {
        bearer_token: Some(Secret::new(token)),
        ..settings(server)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_a_multi_threaded_runtime_do_not_panic() {
    let server = TerminologyServer::start();
    let remote = Arc::new(remote(&settings(&server)));
    // On the runtime's own thread (inside block_on) and on a worker.
    assert_eq!(
        member(&*remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    let on_worker = remote.clone();
    let answer =
        tokio::spawn(async move { on_worker.validate_code(HYPERTENSION, ICD10CM, "I10", later()) })
            .await
            .expect("task");
    assert_eq!(answer.ok(), Some(Some(true)));
    let report = remote.pre_expand(&[WARFARIN.to_owned()]);
    assert_eq!(report.value_sets, 1);
    // Dropped inside async code: no "cannot drop a runtime" panic.
    drop(Arc::try_unwrap(remote).ok());
}

#[tokio::test]
async fn calls_from_a_current_thread_runtime_do_not_panic() {
    let server = TerminologyServer::start();
    let remote = remote(&settings(&server));
    assert_eq!(
        member(&remote, HYPERTENSION, SNOMED, "59621000"),
        Some(true)
    );
    let answer = remote.validate_code(
        HYPERTENSION,
        SNOMED,
        "1201005",
        Instant::now() + Duration::from_millis(1),
    );
    assert!(answer.is_ok() || matches!(answer, Err(TerminologyError::Timeout(_))));
    drop(remote);
}

#[test]
fn the_terminology_section_is_configured_from_toml_and_validated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |text: &str| {
        let path = dir.path().join("cardinal.toml");
        std::fs::write(&path, text).expect("write");
        path
    };
    let path = write(
        r#"
[terminology]
order = ["remote", "local"]

[terminology.remote]
base_url = "https://tx.example.org/fhir"
bearer_token = "abc-secret"
timeout_ms = 500
retries = 1
cache_ttl_secs = 60
pre_expand = false
"#,
    );
    let config = Config::load(Some(&path)).expect("config");
    let terminology = &config.terminology;
    assert_eq!(
        terminology.order,
        vec![SourceKind::Remote, SourceKind::Local]
    );
    let remote = terminology.remote.as_ref().expect("remote");
    assert_eq!(remote.base_url, "https://tx.example.org/fhir");
    assert_eq!(
        remote.bearer_token.as_ref().map(Secret::expose),
        Some("abc-secret")
    );
    assert_eq!((remote.timeout_ms, remote.retries), (500, 1));
    assert_eq!(remote.cache_ttl_secs, 60);
    assert_eq!(remote.cache_capacity, 100_000);
    assert_eq!(remote.stale_ttl_secs, 86_400);
    assert!(!remote.pre_expand);
    assert!(!format!("{config:?}").contains("abc-secret"));

    let defaults = Config::default().terminology;
    assert_eq!(defaults.order, vec![SourceKind::Local, SourceKind::Remote]);
    assert!(defaults.remote.is_none());

    for (text, expected) in [
        (
            "[terminology.remote]\nbase_url = \"https://x.org/fhir\"\ncolour = 1\n",
            "colour",
        ),
        (
            "[terminology]\norder = [\"local\"]\n[terminology.remote]\nbase_url = \"https://x.org/fhir\"\n",
            "not in terminology.order",
        ),
        (
            "[terminology.remote]\nbase_url = \"ftp://x.org/fhir\"\n",
            "http(s)",
        ),
        ("[terminology.remote]\ntimeout_ms = 100\n", "not a URL"),
        ("[terminology]\norder = [\"local\", \"local\"]\n", "twice"),
        ("[terminology]\norder = [\"elsewhere\"]\n", "elsewhere"),
        (
            "[terminology.remote]\nbase_url = \"https://x.org/fhir\"\ntimeout_ms = 0\n",
            "timeout_ms",
        ),
    ] {
        let error = Config::load(Some(&write(text)))
            .expect_err(text)
            .to_string();
        assert!(error.contains(expected), "{text}\n→ {error}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: a rule pack through a real Cardinal HTTP server
// ---------------------------------------------------------------------------------------------

fn cardinal_config(remote: RemoteSettings) -> Config {
    Config {
        rules_dir: project_path("tests/fixtures/rules-terminology"),
        terminology: TerminologyConfig {
            remote: Some(remote),
            ..TerminologyConfig::default()
        },
        ..Config::default().development()
    }
}

fn hook_request() -> Value {
    json!({
        "hook": "patient-view",
        "hookInstance": "5c1f3b8e-7a0c-4a53-9d5e-3a0d2b1c9e11",
        "context": {"userId": "Practitioner/1", "patientId": "p1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "p1", "birthDate": "1961-04-02"},
            "conditions": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
                    "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                    "code": {"coding": [
                        {"system": "http://snomed.info/sct", "code": "59621000", "display": "Essential hypertension"},
                        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]}}}
            ]},
            "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [
                {"resource": {"resourceType": "Observation", "id": "o1", "status": "final",
                    "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2026-10-01",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                    "valueQuantity": {"value": 7.9, "unit": "%"}}}
            ]}
        }
    })
}

async fn call(server: &TestServer) -> (Value, Duration) {
    let started = Instant::now();
    let response = reqwest::Client::new()
        .post(server.url("/cds-services/terminology-check"))
        .json(&hook_request())
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = response.json().await.expect("JSON");
    (body, started.elapsed())
}

fn summaries(body: &Value) -> Vec<&str> {
    body["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["summary"].as_str())
        .collect()
}

fn diagnostics(body: &Value) -> Vec<Value> {
    body["extension"][DIAGNOSTICS]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_rule_uses_a_remote_value_set_pre_expanded_at_start_up() {
    let terminology = TerminologyServer::start();
    let server = TestServer::start_with(cardinal_config(settings(&terminology))).await;
    let stats = server.cardinal.terminology().stats().expect("stats");
    assert_eq!(stats.pre_expanded_value_sets, 1, "{stats:?}");
    assert_eq!(stats.pre_expanded_codes, 17);
    // Only the remote value set was expanded; the pack's own one is answered locally.
    assert_eq!(terminology.calls(Op::Expand), 1);

    let (body, _) = call(&server).await;
    assert_eq!(
        summaries(&body),
        vec![
            "Essential hypertension on the problem list",
            "HbA1c result on record"
        ],
        "{body}"
    );
    assert!(diagnostics(&body).is_empty(), "{body}");
    // The explanation says which value set matched and where the answer came from.
    let facts = body["cards"][0]["extension"]["org.cardinalcds.explanation"]["facts"].to_string();
    assert!(
        facts.contains("2.16.840.1.113883.3.464.1003.104.12.1011"),
        "{facts}"
    );
    assert!(facts.contains("(remote)"), "{facts}");
    assert_eq!(terminology.calls(Op::ValidateCode), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_slow_terminology_server_fails_the_rule_within_its_deadline() {
    let terminology = TerminologyServer::start();
    terminology.set_delay(Duration::from_secs(2));
    // The remote timeout (300 ms) bounds the wait, well inside the call's 1 s backstop, so the
    // rules after the slow one still run.
    let server = TestServer::start_with(cardinal_config(RemoteSettings {
        pre_expand: false,
        timeout_ms: 300,
        ..settings(&terminology)
    }))
    .await;
    let (body, elapsed) = call(&server).await;
    // The local-value-set rule is unaffected; the remote one is skipped and reported.
    assert_eq!(summaries(&body), vec!["HbA1c result on record"], "{body}");
    let diagnostics = diagnostics(&body);
    assert_eq!(diagnostics.len(), 1, "{body}");
    assert_eq!(
        diagnostics[0]["ruleId"], "a-essential-hypertension",
        "{body}"
    );
    assert_eq!(diagnostics[0]["kind"], "terminology", "{body}");
    let message = diagnostics[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("did not answer in time"), "{message}");
    assert!(message.contains(HYPERTENSION), "{message}");
    // The call does not wait for the 2 s server.
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_down_terminology_server_fails_the_rule_with_a_clear_error() {
    // Pre-expansion fails at start-up (logged, not fatal); rules then ask per code and fail.
    let server = TestServer::start_with(cardinal_config(RemoteSettings {
        backoff_ms: 5,
        ..RemoteSettings::new(closed_port_url())
    }))
    .await;
    let stats = server.cardinal.terminology().stats().expect("stats");
    assert_eq!(stats.pre_expanded_value_sets, 0);
    let (body, elapsed) = call(&server).await;
    assert_eq!(summaries(&body), vec!["HbA1c result on record"], "{body}");
    let diagnostics = diagnostics(&body);
    assert_eq!(diagnostics.len(), 1, "{body}");
    assert_eq!(diagnostics[0]["kind"], "terminology", "{body}");
    let message = diagnostics[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("cannot connect to the terminology server"),
        "{message}"
    );
    assert!(elapsed < Duration::from_millis(1000), "{elapsed:?}");
    server.stop().await;
}

/// Copies a rules directory, so a test can edit it.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

#[tokio::test]
async fn the_terminology_cache_survives_a_rule_set_reload() {
    let terminology = TerminologyServer::start();
    let rules = tempfile::tempdir().unwrap();
    copy_dir(
        &project_path("tests/fixtures/rules-terminology"),
        rules.path(),
    );
    let server = TestServer::start_with(Config {
        rules_dir: rules.path().to_path_buf(),
        ..cardinal_config(RemoteSettings {
            pre_expand: false,
            ..settings(&terminology)
        })
    })
    .await;
    let (body, _) = call(&server).await;
    assert_eq!(summaries(&body).len(), 2, "{body}");
    let asked = terminology.calls(Op::ValidateCode);
    assert!(asked > 0);
    let before = server.cardinal.terminology().stats().expect("stats");

    // A new rule set: an edited rule.
    let rule = rules.path().join("terminology-check/b-hba1c.rhai");
    let mut text = std::fs::read_to_string(&rule).unwrap();
    text.push_str("\n// reviewed\n");
    std::fs::write(&rule, text).unwrap();
    let report =
        cardinal::reload::reload_async(&server.cardinal, cardinal::rule_set::Trigger::Admin).await;
    assert_eq!(report.result.as_str(), "swapped", "{report:?}");

    let (body, _) = call(&server).await;
    assert_eq!(summaries(&body).len(), 2, "{body}");
    // The same questions are answered from the cache that outlived the old rule set.
    assert_eq!(terminology.calls(Op::ValidateCode), asked);
    let after = server.cardinal.terminology().stats().expect("stats");
    assert!(after.hits > before.hits, "{before:?} -> {after:?}");
    assert_eq!(after.remote_calls, before.remote_calls);
    let metrics = reqwest::get(server.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hits = metrics
        .lines()
        .find(|l| l.starts_with("cardinal_terminology_cache_hits_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("hit counter exported");
    assert_eq!(hits, after.hits, "{metrics}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The eCQM corpus (optional: only when ../shared is present)
// ---------------------------------------------------------------------------------------------

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[test]
fn the_ecqm_corpus_loads_when_present() {
    let dir = project_path("../shared/data/valuesets-ecqm");
    if !dir.is_dir() {
        println!(
            "eCQM corpus absent ({}): skipping the corpus load",
            dir.display()
        );
        return;
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 787);
    let rss_before = resident_bytes();
    let local = LocalTerminology::load_files(&files).unwrap_or_else(|e| panic!("{e:?}"));
    let rss_after = resident_bytes();
    let report = local.report().clone();
    assert_eq!(report.files, 787);
    assert_eq!(report.value_sets + report.skipped.len(), 787, "{report}");
    assert!(report.value_sets >= 725, "{report}");
    assert!(report.codes >= 120_000, "{report}");
    // A few memberships from the corpus.
    assert_eq!(local.contains(HYPERTENSION, SNOMED, "59621000"), Some(true));
    assert_eq!(local.contains(HBA1C, LOINC, "4548-4"), Some(true));
    assert_eq!(local.contains(HBA1C, LOINC, "2345-7"), Some(false));
    println!("eCQM corpus: {report}");
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        println!(
            "eCQM corpus: resident memory grew by ~{:.1} MiB while loading (other tests run alongside)",
            after.saturating_sub(before) as f64 / (1024.0 * 1024.0)
        );
    }
}
