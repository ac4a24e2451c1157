//! The Redis servers a run starts: one, or a Redis Cluster of three masters
//! (no replicas: the bench measures the gateway's work, and a replica only
//! adds the servers' own). Killed when the run ends. Their command counters
//! give the Redis commands each publish costs.

use anyhow::{Context as _, bail};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Masters of a bench Redis Cluster.
pub const CLUSTER_MASTERS: usize = 3;

/// Redis servers started for the run.
#[derive(Default)]
pub struct RedisServers {
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl RedisServers {
    /// One server on `port`, data under `dir`.
    pub fn single(dir: &Path, port: u16) -> anyhow::Result<Self> {
        let mut servers = Self::default();
        servers.start(dir, port, false)?;
        Ok(servers)
    }

    /// A Redis Cluster of [`CLUSTER_MASTERS`] masters on `ports`, joined by
    /// `redis-cli --cluster create`, once it reports `cluster_state:ok`.
    pub fn cluster(dir: &Path, ports: &[u16]) -> anyhow::Result<Self> {
        let mut servers = Self::default();
        for &port in ports {
            servers.start(&dir.join(format!("redis-{port}")), port, true)?;
        }
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("running redis-cli --cluster create")?;
        if !created.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&created.stderr)
            );
        }
        let until = Instant::now() + Duration::from_secs(20);
        while !servers.healthy() {
            if Instant::now() > until {
                bail!("the Redis Cluster did not report cluster_state:ok within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(servers)
    }

    fn start(&mut self, dir: &Path, port: u16, cluster: bool) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            // Append-only, fsync every second: the settings the README asks for.
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--maxmemory-policy", "noeviction"])
            .arg("--dir")
            .arg(dir);
        if cluster {
            // The default bus port (port + 10,000) may not exist above 55,535.
            let bus = crate::run::free_port()?;
            command.args(["--cluster-port", &bus.to_string()]);
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server (apt-get install redis-server, or pass --redis-url)")?;
        self.children.push(child);
        self.ports.push(port);
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("redis-server did not listen on port {port} within 10 s")
    }

    fn healthy(&self) -> bool {
        self.ports
            .iter()
            .all(|p| ask(*p, &["cluster", "info"]).is_some_and(|i| i.contains("cluster_state:ok")))
    }

    /// Commands processed so far by all the servers (`INFO stats`), or
    /// `None` if one cannot be asked.
    pub fn commands(&self) -> Option<u64> {
        self.ports.iter().try_fold(0, |sum, p| {
            let stats = ask(*p, &["info", "stats"])?;
            let count = stats.lines().find_map(|l| {
                l.strip_prefix("total_commands_processed:")
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })?;
            Some(sum + count)
        })
    }
}

/// The answer of the server on `port` to `command`, through `redis-cli`.
fn ask(port: u16, command: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(command)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Drop for RedisServers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
