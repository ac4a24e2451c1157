//! One bench run: mocks up, gateway started, phases driven and measured,
//! gateway stopped.

use crate::cluster_stats::ForwardStats;
use crate::gateway_process::{GatewaySettings, StoreChoice, cluster_cpu_s, sample, sample_all};
use crate::ledger::{CurrentLedger, Ledger, Totals};
use crate::load::{self, Pace, Shape, Writers};
use crate::presets::{PaceSpec, Phase, Preset};
use crate::redis_servers::RedisServers;
use crate::sink::{Sink, SinkBehaviour};
use crate::xmpp_peer::{Replies, accept_components};
use anyhow::{Context as _, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

const SECRET: &str = "bench-component-secret";
/// Registrations awaiting their reply at once.
const REGISTER_WINDOW: u32 = 512;
/// Publishes a closed-loop phase has room for, per second of its duration.
const CLOSED_LOOP_ROOM_PER_S: u64 = 150_000;

/// What the command line chose besides the preset.
pub struct RunOptions {
    /// Gateway processes (a cluster when above 1).
    pub nodes: usize,
    /// The pushgate binary.
    pub gateway: PathBuf,
    /// Where registrations live.
    pub store: StoreChoice,
    /// Start a Redis server for the run (`--store redis` without `--redis-url`).
    pub start_redis: bool,
    /// Keep the run's directory (config, store, gateway log).
    pub keep_dir: bool,
    /// Print progress to stderr every second.
    pub progress: bool,
    /// HTTP port of the first node (the others follow); free ports if absent.
    pub http_port: Option<u16>,
    /// TOML appended to every gateway's configuration (`[telemetry]`, …).
    pub gateway_toml: String,
}

/// The whole run, as reported.
#[derive(Debug, serde::Serialize)]
pub struct RunReport {
    /// Preset name.
    pub preset: String,
    /// "embedded" or "redis".
    pub store: &'static str,
    /// Where it ran.
    pub machine: Machine,
    /// Gateway processes.
    pub nodes: usize,
    /// Component connections (for the whole cluster).
    pub connections: usize,
    /// Publish shape.
    pub shape: Shape,
    /// The mocks' behaviour.
    pub sink: SinkBehaviour,
    /// The gateway's coalesce window.
    pub coalesce_ms: u64,
    /// Each phase.
    pub phases: Vec<PhaseReport>,
    /// Peak RSS of the gateway over the run, MiB.
    pub gateway_peak_rss_mib: f64,
    /// Whether the gateway stopped cleanly on SIGTERM.
    pub gateway_stopped_cleanly: bool,
}

/// The machine the numbers come from.
#[derive(Debug, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
}

/// One phase, as reported.
#[derive(Debug, serde::Serialize)]
pub struct PhaseReport {
    /// Phase name.
    pub name: String,
    /// Devices registered when it published.
    pub devices: u32,
    /// Registrations made before it, their duration and failures.
    pub registered: u32,
    /// Seconds the registrations took.
    pub registration_s: f64,
    /// Registrations answered with an error.
    pub registration_errors: u64,
    /// The pace used.
    pub pace: Pace,
    /// Seconds of sending.
    pub duration_s: f64,
    /// Publishes sent per second (achieved).
    pub sent_per_s: f64,
    /// Deliveries per second between 20% and 95% of the sending time.
    pub steady_deliveries_per_s: f64,
    /// Seconds from the end of sending until everything was answered and delivered.
    pub drain_s: f64,
    /// Counts and latencies.
    #[serde(flatten)]
    pub totals: Totals,
    /// Gateway CPU seconds while sending and draining.
    pub gateway_cpu_s: f64,
    /// Gateway CPU per delivery, µs.
    pub gateway_cpu_us_per_delivery: f64,
    /// The bench's own CPU seconds over the same time.
    pub bench_cpu_s: f64,
    /// Gateway RSS at the end of the phase, MiB.
    pub gateway_rss_mib: f64,
    /// Gateway peak RSS so far, MiB.
    pub gateway_peak_rss_mib: f64,
    /// Multi-node runs: the share of publishes forwarded to their owner.
    pub forwarded_share: Option<f64>,
    /// Multi-node runs: 99th percentile of a forward's round trip, as the
    /// bound of its histogram bucket, ms.
    pub forward_p99_ms: Option<f64>,
    /// In a cluster: CPU of the nodes' cluster threads (gRPC both ways,
    /// and the owner's own work on what peers forward) per forwarded
    /// publish, µs.
    pub cluster_cpu_us_per_forwarded: Option<f64>,
    /// Runs on a Redis the bench started: commands the servers processed
    /// (all of them, membership and leases included) per publish sent.
    pub redis_commands_per_publish: Option<f64>,
}

/// Runs `preset`.
pub async fn run(preset: &Preset, options: &RunOptions) -> anyhow::Result<RunReport> {
    let dir = tempfile::Builder::new()
        .prefix("pushgate-bench-")
        .tempdir()?;
    let current = Arc::new(CurrentLedger::default());
    let sink = Sink::start(dir.path(), current.clone(), preset.sink).await?;
    let max_devices = preset.phases.iter().map(|p| p.devices).max().unwrap_or(0);
    let replies = Arc::new(Replies::new(current.clone(), max_devices as usize));
    let port_of = |url: &String| -> anyhow::Result<u16> {
        url.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("redis URL has no port")
    };
    let redis = match (&options.store, options.start_redis) {
        (StoreChoice::Redis(url), true) => Some(RedisServers::single(dir.path(), port_of(url)?)?),
        (StoreChoice::RedisCluster(urls), true) => {
            let ports: Vec<u16> = urls.iter().map(port_of).collect::<anyhow::Result<_>>()?;
            Some(RedisServers::cluster(dir.path(), &ports)?)
        }
        _ => None,
    };
    // A cluster has at least a stream per node, so every node receives.
    let connections = preset.connections.max(options.nodes);
    let xmpp_port = free_port()?;
    let http_ports: Vec<u16> = match options.http_port {
        Some(first) => (0..options.nodes)
            .map(|i| {
                u16::try_from(i)
                    .ok()
                    .and_then(|i| first.checked_add(i))
                    .context("--http-port too high for the nodes")
            })
            .collect::<anyhow::Result<_>>()?,
        None => (0..options.nodes)
            .map(|_| free_port())
            .collect::<anyhow::Result<_>>()?,
    };
    let settings = GatewaySettings {
        binary: &options.gateway,
        dir: dir.path(),
        xmpp_port,
        http_port: 0,
        connections,
        secret: SECRET,
        store: &options.store,
        sink: &sink,
        coalesce_ms: preset.coalesce_ms,
        max_in_flight: preset.max_in_flight,
        cluster: None,
        extra: &options.gateway_toml,
    };
    let mut gateways =
        crate::gateway_process::start_all(&settings, options.nodes, &http_ports).await?;
    let listener = TcpListener::bind(("127.0.0.1", xmpp_port)).await?;
    let accepted = accept_components(
        &listener,
        connections,
        SECRET,
        &replies,
        Duration::from_secs(30),
    )
    .await;
    let writers: Writers = match accepted {
        Ok(w) => w.into_iter().map(tokio::sync::Mutex::new).collect(),
        Err(e) => {
            let logs: Vec<String> = gateways
                .iter()
                .map(|g| std::fs::read_to_string(&g.log).unwrap_or_default())
                .collect();
            bail!("{e:#}\ngateway logs:\n{}", logs.join("\n---\n"));
        }
    };
    let pids: Vec<String> = gateways.iter().map(|g| g.pid().to_string()).collect();
    let mut phases: Vec<PhaseReport> = Vec::new();
    let mut registered = 0;
    let mut next_seq = 0;
    for phase in &preset.phases {
        let pace = match phase.pace {
            PaceSpec::Fixed(pace) => pace,
            PaceSpec::HalfOfPrevious => {
                let max = phases.last().map_or(0.0, |p| p.steady_deliveries_per_s);
                Pace::Rate(((max / 2.0) as u32).max(1))
            }
        };
        let started = Instant::now();
        let errors = if phase.devices > registered {
            if options.progress {
                eprintln!(
                    "[{}] registering devices {registered}..{}",
                    phase.name, phase.devices
                );
            }
            load::register(
                &writers,
                &replies,
                registered,
                phase.devices,
                REGISTER_WINDOW,
            )
            .await?
        } else {
            0
        };
        let registration_s = started.elapsed().as_secs_f64();
        let newly = phase.devices.saturating_sub(registered);
        registered = registered.max(phase.devices);
        for g in &mut gateways {
            g.check_alive()?;
        }
        let capacity = match pace {
            Pace::Rate(rate) => u64::from(rate) * phase.duration.as_secs().max(1) + 1000,
            Pace::Window(_) => CLOSED_LOOP_ROOM_PER_S * phase.duration.as_secs().max(1),
        };
        let ledger = Arc::new(Ledger::new(
            next_seq,
            capacity as usize,
            max_devices as usize,
            phase.duration + preset.drain + Duration::from_secs(5),
        ));
        next_seq = ledger.end();
        current.set(ledger.clone());
        let mut report = measure(
            phase,
            pace,
            preset,
            &writers,
            &replies,
            &ledger,
            &pids,
            &http_ports,
            redis.as_ref(),
            options.progress,
        )
        .await?;
        report.registered = newly;
        report.registration_s = registration_s;
        report.registration_errors = errors;
        for g in &mut gateways {
            g.check_alive()?;
        }
        phases.push(report);
    }
    let peak = sample_all(&pids).map(|s| s.peak_rss_mib).unwrap_or(0.0);
    let stopped = gateways
        .iter_mut()
        .map(|g| g.stop(Duration::from_secs(20)))
        .collect::<anyhow::Result<Vec<()>>>();
    if options.keep_dir {
        eprintln!("run directory kept: {}", dir.keep().display());
    }
    Ok(RunReport {
        preset: preset.name.to_owned(),
        store: match options.store {
            StoreChoice::Embedded => "embedded",
            StoreChoice::Redis(_) => "redis",
            StoreChoice::RedisCluster(_) => "redis-cluster",
        },
        machine: machine(),
        nodes: options.nodes,
        connections,
        shape: preset.shape,
        sink: preset.sink,
        coalesce_ms: preset.coalesce_ms,
        phases,
        gateway_peak_rss_mib: peak,
        gateway_stopped_cleanly: stopped.is_ok(),
    })
}

/// Sends one phase's publishes, drains, and measures.
#[allow(clippy::too_many_arguments)]
async fn measure(
    phase: &Phase,
    pace: Pace,
    preset: &Preset,
    writers: &Writers,
    replies: &Arc<Replies>,
    ledger: &Arc<Ledger>,
    pids: &[String],
    http_ports: &[u16],
    redis: Option<&RedisServers>,
    progress: bool,
) -> anyhow::Result<PhaseReport> {
    let forwards_before = ForwardStats::read(http_ports).await;
    let commands_before = redis.and_then(RedisServers::commands);
    let gateway_before = sample_all(pids)?;
    let clustered = pids.len() > 1;
    // Read per thread: only where it is reported.
    let cluster_cpu_before = clustered.then(|| cluster_cpu_s(pids));
    let bench_before = sample("self")?;
    let reporter = progress.then(|| {
        tokio::spawn(report_progress(
            phase.name.clone(),
            ledger.clone(),
            pids.to_vec(),
        ))
    });
    let started = Instant::now();
    load::publish(
        writers,
        replies,
        ledger,
        phase.devices,
        pace,
        preset.shape,
        phase.duration,
    )
    .await?;
    let sending = started.elapsed();
    let drain_started = Instant::now();
    while drain_started.elapsed() < preset.drain {
        if ledger.unanswered() == 0 && ledger.outstanding() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_s = drain_started.elapsed().as_secs_f64();
    if let Some(task) = reporter {
        task.abort();
    }
    let gateway_after = sample_all(pids)?;
    let cluster_cpu = cluster_cpu_before.map(|before| cluster_cpu_s(pids) - before);
    let (share, p99) = ForwardStats::read(http_ports).await.since(&forwards_before);
    let bench_after = sample("self")?;
    let totals = ledger.totals();
    let offset = started.saturating_duration_since(ledger.start());
    let steady = ledger.delivery_rate(
        offset + sending.mul_f64(0.2),
        offset + sending.mul_f64(0.95),
    );
    let gateway_cpu_s = gateway_after.cpu_s - gateway_before.cpu_s;
    let forwarded = totals.deliveries as f64 * share;
    let cluster_cpu_us_per_forwarded = cluster_cpu
        .filter(|_| forwarded > 0.0)
        .map(|cpu_s| cpu_s * 1e6 / forwarded);
    let sent = totals.sent as f64;
    let redis_commands = commands_before
        .zip(redis.and_then(RedisServers::commands))
        .map(|(before, after)| after.saturating_sub(before));
    Ok(PhaseReport {
        name: phase.name.clone(),
        devices: phase.devices,
        registered: 0,
        registration_s: 0.0,
        registration_errors: 0,
        pace,
        duration_s: sending.as_secs_f64(),
        sent_per_s: totals.sent as f64 / sending.as_secs_f64().max(1e-9),
        steady_deliveries_per_s: steady,
        drain_s,
        gateway_cpu_us_per_delivery: if totals.deliveries > 0 {
            gateway_cpu_s * 1e6 / totals.deliveries as f64
        } else {
            0.0
        },
        totals,
        gateway_cpu_s,
        bench_cpu_s: bench_after.cpu_s - bench_before.cpu_s,
        gateway_rss_mib: gateway_after.rss_mib,
        gateway_peak_rss_mib: gateway_after.peak_rss_mib,
        forwarded_share: clustered.then_some(share),
        forward_p99_ms: if clustered { p99 } else { None },
        cluster_cpu_us_per_forwarded,
        redis_commands_per_publish: redis_commands.map(|c| c as f64 / sent.max(1.0)),
    })
}

async fn report_progress(name: String, ledger: Arc<Ledger>, pids: Vec<String>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    loop {
        tick.tick().await;
        let delivered = ledger.deliveries();
        let gw = sample_all(&pids).unwrap_or_default();
        let replies = ledger.replies();
        eprintln!(
            "[{name}] {:>4.0}s sent {:>9} replies {:>9} delivered {:>9} ({:>7}/s) gateway {:>6.1} MiB {:>4} fds, {:>6} answered not delivered",
            start.elapsed().as_secs_f64(),
            ledger.sent(),
            replies,
            delivered,
            delivered - last,
            gw.rss_mib,
            gw.fds,
            replies.saturating_sub(delivered),
        );
        last = delivered;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn machine() -> Machine {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    Machine {
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu_model,
    }
}
