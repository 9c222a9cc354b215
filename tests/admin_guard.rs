#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice
)]
//! The operators' calls on the admin listener (rule-set reload, analytics, over HTTP and gRPC) are
//! guarded: with `admin_token_file` they need the bearer token; without it they are open on a
//! loopback listener and refused on any other address. Probes and metrics are never guarded.

mod common;

use cardinal::config::Config;
use cardinal::proto;
use common::TestServer;
use tonic::metadata::MetadataValue;

const TOKEN: &str = "7f3c9a1e5b2d8f4a6c0e9b7d3f1a5c8e";

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_file_operators_calls_need_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut config = Config::default().development();
    config.admin_token_file = Some(token_file);
    let server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();

    for path in ["/admin/rule-set", "/analytics/rules?since=1d", "/analytics"] {
        let url = server.admin_url(path);
        let refused = http.get(&url).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 401, "{path} without a token");
        assert_eq!(refused.headers()["www-authenticate"], "Bearer");
        let outcome: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "login");
        assert_eq!(
            status(http.get(&url).bearer_auth("not-the-admin-token-at-all")).await,
            401,
            "{path} with a wrong token"
        );
        assert_eq!(
            status(http.get(&url).bearer_auth(TOKEN)).await,
            200,
            "{path} with the token"
        );
    }
    assert_eq!(
        status(http.post(server.admin_url("/admin/reload"))).await,
        401
    );
    // Probes and the scraper carry no secret.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            status(http.get(server.admin_url(path))).await,
            200,
            "{path}"
        );
    }

    // gRPC: UNAUTHENTICATED without the token, answered with it.
    let channel = server.admin_grpc_channel().await;
    let refused = proto::rule_set_admin_client::RuleSetAdminClient::new(channel.clone())
        .reload(proto::ReloadRequest {})
        .await
        .expect_err("a reload without the token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let refused = proto::analytics_client::AnalyticsClient::new(channel.clone())
        .rule_analytics(proto::RuleAnalyticsRequest::default())
        .await
        .expect_err("analytics without the token");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let bearer: MetadataValue<_> = format!("Bearer {TOKEN}").parse().unwrap();
    let mut request = tonic::Request::new(proto::RuleAnalyticsRequest { since: "1d".into() });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let analytics = proto::analytics_client::AnalyticsClient::new(channel.clone())
        .rule_analytics(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(analytics.database, "sqlite");
    let mut request = tonic::Request::new(proto::ReloadRequest {});
    request.metadata_mut().insert("authorization", bearer);
    let reloaded = proto::rule_set_admin_client::RuleSetAdminClient::new(channel)
        .reload(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.result, "unchanged");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_non_loopback_admin_listener_refuses_operators_calls() {
    let mut config = Config::default().development();
    config.admin_listen = "0.0.0.0:0".parse().unwrap();
    let server = TestServer::start_with(config).await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", server.admin_addr.port());
    for path in ["/admin/rule-set", "/analytics/rules", "/analytics"] {
        let refused = http.get(url(path)).send().await.unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{path}");
        let outcome: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(outcome["issue"][0]["code"], "forbidden");
        assert!(
            outcome["issue"][0]["diagnostics"]
                .as_str()
                .unwrap()
                .contains("admin_token_file")
        );
    }
    assert_eq!(status(http.post(url("/admin/reload"))).await, 403);
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(status(http.get(url(path))).await, 200, "{path}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_or_missing_token_file_stops_the_admin_listener() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short");
    std::fs::write(&short, "secret").unwrap();
    for file in [short, dir.path().join("missing")] {
        let mut config = Config::default().development();
        config.admin_token_file = Some(file.clone());
        config.data_dir = dir.path().to_path_buf();
        let cardinal = cardinal::evaluator::Cardinal::load(config).unwrap();
        let server = cardinal::transport::Server::bind(cardinal, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let error = server
            .bind_admin("127.0.0.1:0".parse().unwrap())
            .err()
            .unwrap_or_else(|| panic!("{} was accepted", file.display()));
        assert!(error.to_string().contains("admin_token_file"), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
