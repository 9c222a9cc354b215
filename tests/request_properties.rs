//! Property tests: whatever JSON a caller sends — random values, or real requests with parts replaced
//! by random values, deep nesting or odd text in dated fields — Cardinal answers with a valid
//! response or a 4xx refusal, never a panic or a 500. In-process for many cases, and through the real
//! HTTP server for fewer.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

mod common;

use std::sync::OnceLock;

use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal};
use cardinal::fhir::PrefetchValue;
use common::{TestServer, project_path, request_fixture};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use serde_json::{Map, Value};

/// The services the mutated requests are sent to, with the fixture each starts from.
fn seeds() -> Vec<(&'static str, Value)> {
    let case = |name: &str| -> Value {
        let path = project_path(&format!("rules/opioid-cds/tests/{name}.json"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let case: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        case["request"].clone()
    };
    vec![
        ("metformin-renal", request_fixture("metformin-egfr-low")),
        ("patient-greeting", request_fixture("patient-view-greeting")),
        (
            "warfarin-nsaid",
            request_fixture("warfarin-active-ibuprofen-ordered"),
        ),
        ("opioidcds-04-05", case("rec-04-05-mme-greater-than-fifty")),
    ]
}

fn cardinal() -> &'static Cardinal {
    static CARDINAL: OnceLock<Cardinal> = OnceLock::new();
    CARDINAL.get_or_init(|| {
        let config = Config {
            rules_dir: project_path("rules"),
            ..Config::default().development()
        };
        Cardinal::load(config).unwrap_or_else(|e| panic!("rules: {e}"))
    })
}

/// Any JSON value, up to a modest size.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        odd_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Field names a FHIR reader cares about, and any others.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "resourceType",
            "entry",
            "resource",
            "id",
            "status",
            "code",
            "coding",
            "system",
            "effectiveDateTime",
            "authoredOn",
            "onsetDateTime",
            "birthDate",
            "valueQuantity",
            "dosageInstruction",
            "draftOrders",
            "medicationCodeableConcept",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z]{1,12}",
    ]
}

/// Dates and near-dates with non-ASCII bytes in every position, and other text.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{4}(-[0-9]{2}(-[0-9]{2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2})?)?)?)?",
        "[0-9é€😀T:+-]{0,14}",
        "\\PC{0,20}",
        Just("Bundle".to_owned()),
        Just("Observation".to_owned()),
        Just("MedicationRequest".to_owned()),
    ]
}

/// Replaces the subtree reached by following `path` (indices taken modulo each container's size).
fn replace_somewhere(value: &mut Value, path: &[usize], replacement: Value) {
    let Some((&step, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            let n = map.len();
            if let Some((_, child)) = map.iter_mut().nth(step % n) {
                replace_somewhere(child, rest, replacement);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let n = items.len();
            if let Some(child) = items.get_mut(step % n) {
                replace_somewhere(child, rest, replacement);
            }
        }
        _ => *value = replacement,
    }
}

/// A mutated real request: one to three subtrees replaced by random JSON.
fn mutated_request() -> impl Strategy<Value = (&'static str, Value)> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec(
            (prop::collection::vec(any::<usize>(), 1..7), any_json()),
            1..4,
        ),
    )
        .prop_map(move |(which, edits)| {
            let (service, mut request) = seeds[which].clone();
            for (path, replacement) in edits {
                replace_somewhere(&mut request, &path, replacement);
            }
            (service, request)
        })
}

/// A FHIR date-time cut at a random length, with a random character (often multi-byte) inserted
/// at a random place: the shapes a byte-slicing date parser trips on.
fn odd_date() -> impl Strategy<Value = String> {
    (
        0usize..=25,
        0usize..=25,
        prop::sample::select(vec!['é', '€', '😀', 'T', '-', ':', '0', 'Z', '\u{0}']),
    )
        .prop_map(|(len, at, c)| {
            let mut chars: Vec<char> = "2023-05-01T10:00:00+01:00".chars().take(len).collect();
            let at = at.min(chars.len());
            chars.insert(at, c);
            chars.into_iter().collect()
        })
}

/// Every string field whose name says it holds a date, anywhere in the request.
fn dated_paths(value: &Value, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                path.push(key.clone());
                let dated = [
                    "date", "Date", "DateTime", "On", "issued", "start", "end", "Start", "End",
                ]
                .iter()
                .any(|s| key.ends_with(s));
                if dated && child.is_string() {
                    found.push(path.clone());
                }
                dated_paths(child, path, found);
                path.pop();
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(i.to_string());
                dated_paths(child, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

fn set_at(value: &mut Value, path: &[String], replacement: Value) {
    let Some((step, rest)) = path.split_first() else {
        *value = replacement;
        return;
    };
    let child = match value {
        Value::Object(map) => map.get_mut(step),
        Value::Array(items) => step.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    };
    if let Some(child) = child {
        set_at(child, rest, replacement);
    }
}

/// A real request whose every dated field holds an odd date.
fn odd_dated_request() -> impl Strategy<Value = (&'static str, Value)> {
    let seeds = seeds();
    (0..seeds.len(), prop::collection::vec(odd_date(), 64)).prop_map(move |(which, dates)| {
        let (service, mut request) = seeds[which].clone();
        let mut found = Vec::new();
        dated_paths(&request, &mut Vec::new(), &mut found);
        for (path, date) in found.iter().zip(dates.into_iter().cycle()) {
            set_at(&mut request, path, Value::String(date));
        }
        (service, request)
    })
}

/// In-process: parse (reading every prefetch key, and as the HTTP transport does for `service`),
/// then evaluate. Refusals must be 4xx; evaluation must not fail internally. A body the full read
/// accepts, the service's read accepts too, with the same answers for the keys it declares.
fn check_in_process(service: &str, body: &[u8]) -> Result<(), TestCaseError> {
    let reads = cardinal().service(service).map(|s| s.prefetch.reads());
    let reads = reads.unwrap_or_else(|e| panic!("{e}"));
    let declared = HookRequest::from_json_bytes_for(body, &reads);
    let Ok(request) = HookRequest::from_json_bytes(body) else {
        return Ok(());
    };
    let Ok(declared) = declared else {
        return Err(TestCaseError::fail(format!(
            "read in full but refused for {service}: {:?}",
            declared.err()
        )));
    };
    for (key, value) in &declared.prefetch {
        prop_assert_eq!(
            answer_texts(value),
            request
                .prefetch
                .get(key)
                .map(answer_texts)
                .unwrap_or_default()
        );
    }
    for request in [request, declared] {
        match cardinal().evaluate(service, request, CallOptions::default()) {
            Ok(evaluation) => {
                prop_assert!(serde_json::to_vec(&evaluation.response).is_ok());
            }
            Err(e) => {
                let status = e.http_status();
                prop_assert!((400..500).contains(&status), "{status}: {e}");
            }
        }
    }
    Ok(())
}

/// The kept text of each resource of one prefetch answer.
fn answer_texts(value: &PrefetchValue) -> Vec<String> {
    match value {
        PrefetchValue::Null => Vec::new(),
        PrefetchValue::Resource(r) => vec![r.text().to_owned()],
        PrefetchValue::Bundle(items) => items.iter().map(|r| r.text().to_owned()).collect(),
    }
}

/// A real request whose `prefetch` is replaced by random answers under the keys the service
/// declares and others (a real resource, a Bundle of random entries, or any JSON).
fn any_prefetch_request() -> impl Strategy<Value = (&'static str, Value)> {
    let seeds = seeds();
    let key = prop::sample::select(vec![
        "patient",
        "egfr",
        "conditions",
        "medicationRequests",
        "encounters",
        "labs",
        "other",
    ]);
    let answer = prop_oneof![
        any_json(),
        prop::collection::vec(any_json(), 0..4).prop_map(|resources| {
            let entry: Vec<Value> = resources
                .into_iter()
                .map(|r| serde_json::json!({"resource": r}))
                .collect();
            serde_json::json!({"resourceType": "Bundle", "type": "searchset", "entry": entry})
        }),
        Just(
            serde_json::json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "33914-3"}]},
            "effectiveDateTime": "2026-11-01", "valueQuantity": {"value": 20}})
        ),
    ];
    (
        0..seeds.len(),
        prop::collection::btree_map(key, answer, 0..5),
    )
        .prop_map(move |(i, prefetch)| {
            let (service, mut request) = seeds[i].clone();
            request["prefetch"] = Value::Object(
                prefetch
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            );
            (service, request)
        })
}

/// A real request with random bytes spliced into its prefetch text (declared keys and not).
fn spliced_prefetch_request() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let seeds = seeds();
    (
        0..seeds.len(),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 1..8),
        any::<bool>(),
    )
        .prop_map(move |(i, at, bytes, extra_key)| {
            let (service, mut request) = seeds[i].clone();
            if extra_key {
                request["prefetch"]["other"] = request["prefetch"]
                    .as_object()
                    .and_then(|p| p.values().next().cloned())
                    .unwrap_or(Value::Null);
            }
            let text = serde_json::to_vec(&request).unwrap_or_default();
            let start = text
                .windows(11)
                .position(|w| w == b"\"prefetch\":")
                .unwrap_or(0);
            let at = start + at.index(text.len() - start);
            let mut body = text[..at].to_vec();
            body.extend_from_slice(&bytes);
            body.extend_from_slice(&text[at..]);
            (service, body)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_json_body_is_answered_or_refused(body in any_json()) {
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        for service in ["patient-greeting", "opioidcds-04-05"] {
            check_in_process(service, &bytes)?;
        }
    }

    #[test]
    fn mutated_real_requests_are_answered_or_refused((service, request) in mutated_request()) {
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        check_in_process(service, &bytes)?;
    }

    #[test]
    fn odd_dates_in_every_dated_field_are_answered_or_refused((service, request) in odd_dated_request()) {
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        check_in_process(service, &bytes)?;
    }

    #[test]
    fn any_bytes_are_answered_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_in_process("patient-greeting", &bytes)?;
    }

    #[test]
    fn any_prefetch_under_any_key_is_answered_or_refused((service, request) in any_prefetch_request()) {
        let bytes = serde_json::to_vec(&request).unwrap_or_default();
        check_in_process(service, &bytes)?;
    }

    #[test]
    fn bytes_spliced_into_prefetch_are_answered_or_refused((service, body) in spliced_prefetch_request()) {
        check_in_process(service, &body)?;
    }
}

/// Through the real server: every answer is a 200 with cards or a 4xx with an OperationOutcome.
#[test]
fn mutated_requests_over_http_get_a_valid_answer_or_a_4xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async {
        let server = TestServer::start().await;
        let client = reqwest::Client::new();
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 150,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let strategy = mutated_request();
        let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
        for _ in 0..150 {
            let tree = strategy
                .new_tree(&mut runner)
                .unwrap_or_else(|e| panic!("strategy: {e}"));
            let (service, request) = tree.current();
            let response = client
                .post(server.url(&format!("/cds-services/{service}")))
                .json(&request)
                .send()
                .await
                .unwrap_or_else(|e| panic!("the server must answer: {e}"));
            let status = response.status().as_u16();
            *statuses.entry(status).or_default() += 1;
            let text = response.text().await.unwrap_or_default();
            let body: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text}"));
            match status {
                200 => assert!(body["cards"].is_array(), "{body:#}"),
                400..=499 => assert_eq!(body["resourceType"], "OperationOutcome", "{body:#}"),
                _ => panic!("status {status} for {request:#}: {body:#}"),
            }
        }
        println!("statuses: {statuses:?}");
        // Still serving normally.
        let ok = client
            .post(server.url("/cds-services/metformin-renal"))
            .json(&request_fixture("metformin-egfr-low"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.status().as_u16(), 200);
        server.stop().await;
    });
}
