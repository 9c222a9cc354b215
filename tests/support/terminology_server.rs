//! A FHIR R4 terminology server for tests and benchmarks, on 127.0.0.1:0 with its own runtime and
//! thread (so a test that blocks its own thread cannot stall it).
//!
//! It serves the value sets and code systems of `tests/fixtures/terminology/` through
//! `ValueSet/$validate-code`, `ValueSet/$expand` (paged: at most `page_size` codes per answer, with
//! `total` and `offset`), `CodeSystem/$lookup` and `CodeSystem/$subsumes`, answering FHIR
//! `Parameters`, `ValueSet` and `OperationOutcome` JSON. It counts requests per operation and can
//! be told to answer slowly, to fail the next N requests with 500, to answer every request with a
//! 400 `OperationOutcome`, and to require a bearer token.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ValidateCode,
    Expand,
    Lookup,
    Subsumes,
}

impl Op {
    fn index(self) -> usize {
        self as usize
    }
}

struct ValueSetData {
    url: String,
    version: Option<String>,
    /// (system, code, display) in expansion order.
    codes: Vec<(String, String, Option<String>)>,
    members: HashSet<(String, String)>,
}

struct ConceptData {
    display: Option<String>,
    parent: Option<String>,
}

pub struct ServerState {
    value_sets: HashMap<String, Arc<ValueSetData>>,
    code_systems: HashMap<String, HashMap<String, ConceptData>>,
    displays: HashMap<(String, String), String>,
    calls: [AtomicUsize; 4],
    pub delay_ms: AtomicU64,
    pub fail_next: AtomicUsize,
    pub operation_outcome: Mutex<Option<String>>,
    pub page_size: AtomicUsize,
    token: Option<String>,
    pub unauthorized: AtomicUsize,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub page_size: usize,
    pub token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            page_size: 50,
            token: None,
        }
    }
}

fn fixtures_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/terminology")
}

fn read_json_files(dir: &Path) -> Vec<Value> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        })
        .collect()
}

fn flatten_contains(items: &[Value], out: &mut Vec<(String, String, Option<String>)>) {
    for item in items {
        if let (Some(system), Some(code)) = (item["system"].as_str(), item["code"].as_str()) {
            out.push((
                system.into(),
                code.into(),
                item["display"].as_str().map(Into::into),
            ));
        }
        if let Some(nested) = item["contains"].as_array() {
            flatten_contains(nested, out);
        }
    }
}

fn flatten_concepts(items: &[Value], parent: Option<&str>, out: &mut HashMap<String, ConceptData>) {
    for item in items {
        let Some(code) = item["code"].as_str() else {
            continue;
        };
        out.insert(
            code.into(),
            ConceptData {
                display: item["display"].as_str().map(Into::into),
                parent: parent.map(Into::into),
            },
        );
        if let Some(children) = item["concept"].as_array() {
            flatten_concepts(children, Some(code), out);
        }
    }
}

impl ServerState {
    fn load(options: &Options) -> Self {
        let mut value_sets = HashMap::new();
        let mut displays = HashMap::new();
        for vs in read_json_files(&fixtures_dir().join("valuesets")) {
            let url = vs["url"].as_str().expect("ValueSet.url").to_owned();
            let version = vs["version"].as_str().map(str::to_owned);
            let mut codes = Vec::new();
            flatten_contains(
                vs["expansion"]["contains"].as_array().expect("expansion"),
                &mut codes,
            );
            for (system, code, display) in &codes {
                if let Some(display) = display {
                    displays.insert((system.clone(), code.clone()), display.clone());
                }
            }
            let members = codes
                .iter()
                .map(|(s, c, _)| (s.clone(), c.clone()))
                .collect();
            let data = Arc::new(ValueSetData {
                url: url.clone(),
                version: version.clone(),
                codes,
                members,
            });
            if let Some(version) = &version {
                value_sets.insert(format!("{url}|{version}"), data.clone());
            }
            value_sets.insert(url, data);
        }
        let mut code_systems = HashMap::new();
        for cs in read_json_files(&fixtures_dir().join("codesystems")) {
            let url = cs["url"].as_str().expect("CodeSystem.url").to_owned();
            let mut concepts = HashMap::new();
            flatten_concepts(
                cs["concept"].as_array().expect("concept"),
                None,
                &mut concepts,
            );
            code_systems.insert(url, concepts);
        }
        Self {
            value_sets,
            code_systems,
            displays,
            calls: Default::default(),
            delay_ms: AtomicU64::new(0),
            fail_next: AtomicUsize::new(0),
            operation_outcome: Mutex::new(None),
            page_size: AtomicUsize::new(options.page_size),
            token: options.token.clone(),
            unauthorized: AtomicUsize::new(0),
        }
    }
}

fn fhir(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/fhir+json")],
        body.to_string(),
    )
        .into_response()
}

fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    fhir(
        status,
        json!({"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": code, "diagnostics": diagnostics}]}),
    )
}

fn parameters(params: Vec<Value>) -> Response {
    fhir(
        StatusCode::OK,
        json!({"resourceType": "Parameters", "parameter": params}),
    )
}

/// Counting, delay and failure injection shared by every operation.
async fn prelude(state: &ServerState, op: Op, headers: &HeaderMap) -> Option<Response> {
    state.calls[op.index()].fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(token) = &state.token {
        let expected = format!("Bearer {token}");
        if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            state.unauthorized.fetch_add(1, Ordering::SeqCst);
            return Some(outcome(
                StatusCode::UNAUTHORIZED,
                "login",
                "a valid bearer token is required",
            ));
        }
    }
    let failing = state
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        return Some(outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            "injected failure",
        ));
    }
    let injected = state
        .operation_outcome
        .lock()
        .ok()
        .and_then(|guard| guard.clone());
    if let Some(diagnostics) = injected {
        return Some(outcome(StatusCode::BAD_REQUEST, "processing", &diagnostics));
    }
    None
}

/// The value set asked for (`url`, `valueSetVersion`); a 404 OperationOutcome if unknown.
fn value_set(
    state: &ServerState,
    params: &HashMap<String, String>,
) -> Result<Arc<ValueSetData>, Box<Response>> {
    let url = params.get("url").map(String::as_str).unwrap_or_default();
    let key = match params.get("valueSetVersion") {
        Some(version) => format!("{url}|{version}"),
        None => url.to_owned(),
    };
    state.value_sets.get(&key).cloned().ok_or_else(|| {
        Box::new(outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            &format!("ValueSet {key} not found"),
        ))
    })
}

type Params = Query<HashMap<String, String>>;

async fn validate_code(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(response) = prelude(&state, Op::ValidateCode, &headers).await {
        return response;
    }
    let vs = match value_set(&state, &params) {
        Ok(vs) => vs,
        Err(response) => return *response,
    };
    let Some(code) = params.get("code") else {
        return outcome(StatusCode::BAD_REQUEST, "required", "code is required");
    };
    let found = match params.get("system") {
        Some(system) => vs.codes.iter().find(|(s, c, _)| s == system && c == code),
        None => vs.codes.iter().find(|(_, c, _)| c == code),
    };
    match found {
        Some((_, _, display)) => {
            let mut p = vec![json!({"name": "result", "valueBoolean": true})];
            if let Some(display) = display {
                p.push(json!({"name": "display", "valueString": display}));
            }
            parameters(p)
        }
        None => parameters(vec![
            json!({"name": "result", "valueBoolean": false}),
            json!({"name": "message", "valueString": format!("The code is not in the value set {}", vs.url)}),
        ]),
    }
}

async fn expand(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(response) = prelude(&state, Op::Expand, &headers).await {
        return response;
    }
    let vs = match value_set(&state, &params) {
        Ok(vs) => vs,
        Err(response) => return *response,
    };
    let page_size = state.page_size.load(Ordering::SeqCst);
    let offset: usize = params
        .get("offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or(0);
    let count: usize = params
        .get("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(page_size)
        .min(page_size);
    let contains: Vec<Value> = vs
        .codes
        .iter()
        .skip(offset)
        .take(count)
        .map(|(system, code, display)| json!({"system": system, "code": code, "display": display}))
        .collect();
    fhir(
        StatusCode::OK,
        json!({
            "resourceType": "ValueSet",
            "url": vs.url,
            "version": vs.version,
            "status": "active",
            "expansion": {
                "timestamp": "2026-11-25T00:00:00Z",
                "total": vs.codes.len(),
                "offset": offset,
                "contains": contains,
            }
        }),
    )
}

async fn lookup(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(response) = prelude(&state, Op::Lookup, &headers).await {
        return response;
    }
    let system = params.get("system").cloned().unwrap_or_default();
    let code = params.get("code").cloned().unwrap_or_default();
    let display = match state.code_systems.get(&system) {
        Some(concepts) => concepts.get(&code).map(|c| c.display.clone()),
        None => state
            .displays
            .get(&(system.clone(), code.clone()))
            .map(|d| Some(d.clone())),
    };
    match display {
        Some(display) => {
            let mut p = vec![json!({"name": "name", "valueString": system})];
            if let Some(display) = display {
                p.push(json!({"name": "display", "valueString": display}));
            }
            parameters(p)
        }
        None => outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            &format!("code not found in {system}"),
        ),
    }
}

async fn subsumes(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Some(response) = prelude(&state, Op::Subsumes, &headers).await {
        return response;
    }
    let system = params.get("system").cloned().unwrap_or_default();
    let Some(concepts) = state.code_systems.get(&system) else {
        return outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            &format!("CodeSystem {system} not found"),
        );
    };
    let (Some(a), Some(b)) = (params.get("codeA"), params.get("codeB")) else {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "codeA and codeB are required",
        );
    };
    for code in [a, b] {
        if !concepts.contains_key(code) {
            return outcome(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("unknown code {code}"),
            );
        }
    }
    let is_ancestor = |ancestor: &str, code: &str| {
        let mut current = concepts.get(code).and_then(|c| c.parent.as_deref());
        while let Some(parent) = current {
            if parent == ancestor {
                return true;
            }
            current = concepts.get(parent).and_then(|c| c.parent.as_deref());
        }
        false
    };
    let relation = if a == b {
        "equivalent"
    } else if is_ancestor(a, b) {
        "subsumes"
    } else if is_ancestor(b, a) {
        "subsumed-by"
    } else {
        "not-subsumed"
    };
    parameters(vec![json!({"name": "outcome", "valueCode": relation})])
}

/// A running terminology server. Stops when dropped.
pub struct TerminologyServer {
    pub addr: SocketAddr,
    /// FHIR base URL, e.g. `http://127.0.0.1:41234/fhir`.
    pub base_url: String,
    pub state: Arc<ServerState>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TerminologyServer {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> Self {
        let state = Arc::new(ServerState::load(&options));
        let app = Router::new()
            .route("/fhir/ValueSet/$validate-code", get(validate_code))
            .route("/fhir/ValueSet/$expand", get(expand))
            .route("/fhir/CodeSystem/$lookup", get(lookup))
            .route("/fhir/CodeSystem/$subsumes", get(subsumes))
            .with_state(state.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("terminology-test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = rx.await;
                        })
                        .await
                        .expect("terminology test server");
                });
            })
            .expect("spawn the test server thread");
        Self {
            addr,
            base_url: format!("http://{addr}/fhir"),
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn calls(&self, op: Op) -> usize {
        self.state.calls[op.index()].load(Ordering::SeqCst)
    }

    pub fn total_calls(&self) -> usize {
        self.state
            .calls
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum()
    }

    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// The next `n` requests answer 500 with an OperationOutcome.
    pub fn fail_next(&self, n: usize) {
        self.state.fail_next.store(n, Ordering::SeqCst);
    }

    /// Every request answers 400 with an OperationOutcome carrying `diagnostics` (None: stop).
    pub fn set_operation_outcome(&self, diagnostics: Option<&str>) {
        if let Ok(mut guard) = self.state.operation_outcome.lock() {
            *guard = diagnostics.map(str::to_owned);
        }
    }

    /// Stops serving: later requests find the port closed.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TerminologyServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
