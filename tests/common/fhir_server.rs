//! A real FHIR R4 server for prefetch tests: `tests/fhir-server/server.mjs` (Medplum's FHIR router over
//! its in-memory repository) run with node on 127.0.0.1, one process per test. It counts the requests
//! it gets and can be told to answer late or with an error status.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use super::project_path;

/// A request as the FHIR server saw it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeenRequest {
    pub method: String,
    /// Path and query, e.g. `/fhir/Patient/123`.
    pub url: String,
    /// Whether it carried the bearer token the server was started with (true when none was).
    pub authorized: bool,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct FhirServerOptions {
    /// Bearer token every FHIR request must carry.
    pub token: Option<String>,
    pub delay_ms: Option<u64>,
    pub fail_status: Option<u16>,
}

pub struct FhirServer {
    child: Child,
    /// Held open: the server exits when its standard input closes.
    _stdin: Option<ChildStdin>,
    pub port: u16,
    /// The FHIR base URL, without a trailing slash: `http://127.0.0.1:PORT/fhir`.
    pub base: String,
    admin: String,
    http: reqwest::Client,
}

/// The small Synthea patients shipped in `tests/fixtures/synthea/`.
pub fn synthea_fixtures() -> Vec<PathBuf> {
    let dir = project_path("tests/fixtures/synthea");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".json.gz"))
        .collect();
    files.sort();
    files
}

/// Installs the node packages on first use (`.ci/fhir-server-setup.sh`: `npm ci`, a no-op when they
/// are current), so `cargo test` alone works on a new machine; says how to fix it when it cannot.
fn check_installed() -> PathBuf {
    static INSTALL: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let dir = project_path("tests/fhir-server");
    let installed = INSTALL.get_or_init(|| {
        let status = Command::new("bash")
            .arg(project_path(".ci/fhir-server-setup.sh"))
            .stdout(std::process::Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("exit status {status}"))
        }
    });
    if let Err(e) = installed {
        panic!(
            "the test FHIR server could not be installed in {} ({e}).\n\
             It needs Node.js 20.19+ with npm and the npm registry: run `bash .ci/fhir-server-setup.sh`.",
            dir.display()
        );
    }
    dir
}

impl FhirServer {
    /// Starts a server holding the resources of `bundles`.
    pub fn start(bundles: &[PathBuf], options: FhirServerOptions) -> Self {
        let dir = check_installed();
        let mut command = Command::new("node");
        command
            .arg(dir.join("server.mjs"))
            .args(["--port", "0", "--base", "/fhir"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(token) = &options.token {
            command.args(["--token", token]);
        }
        if let Some(delay) = options.delay_ms {
            command.args(["--delay-ms", &delay.to_string()]);
        }
        if let Some(status) = options.fail_status {
            command.args(["--fail-status", &status.to_string()]);
        }
        command.args(bundles.iter().map(|p| p.as_os_str()));
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start the test FHIR server with `node` (Node.js 20.19+ needed): {e}")
        });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the test FHIR server did not print its port within 60 s");
            }
        };
        let port: u16 = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            let status = child.wait().ok();
            panic!("the test FHIR server did not start (first line {line:?}, exit {status:?})")
        });
        Self {
            child,
            _stdin: stdin,
            port,
            base: format!("http://127.0.0.1:{port}/fhir"),
            admin: format!("http://127.0.0.1:{port}/__admin"),
            http: reqwest::Client::new(),
        }
    }

    /// Every FHIR request seen since the start or the last [`reset`](Self::reset).
    pub async fn requests(&self) -> Vec<SeenRequest> {
        let body: Value = self
            .http
            .get(format!("{}/requests", self.admin))
            .send()
            .await
            .expect("admin requests")
            .json()
            .await
            .expect("admin requests JSON");
        serde_json::from_value(body["requests"].clone()).expect("requests list")
    }

    pub async fn reset(&self) {
        self.http
            .post(format!("{}/reset", self.admin))
            .send()
            .await
            .expect("admin reset");
    }

    /// From now on, answer every FHIR request `delay_ms` late and/or with `fail_status`.
    pub async fn behave(&self, delay_ms: u64, fail_status: Option<u16>) {
        self.http
            .post(format!("{}/behaviour", self.admin))
            .json(&json!({"delayMs": delay_ms, "failStatus": fail_status}))
            .send()
            .await
            .expect("admin behaviour");
    }

    /// GET a FHIR URL relative to the base, as the test's own client (with `token`, if any).
    pub async fn get(&self, relative: &str, token: Option<&str>) -> Value {
        let mut request = self.http.get(format!("{}/{relative}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("FHIR GET");
        assert!(
            response.status().is_success(),
            "{relative}: {}",
            response.status()
        );
        response.json().await.expect("FHIR JSON")
    }

    pub fn dir() -> PathBuf {
        project_path("tests/fhir-server")
    }

    pub fn is_installed() -> bool {
        Path::new(&Self::dir())
            .join("node_modules/@medplum/fhir-router")
            .is_dir()
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
