//! The `cardinal` command line: `serve` runs the service; `check` compiles a rules directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use cardinal::config::Config;
use cardinal::evaluator::Cardinal;
use cardinal::registry;
use cardinal::telemetry;
use cardinal::transport::Server;

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
    },
    /// Validate every manifest and compile every rule; report each error as file:line:column.
    Check {
        /// Rules directory (default: the configured one).
        dir: Option<PathBuf>,
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
        Command::Serve { listen, rules } => {
            if let Some(listen) = listen {
                config.listen = listen;
            }
            if let Some(rules) = rules {
                config.rules_dir = rules;
            }
            serve(config)
        }
        Command::Check { dir } => Ok(check(
            dir.unwrap_or_else(|| config.rules_dir.clone()),
            &config,
        )),
    }
}

fn check(dir: PathBuf, config: &Config) -> ExitCode {
    let config = Config {
        rules_dir: dir.clone(),
        ..config.clone()
    };
    match Cardinal::engine(&config).and_then(|engine| {
        let registry = registry::load(&dir, &engine)?;
        Ok((engine, registry))
    }) {
        Ok((engine, registry)) => {
            println!(
                "ok: {} services, {} rules in {}",
                registry.len(),
                registry.rule_count(),
                dir.display()
            );
            if let Some(local) = engine.terminology().local_source() {
                if local.report().files > 0 {
                    println!("terminology: {}", local.report());
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("{error}");
            }
            eprintln!("{} error(s) in {}", errors.0.len(), dir.display());
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        // The OTLP exporters need the runtime; they connect lazily, so a missing collector is not fatal.
        let _telemetry = telemetry::init(config.log_format, &config.log_filter);
        let listen = config.listen;
        let rules_dir = config.rules_dir.clone();
        let cardinal = match Cardinal::load(config) {
            Ok(c) => c,
            Err(errors) => {
                for error in &errors.0 {
                    eprintln!("{error}");
                }
                anyhow::bail!(
                    "refusing to start: {} error(s) in rules directory {}",
                    errors.0.len(),
                    rules_dir.display()
                );
            }
        };
        let services = cardinal.registry().len();
        let rules = cardinal.registry().rule_count();
        let server = Server::bind(cardinal.clone(), listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = server.local_addr()?;
        tracing::info!(%addr, services, rules, "cardinal listening (HTTP/JSON and gRPC)");
        server.serve(shutdown_signal()).await?;
        cardinal.metrics().shutdown();
        tracing::info!("cardinal stopped");
        Ok(ExitCode::SUCCESS)
    })
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
