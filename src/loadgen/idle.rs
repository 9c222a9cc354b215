//! `--idle-connections N`: open N connections, send nothing (or one complete request each, with
//! `--idle-after-request`), hold them, and report how many were taken and when the server closed
//! them. With `--server-pid` the server's resident memory is read before, while the connections are
//! held, and after, which is how "10,000 idle connections cost ≤ 50 MB" is measured. Idle sockets
//! are what a slow-loris client or a fleet of EHR pools leaves behind, so the server must neither
//! run out of memory nor of descriptors holding them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::client::{CallPlan, TransportError};
use super::limits::{raise_nofile_limit, rss_kib};
use super::report::{IdleReport, RssReport};
use super::stats::SecondsSummary;
use super::target::Target;
use super::workload::Workload;
use super::{BenchError, MAX_IDLE_CONNECTIONS};

/// Connections opened at once: the server's accept backlog (1,024 for tokio listeners) would drop
/// the handshakes of a larger burst and the kernel would retry them only a second later.
const CONNECT_CONCURRENCY: usize = 256;

/// Descriptors kept for the runtime and stdio on top of the connections.
const SPARE_DESCRIPTORS: u64 = 64;

/// An idle-connection run.
#[derive(Debug, Clone)]
pub struct IdleOptions {
    pub target: Target,
    pub connections: usize,
    /// How long the connections are held once all are open.
    pub hold: Duration,
    /// `--idle-after-request`: the request sent once on each connection, and `--header` values.
    pub request: Option<(Workload, Vec<String>)>,
    /// For each connect and the one request.
    pub timeout: Duration,
    /// The server process whose RSS is read.
    pub server_pid: Option<u32>,
}

/// What became of one connection.
struct Held {
    /// How long the TCP handshake took, when it completed (above a second: the server's accept
    /// backlog was full and the kernel resent the SYN).
    connect: Result<Duration, TransportError>,
    request: Option<Result<u16, TransportError>>,
    /// When the server closed it, after it was opened.
    closed_after: Option<Duration>,
}

pub async fn run_idle(options: &IdleOptions) -> Result<IdleReport, BenchError> {
    if options.connections == 0 || options.connections > MAX_IDLE_CONNECTIONS {
        return Err(BenchError::Usage(format!(
            "--idle-connections must be between 1 and {MAX_IDLE_CONNECTIONS}"
        )));
    }
    let nofile = raise_nofile_limit()?;
    let needed = options.connections as u64 + SPARE_DESCRIPTORS;
    if needed > nofile {
        return Err(BenchError::Usage(format!(
            "{} connections need about {needed} open files; this process may open {nofile} \
             (raise the hard limit: ulimit -Hn)",
            options.connections
        )));
    }
    let plan = match &options.request {
        Some((workload, headers)) => {
            Some(Arc::new(CallPlan::new(&options.target, workload, headers)?))
        }
        None => None,
    };
    let rss_before = options.server_pid.and_then(rss_kib);
    let (release, released) = watch::channel(false);
    let (connected_tx, mut connected) = mpsc::unbounded_channel::<()>();
    let permits = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..options.connections {
        let job = HoldJob {
            addr: options.target.addr,
            plan: plan.clone(),
            permits: Arc::clone(&permits),
            connected: connected_tx.clone(),
            released: released.clone(),
            timeout: options.timeout,
        };
        tasks.spawn(job.run());
    }
    drop(connected_tx);
    let mut attempts = 0;
    while attempts < options.connections && connected.recv().await.is_some() {
        attempts += 1;
    }
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(options.hold).await;
    let rss_with = options.server_pid.and_then(rss_kib);
    let _ = release.send(true);
    let mut held = Vec::with_capacity(options.connections);
    while let Some(joined) = tasks.join_next().await {
        if let Ok(h) = joined {
            held.push(h);
        }
    }
    // Let the server notice the closed sockets and free what they held.
    let rss_after = match options.server_pid {
        Some(pid) => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            rss_kib(pid)
        }
        None => None,
    };
    Ok(report(
        options,
        &held,
        connect_s,
        nofile,
        [rss_before, rss_with, rss_after],
    ))
}

struct HoldJob {
    addr: SocketAddr,
    plan: Option<Arc<CallPlan>>,
    permits: Arc<Semaphore>,
    connected: mpsc::UnboundedSender<()>,
    released: watch::Receiver<bool>,
    timeout: Duration,
}

impl HoldJob {
    async fn run(mut self) -> Held {
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        let opened_at = Instant::now();
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.failed(TransportError::from_io(&e)),
            Err(_) => return self.failed(TransportError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let connect_time = opened_at.elapsed();
        let mut held = match self.plan.take() {
            None => {
                drop(permit);
                let _ = self.connected.send(());
                self.hold_raw(stream, opened_at).await
            }
            Some(plan) => {
                self.hold_after_request(stream, &plan, opened_at, permit)
                    .await
            }
        };
        held.connect = Ok(connect_time);
        held
    }

    fn failed(&self, kind: TransportError) -> Held {
        let _ = self.connected.send(());
        Held {
            connect: Err(kind),
            request: None,
            closed_after: None,
        }
    }

    /// Waits for the server to close the connection (end of file or reset) or for the release.
    async fn hold_raw(&mut self, mut stream: TcpStream, opened_at: Instant) -> Held {
        let mut buf = [0u8; 512];
        let closed = async {
            loop {
                match stream.read(&mut buf).await {
                    // Unprompted bytes (e.g. a 408 answer) are read; the close follows.
                    Ok(n) if n > 0 => continue,
                    _ => return opened_at.elapsed(),
                }
            }
        };
        let closed_after = tokio::select! {
            after = closed => Some(after),
            _ = self.released.wait_for(|r| *r) => None,
        };
        Held {
            connect: Ok(Duration::ZERO),
            request: None,
            closed_after,
        }
    }

    /// Sends one request, reads its answer, then holds the (keep-alive) connection.
    async fn hold_after_request(
        &mut self,
        stream: TcpStream,
        plan: &CallPlan,
        opened_at: Instant,
        permit: Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
    ) -> Held {
        let handshake = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await;
        let (mut sender, connection) = match handshake {
            Ok(parts) => parts,
            Err(e) => {
                drop(permit);
                let _ = self.connected.send(());
                return Held {
                    connect: Ok(Duration::ZERO),
                    request: Some(Err(TransportError::from_hyper(&e))),
                    closed_after: None,
                };
            }
        };
        let mut driver = tokio::spawn(async move {
            let _ = connection.await;
            Instant::now()
        });
        let exchange = async {
            let response = sender
                .send_request(plan.http_request())
                .await
                .map_err(|e| TransportError::from_hyper(&e))?;
            let status = response.status().as_u16();
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| TransportError::from_hyper(&e))?;
            Ok(status)
        };
        let request = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout),
        };
        drop(permit);
        let _ = self.connected.send(());
        let closed_after = tokio::select! {
            closed = &mut driver => Some(closed.map_or_else(|_| opened_at.elapsed(), |at| at - opened_at)),
            _ = self.released.wait_for(|r| *r) => None,
        };
        // Closing the client side ends the driver task.
        drop(sender);
        Held {
            connect: Ok(Duration::ZERO),
            request: Some(request),
            closed_after,
        }
    }
}

fn report(
    options: &IdleOptions,
    held: &[Held],
    connect_s: f64,
    nofile: u64,
    [before, with, after]: [Option<u64>; 3],
) -> IdleReport {
    let connected = held.iter().filter(|h| h.connect.is_ok()).count();
    let mut connect_errors: BTreeMap<&'static str, u64> = TransportError::ALL
        .iter()
        .map(|k| (k.as_str(), 0))
        .collect();
    let mut request_statuses = BTreeMap::new();
    let mut request_errors = 0;
    let mut closed: Vec<Duration> = Vec::new();
    let mut connect_times: Vec<Duration> = Vec::new();
    for h in held {
        match h.connect {
            Ok(time) => connect_times.push(time),
            Err(kind) => *connect_errors.entry(kind.as_str()).or_default() += 1,
        }
        match h.request {
            Some(Ok(status)) => *request_statuses.entry(status.to_string()).or_default() += 1,
            Some(Err(_)) => request_errors += 1,
            None => {}
        }
        if let Some(after) = h.closed_after {
            closed.push(after);
        }
    }
    let closed_by_server = closed.len();
    let server_rss_kib = match (before, with, after) {
        (Some(before), Some(with_connections), Some(after)) => Some(RssReport {
            before,
            with_connections,
            after,
            per_connection_bytes: (connected > closed_by_server).then(|| {
                with_connections.saturating_sub(before) * 1024
                    / (connected - closed_by_server) as u64
            }),
        }),
        _ => None,
    };
    IdleReport {
        url: options.target.url.clone(),
        requested: options.connections,
        connected,
        connect_errors,
        request_statuses,
        request_errors,
        held_s: options.hold.as_secs_f64(),
        closed_by_server,
        closed_after_s: SecondsSummary::of(&mut closed),
        open_at_end: connected - closed_by_server.min(connected),
        connect_s: (connect_s * 1000.0).round() / 1000.0,
        connect_time_s: SecondsSummary::of(&mut connect_times),
        nofile_limit: nofile,
        server_pid: options.server_pid,
        server_rss_kib,
    }
}
