//! One hook call over each transport, against a real server on 127.0.0.1: what an EHR (HTTP/JSON)
//! or an internal caller (gRPC) waits for, minus the network. The request is the shipped
//! `metformin-egfr-low` fixture (one critical card).
//!
//! Run with `cargo bench --bench transport`.
// Test and benchmark code may panic: a failed check should.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]

use std::hint::black_box;
use std::time::Duration;

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::proto::CallHookRequest;
use cardinal::proto::cds_hooks_client::CdsHooksClient;
use cardinal::transport::Server;
use criterion::Criterion;
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/requests/metformin-egfr-low.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn grpc_request(body: &Value) -> CallHookRequest {
    CallHookRequest {
        service_id: "metformin-renal".into(),
        hook: body["hook"].as_str().unwrap_or_default().into(),
        hook_instance: body["hookInstance"].as_str().unwrap_or_default().into(),
        fhir_server: body["fhirServer"].as_str().unwrap_or_default().into(),
        context_json: body["context"].to_string(),
        prefetch_json: body["prefetch"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        evaluation_time: "2026-11-20".into(),
        ..CallHookRequest::default()
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/rules");
    // Transport cost without authentication; the audit trail goes to a temporary directory.
    let data_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let mut config = Config {
        rules_dir: rules.into(),
        data_dir: data_dir.path().to_path_buf(),
        ..Config::default()
    };
    config.auth.mode = cardinal::auth::AuthMode::Off;
    let cardinal = Cardinal::load(config).unwrap_or_else(|e| panic!("{e}"));
    let base = runtime.block_on(async {
        let server = Server::bind(
            cardinal,
            "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
        )
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = server.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(server.serve(std::future::pending()));
        format!("http://{addr}")
    });

    let body = fixture();
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{base}/cds-services/metformin-renal");
    let call_http = || async {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-cardinal-evaluation-time", "2026-11-20")
            .body(bytes.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap_or_else(|e| panic!("{e}"))
    };
    let first: Value = serde_json::from_slice(&runtime.block_on(call_http())).unwrap_or_default();
    assert_eq!(
        first["cards"].as_array().map(Vec::len),
        Some(1),
        "the fixture should fire one card"
    );

    let mut grpc = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(base.clone())
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        CdsHooksClient::new(channel)
    });
    let request = grpc_request(&body);

    let mut group = c.benchmark_group("transport");
    group
        .sample_size(50)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("http_call", |b| {
        b.iter(|| black_box(runtime.block_on(call_http())))
    });
    group.bench_function("grpc_call", |b| {
        b.iter(|| {
            let response = runtime
                .block_on(grpc.call_hook(request.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(response.get_ref().cards.len(), 1);
            black_box(response)
        })
    });
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
