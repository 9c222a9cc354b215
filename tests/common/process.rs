//! The real `cardinal serve` binary as a subprocess on 127.0.0.1:0: its address is read from the JSON
//! log line `cardinal listening`, and its stdout and stderr are captured as they come (so its pipes
//! never fill up) for tests that inspect the logs.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Output of a child process, read as it comes.
pub struct Output {
    text: Arc<Mutex<String>>,
    lines: mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Output {
    pub fn capture(stream: impl Read + Send + 'static) -> Self {
        let text = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let sink = Arc::clone(&text);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        Self {
            text,
            lines,
            reader: Some(reader),
        }
    }

    /// What the process has written so far.
    pub fn text(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Everything the process wrote, once the stream has closed.
    fn finish(&mut self) -> String {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.text()
    }
}

/// A running `cardinal serve`.
pub struct CardinalProcess {
    child: Child,
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The admin listener (metrics, health, readiness).
    pub admin_addr: SocketAddr,
    stdout: Output,
    stderr: Output,
    /// The data directory (audit trail).
    pub data_dir: tempfile::TempDir,
}

/// What the process wrote, after it stopped.
pub struct Logs {
    pub stdout: String,
    pub stderr: String,
    pub exited_cleanly: bool,
}

impl CardinalProcess {
    /// `cardinal serve --dev --listen 127.0.0.1:0 --rules <rules>` (no authentication) with JSON
    /// logs, from the project directory, the admin listener on another loopback port and a temporary
    /// data directory. `CARDINAL_*`, `OTEL_*` and `RUST_LOG` variables of the test's own environment
    /// are not passed on; `env` is set on top (e.g. `CARDINAL_LOG_FILTER`,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub fn spawn(rules: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_with_args(rules, env, &["--dev"])
    }

    /// The same with exactly these further `serve` arguments: without `--dev`, the production
    /// profile (authentication required: `env` must name a configuration with issuers).
    pub fn spawn_with_args(rules: &Path, env: &[(&str, &str)], args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        Self::spawn_in(rules, env, args, data_dir)
    }

    /// The same on an existing data directory (a restart after [`CardinalProcess::kill`]).
    pub fn spawn_in(
        rules: &Path,
        env: &[(&str, &str)],
        args: &[&str],
        data_dir: tempfile::TempDir,
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cardinal"));
        command
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--rules")
            .arg(rules)
            .args(args)
            .current_dir(super::project_path(""));
        for (key, _) in std::env::vars_os() {
            let name = key.to_string_lossy();
            if name.starts_with("CARDINAL_") || name.starts_with("OTEL_") || name == "RUST_LOG" {
                command.env_remove(&key);
            }
        }
        command.env("CARDINAL_LOG_FORMAT", "json");
        // The tests pin "now" so their cards do not depend on the day they run.
        command.env("CARDINAL_ALLOW_EVALUATION_TIME_OVERRIDE", "true");
        command.env("CARDINAL_ADMIN_LISTEN", "127.0.0.1:0");
        command.env("CARDINAL_DATA_DIR", data_dir.path());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cardinal");
        let stdout = Output::capture(child.stdout.take().expect("stdout"));
        let stderr = Output::capture(child.stderr.take().expect("stderr"));
        let (addr, admin_addr) = match listening_addresses(&stderr, Duration::from_secs(60)) {
            Ok(addrs) => addrs,
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{why}:\n{}", stderr.text());
            }
        };
        Self {
            child,
            addr,
            base: format!("http://{addr}"),
            admin_addr,
            stdout,
            stderr,
            data_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A URL on the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// stdout and stderr so far.
    pub fn logs_so_far(&self) -> (String, String) {
        (self.stdout.text(), self.stderr.text())
    }

    /// Polls stderr until `pattern` appears in it or `timeout` passes.
    pub async fn wait_for_log(&self, pattern: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.stderr.text().contains(pattern) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stderr.text().contains(pattern)
    }

    /// A tonic channel to the same port (gRPC shares it with HTTP).
    pub async fn grpc_channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.base.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("grpc connect")
    }

    /// SIGKILL: no shutdown, no flush; returns the data directory for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(
            &mut self.data_dir,
            tempfile::tempdir().expect("temporary data directory"),
        )
    }

    /// Stops the process as an orchestrator would (SIGTERM: graceful shutdown, which flushes the
    /// telemetry exporters), killing it if it has not exited within `grace`; returns its output.
    pub fn stop(mut self, grace: Duration) -> Logs {
        let mut exited_cleanly = false;
        let terminated = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        if terminated {
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                match self.child.try_wait() {
                    Ok(Some(status)) => {
                        exited_cleanly = status.success();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        if !exited_cleanly {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        Logs {
            stdout: self.stdout.finish(),
            stderr: self.stderr.finish(),
            exited_cleanly,
        }
    }
}

impl Drop for CardinalProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The addresses from the JSON log lines `admin listening ... "addr":...` and
/// `cardinal listening ... "addr":"127.0.0.1:PORT"`.
fn listening_addresses(
    stderr: &Output,
    timeout: Duration,
) -> Result<(SocketAddr, SocketAddr), String> {
    let deadline = Instant::now() + timeout;
    let mut admin = None;
    while Instant::now() < deadline {
        let line = match stderr.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("cardinal exited before listening".into());
            }
        };
        let address = |line: &str| -> Result<SocketAddr, String> {
            let value: Value = serde_json::from_str(line)
                .map_err(|e| format!("the listening line is not JSON ({e}): {line}"))?;
            value["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .ok_or_else(|| format!("no addr in the listening line: {line}"))
        };
        if line.contains("admin listening") {
            admin = Some(address(&line)?);
        } else if line.contains("cardinal listening") {
            let main = address(&line)?;
            let admin = admin.ok_or("no admin listening line before the listening line")?;
            return Ok((main, admin));
        }
    }
    Err("cardinal did not start listening".into())
}
