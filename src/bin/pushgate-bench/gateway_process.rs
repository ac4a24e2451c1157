//! The gateway under test as a child process: its configuration, start, the
//! CPU time and memory read from `/proc`, and a graceful stop.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the registrations live during the run.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// The embedded redb store in the run's directory.
    Embedded,
    /// A Redis server at this URL.
    Redis(String),
    /// A Redis Cluster, its masters at these URLs.
    RedisCluster(Vec<String>),
}

/// What goes into the gateway's configuration.
#[derive(Clone)]
pub struct GatewaySettings<'a> {
    /// The pushgate binary.
    pub binary: &'a Path,
    /// Directory for configuration, store and log.
    pub dir: &'a Path,
    /// Port of the bench's component listener.
    pub xmpp_port: u16,
    /// Port of the gateway's HTTP listener.
    pub http_port: u16,
    /// Component connections the gateway opens.
    pub connections: usize,
    /// The component secret.
    pub secret: &'a str,
    /// The store.
    pub store: &'a StoreChoice,
    /// Mock provider URL and key material.
    pub sink: &'a crate::sink::Sink,
    /// `[delivery] coalesce_window_ms`.
    pub coalesce_ms: u64,
    /// `max_in_flight` of each provider.
    pub max_in_flight: u32,
    /// In a multi-node run: this node's id and gRPC port.
    pub cluster: Option<(String, u16)>,
    /// TOML appended to the configuration.
    pub extra: &'a str,
}

/// The running gateway; killed on drop if still running.
pub struct Gateway {
    child: Child,
    /// The gateway's log file.
    pub log: PathBuf,
}

impl Gateway {
    /// Writes the configuration and starts the gateway.
    pub fn start(settings: &GatewaySettings<'_>) -> anyhow::Result<Self> {
        let config_path = settings.dir.join("pushgate.toml");
        std::fs::write(&config_path, config(settings)).context("writing the gateway config")?;
        let log = settings.dir.join("gateway.log");
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(settings.binary)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {}", settings.binary.display()))?;
        Ok(Self { child, log })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the gateway has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "the gateway exited ({status}); its log: {}",
                self.log.display()
            );
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after).
    pub fn stop(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + grace;
        while Instant::now() < until {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("the gateway exited with {status} after SIGTERM");
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        bail!("the gateway did not stop within {grace:?} of SIGTERM")
    }
}

/// Starts `nodes` gateways, node `i` in `dir/n<i>` with HTTP on
/// `http_ports[i]` (a cluster when there are several), and waits until they
/// share every shard between them: their streams connect only then (the
/// caller binds the component listener after), so no stream is opened and
/// handed over while the run measures.
pub async fn start_all(
    settings: &GatewaySettings<'_>,
    nodes: usize,
    http_ports: &[u16],
) -> anyhow::Result<Vec<Gateway>> {
    let mut gateways = Vec::new();
    for (i, &http_port) in http_ports.iter().enumerate().take(nodes) {
        let dir = settings.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&dir)?;
        let cluster = (nodes > 1)
            .then(|| crate::run::free_port().map(|p| (format!("n{i}"), p)))
            .transpose()?;
        gateways.push(Gateway::start(&GatewaySettings {
            dir: &dir,
            http_port,
            cluster,
            ..*settings
        })?);
    }
    if nodes > 1 {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let mut owned = 0.0;
            for port in http_ports {
                owned += shards_owned(*port).await;
            }
            if (owned - 1024.0).abs() < 0.5 {
                break;
            }
            for g in &mut gateways {
                g.check_alive()?;
            }
            if Instant::now() > until {
                bail!(
                    "the {nodes} nodes did not share the 1024 shards within 60 s ({owned} owned)"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(gateways)
}

async fn shards_owned(port: u16) -> f64 {
    let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0.0;
    };
    let text = r.text().await.unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("pushgate_cluster_shards_owned "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(s: &GatewaySettings<'_>) -> String {
    let store = match s.store {
        StoreChoice::Embedded => format!("path = \"{}\"", s.dir.join("data").display()),
        StoreChoice::Redis(url) => format!("backend = \"redis\"\nurl = \"{url}\""),
        StoreChoice::RedisCluster(urls) => format!(
            "backend = \"redis\"\ncluster = true\nurls = [{}]",
            urls.iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let sink = s.sink;
    format!(
        r#"[component]
jid = "{jid}"
secret = "{secret}"
reconnect_min_ms = 100
reconnect_max_ms = 1000

[[component.servers]]
host = "127.0.0.1"
port = {port}
connections = {connections}

[store]
{store}

[http]
listen = "127.0.0.1:{http_port}"

[delivery]
queue_capacity = 100000
coalesce_window_ms = {coalesce}
retry_base_ms = 200
retry_max_ms = 2000
include_body = true

[log]
level = "warn"

[[providers]]
id = "apns"
kind = "apns"
endpoint = "{url}"
ca_file = "{ca}"
topic = "com.example.bench"
team_id = "TEAM123456"
key_id = "TESTKEY01"
key_file = "{p8}"
max_in_flight = {in_flight}

[[providers]]
id = "fcm"
kind = "fcm"
endpoint = "{url}"
ca_file = "{ca}"
service_account_file = "{sa}"
max_in_flight = {in_flight}
"#,
        jid = crate::xmpp_peer::COMPONENT_JID,
        secret = s.secret,
        port = s.xmpp_port,
        http_port = s.http_port,
        connections = s.connections,
        coalesce = s.coalesce_ms,
        url = sink.url,
        ca = sink.pki.ca_file.display(),
        p8 = sink.pki.apns_key_file.display(),
        sa = sink.pki.service_account_file.display(),
        in_flight = s.max_in_flight,
    ) + &s
        .cluster
        .as_ref()
        .map(|(id, port)| {
            format!(
                "\n[cluster]\nnode_id = \"{id}\"\nlisten = \"127.0.0.1:{port}\"\nsecret = \"bench-cluster-secret-0123456789\"\n"
            )
        })
        .unwrap_or_default()
        + "\n"
        + s.extra
}

/// CPU time and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    /// Resident set size now, MiB.
    pub rss_mib: f64,
    /// Peak resident set size so far (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// Open file descriptors now.
    pub fds: usize,
}

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, 100 on Linux.
const USER_HZ: f64 = 100.0;

/// The sum of [`sample`] over `pids` (the nodes of a multi-node run).
pub fn sample_all(pids: &[String]) -> anyhow::Result<ProcSample> {
    let mut total = ProcSample::default();
    for pid in pids {
        let s = sample(pid)?;
        total.cpu_s += s.cpu_s;
        total.rss_mib += s.rss_mib;
        total.peak_rss_mib += s.peak_rss_mib;
        total.fds += s.fds;
    }
    Ok(total)
}

/// Reads `/proc/<pid>` (`"self"` for the bench itself).
pub fn sample(pid: &str) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(ProcSample {
        cpu_s: cpu_of(&stat).context("unexpected /proc stat format")?,
        rss_mib: kib("VmRSS:") / 1024.0,
        peak_rss_mib: kib("VmHWM:") / 1024.0,
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count),
    })
}

/// The name of the cluster runtime's threads as `/proc` shows it (the
/// kernel keeps 15 bytes of `pushgate-cluster`).
const CLUSTER_THREADS: &str = "pushgate-cluste";

/// A `stat` line's command name and the fields after it (the name may hold
/// spaces and parentheses: it ends at the last `)`).
fn split_stat(stat: &str) -> Option<(&str, &str)> {
    let (_, rest) = stat.split_once('(')?;
    rest.rsplit_once(')')
}

/// User + system CPU seconds in a `stat` line; `None` if it cannot be read.
fn cpu_of(stat: &str) -> Option<f64> {
    // After the command name: state is field 3, utime 14 and stime 15.
    let (_, after) = split_stat(stat)?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((ticks(11) + ticks(12)) / USER_HZ)
}

/// User + system CPU seconds so far of the cluster runtime's threads
/// (`pushgate-cluster`: the gRPC server and client, forwarding) of every
/// process in `pids`. A thread gone since is not counted: the runtime's
/// threads live as long as the process.
pub fn cluster_cpu_s(pids: &[String]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| split_stat(stat).is_some_and(|(comm, _)| comm == CLUSTER_THREADS))
        .filter_map(|stat| cpu_of(&stat))
        .sum()
}
