//! `cardinal bench`: its arguments, their limits, and the run. The arguments live here rather than
//! in `cli.rs` so that the generator and its bounds are one module, and the command line only
//! dispatches to it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::idle::{IdleOptions, run_idle};
use super::limits::raise_nofile_limit;
use super::run::{LoadModel, LoadOptions, Protocol, run_load};
use super::target::Target;
use super::workload::Workload;
use super::{
    BenchError, MAX_CONNECTIONS, MAX_DURATION, MAX_IDLE_CONNECTIONS, MAX_RATE, MAX_REQUESTS,
    parse_duration,
};

/// Connections (workers) of a closed-loop run by default.
const CLOSED_CONNECTIONS: usize = 8;
/// Connections of an open-model run by default: enough that the pool, not the server, is rarely
/// what makes due requests wait.
const OPEN_CONNECTIONS: usize = 64;
/// The default measured time.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// The longest warm-up.
const MAX_WARMUP: Duration = Duration::from_secs(60);
/// The most runtime threads (the generator shares the machine with the server it measures).
const MAX_THREADS: usize = 16;

fn duration_arg(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Load a Cardinal server on this machine (loopback only) and report throughput, goodput,
/// latency percentiles, statuses, transport errors and card consistency.
///
/// Closed loop by default (each connection sends, waits, repeats); `--rate` switches to a
/// fixed-rate open model whose latency counts from each request's scheduled time.
/// `--idle-connections` instead holds connections open and reports what became of them.
///
/// Exit status: 0 after a run, 1 when accepted answers disagreed on their cards, 2 when the run
/// could not start (bad arguments, a target that is not loopback, no server).
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// The server (http://HOST:PORT); HOST must be a loopback address or resolve to one.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A CDS Hooks request, or a rule test case (its `service` and `evaluation_time` are the
    /// defaults).
    #[arg(long, required_unless_present = "idle_connections")]
    pub request: Option<PathBuf>,
    /// The CDS service to call (default: the test case's).
    #[arg(long)]
    pub service: Option<String>,
    /// Pins "now" for the rules (RFC 3339 or YYYY-MM-DD), sent as `X-Cardinal-Evaluation-Time` /
    /// gRPC `evaluation_time` (default: the test case's).
    #[arg(long)]
    pub evaluation_time: Option<String>,
    /// An extra header, `Name: value` (repeatable); over gRPC it is sent as metadata.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Call `cardinal.v1.CdsHooks/CallHook` over gRPC instead of POSTing JSON.
    #[arg(long)]
    pub grpc: bool,
    /// Connections, one per worker [default: 8 closed loop, 64 open model].
    #[arg(long)]
    pub connections: Option<usize>,
    /// Open model: requests per second, due on schedule whatever the server does.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The measured time (e.g. 10s, 500ms, 2m; at most 300 s) [default: 10s, or until
    /// --requests are done].
    #[arg(long, value_parser = duration_arg)]
    pub duration: Option<Duration>,
    /// Stop after this many measured requests (at most 10,000,000).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Load sent before the measured time and not recorded.
    #[arg(long, value_parser = duration_arg, default_value = "0s")]
    pub warmup: Duration,
    /// A call not answered within this time is a `timeout` error.
    #[arg(long, value_parser = duration_arg, default_value = "10s")]
    pub timeout: Duration,
    /// The generator's runtime threads (it shares the machine with the server).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Open this many connections and hold them idle for --duration instead of loading.
    #[arg(long, conflicts_with_all = ["rate", "requests", "grpc", "warmup", "connections"])]
    pub idle_connections: Option<usize>,
    /// With --idle-connections: send one complete request on each, then hold it idle.
    #[arg(long, requires_all = ["idle_connections", "request"])]
    pub idle_after_request: bool,
    /// With --idle-connections: report this server process's RSS before, with and after.
    #[arg(long, requires = "idle_connections")]
    pub server_pid: Option<u32>,
}

fn usage(message: impl Into<String>) -> BenchError {
    BenchError::Usage(message.into())
}

/// Runs `cardinal bench` and prints its report.
pub fn main(args: &BenchArgs) -> Result<ExitCode, BenchError> {
    if !(1..=MAX_THREADS).contains(&args.threads) {
        return Err(usage(format!(
            "--threads must be between 1 and {MAX_THREADS}"
        )));
    }
    if args.timeout.is_zero() || args.timeout > MAX_DURATION {
        return Err(usage("--timeout must be above 0 and at most 300s"));
    }
    if let Some(d) = args.duration
        && (d.is_zero() || d > MAX_DURATION)
    {
        return Err(usage(format!(
            "--duration must be above 0 and at most {} s",
            MAX_DURATION.as_secs()
        )));
    }
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    }
    .map_err(BenchError::Runtime)?;
    runtime.block_on(async {
        let target = Target::resolve(&args.url).await?;
        match args.idle_connections {
            Some(connections) => idle(args, target, connections).await,
            None => load(args, target).await,
        }
    })
}

fn workload(args: &BenchArgs) -> Result<Workload, BenchError> {
    let Some(path) = &args.request else {
        return Err(usage("--request FILE is required"));
    };
    Workload::load(path, args.service.clone(), args.evaluation_time.clone())
}

async fn load(args: &BenchArgs, target: Target) -> Result<ExitCode, BenchError> {
    let model = match args.rate {
        None => LoadModel::Closed,
        Some(rate) if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE => {
            LoadModel::Open { rate }
        }
        Some(_) => {
            return Err(usage(format!(
                "--rate must be above 0 and at most {MAX_RATE}"
            )));
        }
    };
    let connections = args.connections.unwrap_or(match model {
        LoadModel::Closed => CLOSED_CONNECTIONS,
        LoadModel::Open { .. } => OPEN_CONNECTIONS,
    });
    if !(1..=MAX_CONNECTIONS).contains(&connections) {
        return Err(usage(format!(
            "--connections must be between 1 and {MAX_CONNECTIONS}"
        )));
    }
    if args.requests.is_some_and(|n| n == 0 || n > MAX_REQUESTS) {
        return Err(usage(format!(
            "--requests must be between 1 and {MAX_REQUESTS}"
        )));
    }
    if args.warmup > MAX_WARMUP {
        return Err(usage("--warmup must be at most 60s"));
    }
    raise_nofile_limit()?;
    let options = LoadOptions {
        target,
        workload: workload(args)?,
        protocol: if args.grpc {
            Protocol::Grpc
        } else {
            Protocol::Http
        },
        model,
        connections,
        duration: match (args.duration, args.requests) {
            (None, None) => Some(DEFAULT_DURATION),
            (duration, _) => duration,
        },
        max_requests: args.requests,
        warmup: args.warmup,
        timeout: args.timeout,
        headers: args.headers.clone(),
        threads: args.threads,
    };
    let report = run_load(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    if report.card_mismatches > 0 || report.unreadable_responses > 0 {
        eprintln!(
            "cardinal bench: {} accepted answer(s) differ from the first one's cards and {} are unreadable",
            report.card_mismatches, report.unreadable_responses
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn idle(
    args: &BenchArgs,
    target: Target,
    connections: usize,
) -> Result<ExitCode, BenchError> {
    if connections == 0 || connections > MAX_IDLE_CONNECTIONS {
        return Err(usage(format!(
            "--idle-connections must be between 1 and {MAX_IDLE_CONNECTIONS}"
        )));
    }
    let request = if args.idle_after_request {
        Some((workload(args)?, args.headers.clone()))
    } else {
        None
    };
    let options = IdleOptions {
        target,
        connections,
        hold: args.duration.unwrap_or(DEFAULT_DURATION),
        request,
        timeout: args.timeout,
        server_pid: args.server_pid,
    };
    let report = run_idle(&options).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}
