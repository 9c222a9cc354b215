//! The `cardinal` command line: `serve` runs the service; `check` compiles a rules directory; `test`
//! runs the rule test cases (`test compact` and `test new` write them: [`cases`]); `explain` shows
//! why each rule of a service fired or not.

mod cases;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cardinal::auth::AuthMode;
use cardinal::cds_hooks::HookRequest;
use cardinal::config::Config;
use cardinal::evaluator::{CallOptions, Cardinal, parse_evaluation_time};
use cardinal::explain::ExplainReport;
use cardinal::rule_tests::{self, report};
use cardinal::telemetry;
use cardinal::transport::{Server, TlsReloader};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "cardinal",
    version,
    about = "CDS Hooks 2.0 decision support with sandboxed Rhai rules"
)]
struct Cli {
    /// TOML configuration file (settings may also come from CARDINAL_* variables).
    #[arg(long, env = "CARDINAL_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve CDS Hooks over HTTP/JSON and gRPC on one port.
    Serve {
        /// Address to listen on (overrides the configuration).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Rules directory (overrides the configuration).
        #[arg(long)]
        rules: Option<PathBuf>,
        /// Development profile: no authentication, callers may pin the evaluation time and the
        /// explain endpoint answers. Never for a deployment that sees patient data.
        #[arg(long)]
        dev: bool,
    },
    /// Validate every manifest and compile every rule, then check every rule file: functions no
    /// one defines, FHIR elements R4 does not have, card literals, values that may be absent read
    /// without a guard, card text, duplicate services. Every problem is reported at once as
    /// file:line:column: error|warning: message, with a hint.
    ///
    /// Exit status: 0 when there is no error (warnings alone pass, unless --deny-warnings), 1 when
    /// there is.
    Check {
        /// Rules directory (default: the configured one).
        dir: Option<PathBuf>,
        /// `text` (file:line:column lines on stderr) or `json` (one report on stdout).
        #[arg(long, value_enum, default_value = "text")]
        format: CheckFormat,
        /// Fail (exit 1) on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run the test cases in every `tests/` folder below the rules directory.
    ///
    /// Exit status: 0 when every case passes, 1 when any fails, 2 when a rule or a test file cannot
    /// be loaded.
    Test {
        /// Rules directory (default: the configured one).
        dir: Option<PathBuf>,
        /// Run only the cases whose file path or service id contains this text.
        #[arg(long)]
        filter: Option<String>,
        #[command(subcommand)]
        action: Option<cases::TestAction>,
    },
    /// Evaluate one request and show, for every rule of the service, whether it fired, the facts it
    /// recorded and the conditions it checked (which one was false when it did not fire).
    Explain {
        /// A CDS Hooks request, or a test-case file, full or compact (its request, `service` and
        /// `evaluation_time` are used).
        #[arg(long)]
        request: PathBuf,
        /// The service to call (default: the test case's `service`).
        #[arg(long)]
        service: Option<String>,
        /// Evaluation time ("now" for the rules): RFC 3339 or YYYY-MM-DD.
        #[arg(long)]
        at: Option<String>,
        /// Print the report as JSON (the same as `POST /cds-services/{id}/explain`).
        #[arg(long)]
        json: bool,
        /// Rules directory (default: the configured one).
        #[arg(long)]
        rules: Option<PathBuf>,
    },
    /// Load a server on this machine (HTTP or gRPC) and report goodput, latency and errors.
    Bench(Box<cardinal::loadgen::BenchArgs>),
    /// Run every service over a population (FHIR Bundles or a Bulk FHIR NDJSON export) and report
    /// firing rates, disparities and data blind spots; `simulate merge` joins shard reports.
    Simulate(Box<cardinal::simulate::SimulateArgs>),
    /// Cards, feedback, repeats, firing rates and drift per rule and version, read from the
    /// configured store (`[store]`: the SQLite file in the data directory, or PostgreSQL).
    Report {
        /// Start of the window: RFC 3339, YYYY-MM-DD, or a number of days back (`30d`).
        #[arg(long, default_value = "30d")]
        since: String,
        /// Print the figures as JSON (the same as `GET /analytics/rules`).
        #[arg(long)]
        json: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cardinal: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve { listen, rules, dev } => {
            if dev {
                config = config.development();
            }
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(rules) = rules {
                config.rules_dir = rules;
            }
            serve(config, dev)
        }
        Command::Check {
            dir,
            format,
            deny_warnings,
        } => Ok(check(
            dir.unwrap_or_else(|| config.rules_dir.clone()),
            &config,
            format,
            deny_warnings,
        )),
        Command::Test {
            action: Some(action),
            ..
        } => Ok(cases::run(action, &config)),
        Command::Test { dir, filter, .. } => Ok(test(
            dir.unwrap_or_else(|| config.rules_dir.clone()),
            filter.as_deref(),
            &config,
        )),
        Command::Explain {
            request,
            service,
            at,
            json,
            rules,
        } => {
            let dir = rules.unwrap_or_else(|| config.rules_dir.clone());
            Ok(explain(&request, service, at, json, &dir, &config))
        }
        Command::Bench(args) => Ok(cardinal::loadgen::main(&args)?),
        Command::Simulate(args) => Ok(cardinal::simulate::command::main(&args, &config)?),
        Command::Report { since, json } => report_command(&config, &since, json),
    }
}

/// `cardinal report`: the store's analytics as a table or JSON.
fn report_command(config: &Config, since: &str, json: bool) -> anyhow::Result<ExitCode> {
    use cardinal::store::{Store, Window};
    let window = Window::parse_since(since).ok_or_else(|| {
        anyhow::anyhow!("--since must be RFC 3339, YYYY-MM-DD or a number of days (30d)")
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let analytics = runtime.block_on(async {
        let store = Store::open_read_only(&config.store, &config.data_dir).await?;
        store.analytics(window).await
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&analytics)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} to {} ({} store)",
        analytics.window.since.format("%Y-%m-%d %H:%M"),
        analytics.window.until.format("%Y-%m-%d %H:%M"),
        analytics.database
    );
    println!(
        "{:<28} {:<24} {:<10} {:<9} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>8}",
        "service", "rule", "version", "mode", "shown", "acc", "ovr", "none", "ovr%", "rpt", "/1000"
    );
    for r in &analytics.rules {
        println!(
            "{:<28} {:<24} {:<10} {:<9} {:>6} {:>6} {:>6} {:>6} {:>7} {:>6} {:>8}",
            r.service_id,
            r.rule_id,
            r.rule_version,
            r.mode,
            r.shown,
            r.accepted,
            r.overridden,
            r.no_feedback,
            r.override_rate
                .map_or_else(|| "-".into(), |v| format!("{:.0}%", v * 100.0)),
            r.repeats,
            r.firings_per_1000_calls
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
        );
        for reason in r.override_reasons.iter().take(3) {
            println!(
                "    override: {} ({})",
                reason
                    .display
                    .as_deref()
                    .or(reason.code.as_deref())
                    .unwrap_or("no reason given"),
                reason.count
            );
        }
    }
    for d in analytics.drift.iter().filter(|d| d.flagged) {
        println!(
            "DRIFT {} {} {}: {:.1} per 1,000 calls today, {:.1} before",
            d.direction,
            d.service_id,
            d.rule_id,
            d.today_rate * 1000.0,
            d.baseline_rate * 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads a rules directory for `test` and `explain` (evaluation time pinning allowed); on failure
/// returns every error as `file:line:column: message`.
pub(crate) fn load_rules(dir: &Path, config: &Config) -> Result<Cardinal, Vec<String>> {
    let config = Config {
        rules_dir: dir.to_path_buf(),
        allow_evaluation_time_override: true,
        ..config.clone()
    };
    Cardinal::load(config).map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
}

fn test(dir: PathBuf, filter: Option<&str>, config: &Config) -> ExitCode {
    let loaded = load_rules(&dir, config);
    let suites = rule_tests::discover(&dir);
    let (cardinal, suites) = match (loaded, suites) {
        (Ok(cardinal), Ok(suites)) => (cardinal, suites),
        (loaded, suites) => {
            let mut errors = loaded.err().unwrap_or_default();
            errors.extend(
                suites
                    .err()
                    .unwrap_or_default()
                    .iter()
                    .map(ToString::to_string),
            );
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            return ExitCode::from(2);
        }
    };
    let unexpandable = cases::unexpandable(&cardinal, &suites);
    if !unexpandable.is_empty() {
        for error in &unexpandable {
            eprintln!("{error}");
        }
        eprintln!("{} error(s) in {}", unexpandable.len(), dir.display());
        return ExitCode::from(2);
    }
    let mut results = Vec::new();
    for suite in &suites {
        for case in &suite.cases {
            if filter.is_some_and(|f| !case.matches(f)) {
                continue;
            }
            let result = rule_tests::run_case(&cardinal, case, &suite.aliases);
            println!("{}", report::case_line(&result));
            if !result.passed() {
                print!("{}", report::failure_details(&result));
            }
            print!("{}", report::candidate_details(&result));
            results.push(result);
        }
    }
    if results.is_empty() {
        match filter {
            Some(f) => println!("no test case matches --filter `{f}`"),
            None => println!(
                "no test cases in the tests/ folders below {}",
                dir.display()
            ),
        }
    }
    println!("{}", report::summary_line(&results));
    if let Some(line) = report::candidate_summary(&results) {
        println!("{line}");
    }
    if results.iter().all(|r| r.passed()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A request file: a bare CDS Hooks request, or a test case (`request`, `service`,
/// `evaluation_time`).
fn read_request_file(path: &Path) -> Result<(Value, Option<String>, Option<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not valid JSON",
            path.display(),
            e.line(),
            e.column()
        )
    })?;
    let is_case = value.get("hook").is_none() && value.get("request").is_some_and(Value::is_object);
    if value.get("hook").is_none() && value.get("context").is_some() && !is_case {
        // A compact case: expanded once the rules are loaded.
        let text_field = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let (service, at) = (text_field("service"), text_field("evaluation_time"));
        return Ok((value, service, at));
    }
    if !is_case {
        return Ok((value, None, None));
    }
    let text_field = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let (service, at) = (text_field("service"), text_field("evaluation_time"));
    let request = value.get("request").cloned().unwrap_or(Value::Null);
    Ok((request, service, at))
}

fn explain(
    file: &Path,
    service: Option<String>,
    at: Option<String>,
    json: bool,
    dir: &Path,
    config: &Config,
) -> ExitCode {
    let usage = |message: String| {
        eprintln!("cardinal explain: {message}");
        ExitCode::from(2)
    };
    let (request, case_service, case_at) = match read_request_file(file) {
        Ok(found) => found,
        Err(e) => return usage(e),
    };
    let Some(service) = service.or(case_service) else {
        return usage(
            "--service is required (the request file is not a test case naming one)".into(),
        );
    };
    let evaluation_time = match at.or(case_at) {
        None => None,
        Some(text) => match parse_evaluation_time(&text) {
            Some(t) => Some(t),
            None => {
                return usage(format!(
                    "--at `{text}` is not an RFC 3339 date-time or a date"
                ));
            }
        },
    };
    let cardinal = match load_rules(dir, config) {
        Ok(c) => c,
        Err(errors) => {
            for error in &errors {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.len(), dir.display());
            return ExitCode::from(2);
        }
    };
    let refused = |status: u16, message: String| {
        eprintln!("refused with HTTP {status}: {message}");
        ExitCode::FAILURE
    };
    let request = match cases::expand_if_compact(file, request, &cardinal) {
        Ok(r) => r,
        Err(e) => return usage(e),
    };
    let request = match HookRequest::from_value(request) {
        Ok(r) => r,
        Err(e) => return refused(400, e.to_string()),
    };
    let options = CallOptions {
        evaluation_time,
        ..CallOptions::default()
    };
    let evaluation = match cardinal.evaluate(&service, request, options) {
        Ok(e) => e,
        Err(e) => return refused(e.http_status(), e.to_string()),
    };
    let report = ExplainReport::new(&evaluation);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return usage(format!("cannot write the report: {e}")),
        }
    } else {
        println!("{report}");
    }
    ExitCode::SUCCESS
}

/// How `cardinal check` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CheckFormat {
    Text,
    Json,
}

fn check(dir: PathBuf, config: &Config, format: CheckFormat, deny_warnings: bool) -> ExitCode {
    let config = Config {
        rules_dir: dir,
        ..config.clone()
    };
    let report = cardinal::lint::check(&config);
    match format {
        CheckFormat::Text => {
            let (out, err) = report.text();
            print!("{out}");
            eprint!("{err}");
        }
        CheckFormat::Json => println!("{}", report.json()),
    }
    if report.failed(deny_warnings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// `; services affected: a, b` for a load failure's message.
fn affected(errors: &cardinal::registry::LoadErrors) -> String {
    let services = errors.affected_services();
    if services.is_empty() {
        String::new()
    } else {
        format!("; services affected: {}", services.join(", "))
    }
}

fn serve(config: Config, dev: bool) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = runtime.block_on(async move {
        // The OTLP exporters need the runtime; they connect lazily, so a missing collector is not fatal.
        let _telemetry = telemetry::init(config.log_format, &config.log_filter);
        telemetry::install_panic_hook();
        if dev {
            tracing::warn!(
                "DEVELOPMENT PROFILE (--dev): NO AUTHENTICATION (any caller is served), callers may \
                 pin the evaluation time and the explain endpoint is on; never use it where patient \
                 data is served"
            );
        } else if config.auth.mode == AuthMode::Off {
            anyhow::bail!(
                "refusing to start: auth.mode = \"off\" is only allowed with `serve --dev`; \
                 configure [[auth.issuers]] for a deployment"
            );
        }
        let listen = config.listen;
        let admin_listen = config.admin_listen;
        let rules_dir = config.rules_dir.clone();
        let reload = config.reload.clone();
        let cardinal = match Cardinal::load(config) {
            Ok(c) => c,
            Err(errors) => {
                for error in &errors.0 {
                    eprintln!("{error}");
                }
                anyhow::bail!(
                    "refusing to start: {} error(s) in rules directory {}{}",
                    errors.0.len(),
                    rules_dir.display(),
                    affected(&errors)
                );
            }
        };
        let rule_set = cardinal.rule_set();
        let services = rule_set.registry().len();
        let rules = rule_set.registry().rule_count();
        let version = rule_set.version().to_owned();
        drop(rule_set);
        let server = Server::bind(cardinal.clone(), listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = server.local_addr()?;
        let admin = server
            .bind_admin(admin_listen)
            .with_context(|| format!("binding the admin listener {admin_listen}"))?;
        let admin_addr = admin.local_addr()?;
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = tokio::spawn(admin.serve(async {
            let _ = admin_stopped.await;
        }));
        let reloads = Reloads {
            tls: server.tls(),
            cardinal: cardinal.clone(),
        };
        let sighup = tokio::spawn(reload_on_sighup(reloads));
        // Dropping the watcher stops it: it lives as long as the server.
        let _watcher = if reload.watch {
            let debounce = std::time::Duration::from_millis(reload.debounce_ms);
            match cardinal::reload::watch(cardinal.clone(), debounce) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "rules directory not watched; reload with SIGHUP or the admin call");
                    None
                }
            }
        } else {
            None
        };
        tracing::info!(addr = %admin_addr, "admin listening (metrics, health, readiness, reload)");
        tracing::info!(
            %addr,
            tls = server.tls().is_some(),
            authentication = server.edge().authenticator().is_some(),
            services,
            rules,
            rule_set = %version,
            "cardinal listening (HTTP/JSON and gRPC)"
        );
        server.serve(shutdown_signal()).await?;
        sighup.abort();
        let _ = stop_admin.send(());
        let _ = admin_task.await;
        // Flushes pending metrics; traces are flushed when `_telemetry` is dropped.
        cardinal.metrics().shutdown();
        tracing::info!("cardinal stopped");
        Ok(ExitCode::SUCCESS)
    });
    // Calls cut at the end of the grace period may leave rule runs on the blocking pool; they are
    // bounded by the sandbox, but the process does not wait for them past this.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served
}

// --- SIGHUP: reload what can be reloaded without a restart --------------------------------------
// One handler for every reload, so each reloadable part adds a field and a line here.

/// What SIGHUP reloads.
struct Reloads {
    /// The TLS certificate and key of the EHR-facing port, when TLS is on.
    tls: Option<std::sync::Arc<TlsReloader>>,
    /// The rule set (loaded, compiled and tested before it is swapped in).
    cardinal: Cardinal,
}

impl Reloads {
    async fn reload(&self) {
        cardinal::reload::reload_async(&self.cardinal, cardinal::rule_set::Trigger::Signal).await;
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS certificate not reloaded; the previous one stays in use")
                }
            }
        }
    }
}

async fn reload_on_sighup(reloads: Reloads) {
    #[cfg(unix)]
    {
        let Ok(mut hangups) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("SIGHUP cannot be handled: reloads need a restart");
            return;
        };
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading");
            reloads.reload().await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reloads;
        std::future::pending::<()>().await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
