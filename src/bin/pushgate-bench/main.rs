//! `pushgate-bench`: a load generator for pushgate. It plays the XMPP server
//! (accepting the gateway's XEP-0114 component connections) and APNs/FCM
//! (HTTP/2 + TLS mocks), registers devices, publishes at a rate or with a
//! window, and reports throughput, latency, losses and the gateway's CPU and
//! memory. See BENCHMARKS.md.

// The load generator measures real time; the clock ban of clippy.toml is for
// the gateway's own code.
#![allow(clippy::disallowed_methods)]

/// The bench shares the machine with the gateway it measures: mimalloc keeps
/// its own allocation cost down, as in the gateway.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cluster_stats;
mod gateway_process;
mod ledger;
mod load;
mod pki;
mod presets;
mod redis_servers;
mod report;
mod run;
mod sink;
mod xmpp_peer;

use anyhow::{Context as _, bail};
use clap::Parser;
use gateway_process::StoreChoice;
use load::{Pace, Shape};
use presets::PaceSpec;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Load-test pushgate: throughput, latency, losses, CPU and memory.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Scenario: smoke, throughput, latency, devices, faults, soak, overload.
    #[arg(long, default_value = "smoke")]
    preset: String,
    /// Print one JSON line on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// The pushgate binary; default: `pushgate` beside this one.
    #[arg(long)]
    gateway: Option<PathBuf>,
    /// "embedded", "redis" or "redis-cluster" (three masters, started).
    #[arg(long, default_value = "embedded")]
    store: String,
    /// With --store redis: use this server instead of starting one.
    #[arg(long)]
    redis_url: Option<String>,
    /// Devices, for every phase (replaces the preset's).
    #[arg(long)]
    devices: Option<u32>,
    /// Open loop at this many publishes/s (replaces the preset's pace).
    #[arg(long, conflicts_with = "window")]
    rate: Option<u32>,
    /// Closed loop with this many publishes awaiting replies.
    #[arg(long)]
    window: Option<u32>,
    /// Seconds of sending per phase.
    #[arg(long)]
    duration: Option<u64>,
    /// Component connections.
    #[arg(long)]
    connections: Option<usize>,
    /// Mock provider latency, ms.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// The gateway's `[delivery] coalesce_window_ms`.
    #[arg(long)]
    coalesce_ms: Option<u64>,
    /// Publish shape.
    #[arg(long, value_enum)]
    shape: Option<Shape>,
    /// Fail unless nothing was lost, duplicated or refused (always on for smoke).
    #[arg(long)]
    strict: bool,
    /// Gateway processes, as one cluster on the run's Redis (needs --store
    /// redis or redis-cluster); publishes are spread over all their streams.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Keep the run directory (gateway config, store, log).
    #[arg(long)]
    keep_dir: bool,
    /// The first node's HTTP port (`/metrics`), the others' following it,
    /// for a Prometheus to scrape during the run; free ports if absent.
    #[arg(long)]
    http_port: Option<u16>,
    /// A TOML file appended to every gateway's configuration (e.g. a
    /// `[telemetry]` section, to measure what it costs).
    #[arg(long)]
    gateway_toml: Option<PathBuf>,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("pushgate-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Waits for SIGINT or SIGTERM; the signal's name. If a handler cannot be
/// installed, that signal keeps its default action and this waits for the
/// other.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let wait = |kind: SignalKind| async move {
        match signal(kind) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = wait(SignalKind::interrupt()) => "SIGINT",
        () = wait(SignalKind::terminate()) => "SIGTERM",
    }
}

/// Runs the chosen preset; false if a strict run found violations.
fn run(cli: &Cli) -> anyhow::Result<bool> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut preset = presets::preset(&cli.preset).with_context(|| {
        format!(
            "unknown preset {:?}; choose one of {}",
            cli.preset,
            presets::NAMES.join(", ")
        )
    })?;
    adjust(&mut preset, cli);
    let (store, start_redis) = match (cli.store.as_str(), &cli.redis_url) {
        ("embedded", None) => (StoreChoice::Embedded, false),
        ("redis", Some(url)) => (StoreChoice::Redis(url.clone()), false),
        ("redis", None) => (
            StoreChoice::Redis(format!("redis://127.0.0.1:{}", run::free_port()?)),
            true,
        ),
        ("redis-cluster", None) => (
            StoreChoice::RedisCluster(
                (0..redis_servers::CLUSTER_MASTERS)
                    .map(|_| Ok(format!("redis://127.0.0.1:{}", run::free_port()?)))
                    .collect::<anyhow::Result<_>>()?,
            ),
            true,
        ),
        (_, Some(_)) => bail!("--redis-url needs --store redis"),
        (other, _) => bail!("--store must be embedded, redis or redis-cluster, got {other:?}"),
    };
    if cli.nodes == 0 || (cli.nodes > 1 && cli.store == "embedded") {
        bail!(
            "--nodes must be at least 1, and above 1 needs --store redis or redis-cluster (the nodes share it)"
        );
    }
    let options = run::RunOptions {
        nodes: cli.nodes,
        gateway: match &cli.gateway {
            Some(path) => path.clone(),
            None => std::env::current_exe()?
                .parent()
                .context("no directory for the bench binary")?
                .join("pushgate"),
        },
        store,
        start_redis,
        keep_dir: cli.keep_dir,
        progress: !cli.quiet,
        http_port: cli.http_port,
        gateway_toml: match &cli.gateway_toml {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
            None => String::new(),
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(async {
        tokio::select! {
            report = run::run(&preset, &options) => report,
            // Dropping the run stops what it started: gateways and Redis
            // servers are killed and waited for by their `Drop`, which
            // the default action of these signals would skip.
            signal = stop_signal() => Err(anyhow::anyhow!("stopped by {signal}; its processes are gone")),
        }
    })?;
    let table = report::table(&report);
    if cli.json {
        eprint!("{table}");
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{table}");
    }
    let mut violations = report::tigase_unsafe_refusals(&report);
    if preset.strict {
        violations.extend(report::violations(&report));
    }
    for v in &violations {
        eprintln!("pushgate-bench: FAILED: {v}");
    }
    Ok(violations.is_empty())
}

/// Applies the command line's overrides to the preset.
fn adjust(preset: &mut presets::Preset, cli: &Cli) {
    for phase in &mut preset.phases {
        if let Some(devices) = cli.devices {
            phase.devices = devices;
        }
        if let Some(rate) = cli.rate {
            phase.pace = PaceSpec::Fixed(Pace::Rate(rate));
        }
        if let Some(window) = cli.window {
            phase.pace = PaceSpec::Fixed(Pace::Window(window));
        }
        if let Some(seconds) = cli.duration {
            phase.duration = Duration::from_secs(seconds);
        }
    }
    if let Some(connections) = cli.connections {
        preset.connections = connections;
    }
    if let Some(latency) = cli.latency_ms {
        preset.sink.latency_ms = latency;
    }
    if let Some(coalesce) = cli.coalesce_ms {
        preset.coalesce_ms = coalesce;
    }
    if let Some(shape) = cli.shape {
        preset.shape = shape;
    }
    preset.strict |= cli.strict;
}
