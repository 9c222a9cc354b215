//! `cardinal bench`: the load generator the hardening targets are measured with (goodput and p99
//! under overload, time to answer a refusal, memory per idle connection).
//!
//! Why one in the repo rather than wrk or ghz: the numbers must mean the same thing on every machine
//! and in every change, for both transports, and a clinical service needs more than latency. So it
//! - speaks HTTP/JSON (one hyper HTTP/1.1 connection per worker, no pooling it cannot see) and gRPC
//!   (one HTTP/2 connection per worker, with the typed context: see [`client`]);
//! - runs a closed loop (N workers: send, wait, repeat) or a fixed-rate open model whose latency is
//!   measured from each request's *scheduled* send time, so a stalled server is charged for the
//!   requests it kept from being sent (no coordinated omission);
//! - checks every answer: a 200 whose cards differ from the first 200's, and answers that carry a
//!   rule diagnostic, are counted (non-determinism in clinical advice is a bug, not noise);
//! - holds thousands of idle connections to measure what they cost the server;
//! - refuses any target that is not on this machine's loopback: it generates load, so it must
//!   never be pointed at someone else's server.
//!
//! Parts: [`target`] (the URL and the loopback check), [`workload`] (the request file),
//! [`client`] (one call, classified), [`run`] (the two load models), [`stats`] (histograms and
//! counters), [`report`] (text and JSON), [`idle`] (idle connections), [`limits`] (file
//! descriptors, a process's RSS), [`command`] (the command-line arguments).

pub mod client;
pub mod command;
pub mod idle;
pub mod limits;
pub mod report;
pub mod run;
pub mod stats;
pub mod target;
pub mod workload;

use std::path::PathBuf;
use std::time::Duration;

pub use command::{BenchArgs, main};
pub use idle::{IdleOptions, run_idle};
pub use report::{IdleReport, LoadReport};
pub use run::{LoadModel, LoadOptions, Protocol, run_load};
pub use target::Target;
pub use workload::Workload;

use crate::rule_tests::CaseError;

/// The longest run `--duration` accepts (a load generator's runs are bounded).
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// The most requests `--requests` accepts.
pub const MAX_REQUESTS: u64 = 10_000_000;
/// The most concurrent connections (and so workers) of a load run.
pub const MAX_CONNECTIONS: usize = 4096;
/// The most idle connections `--idle-connections` opens (the machine's descriptor limit is 20,000).
pub const MAX_IDLE_CONNECTIONS: usize = 19_000;
/// The highest `--rate`.
pub const MAX_RATE: f64 = 1_000_000.0;

/// Why a bench run could not start or finish. A refused call or a transport error during the run is
/// not an error: it is counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("`{url}` is not a usable target: {reason}")]
    Url { url: String, reason: String },
    #[error(
        "refusing to send load to `{url}`: {host} is not a loopback address; cardinal bench only \
         targets a server on this machine (127.0.0.0/8, [::1] or localhost)"
    )]
    NotLoopback { url: String, host: String },
    #[error("cannot resolve `{host}`: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{}: cannot read: {source}", path.display())]
    ReadRequest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: not valid JSON", path.display())]
    RequestJson {
        path: PathBuf,
        line: usize,
        column: usize,
    },
    #[error(transparent)]
    Case(#[from] CaseError),
    #[error("cannot connect to {addr}: {reason} (is `cardinal serve` running there?)")]
    Connect { addr: String, reason: String },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("cannot raise the open-file limit: {0}")]
    FileLimit(std::io::Error),
    #[error("cannot write the report: {0}")]
    Output(#[from] serde_json::Error),
}

/// Parses a duration as `--duration` takes it: `10s`, `500ms`, `2m`, `1.5s`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, BenchError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        BenchError::Usage(format!(
            "`{text}` is not a duration (examples: 10s, 500ms, 2m, 1.5)"
        ))
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        _ => return Err(bad()),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").ok(), Some(Duration::from_secs(10)));
        assert_eq!(
            parse_duration("500ms").ok(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_duration("2m").ok(), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_duration("1.5").ok(),
            Some(Duration::from_millis(1500))
        );
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("").is_err());
    }
}
