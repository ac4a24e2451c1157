//! Redis servers the tests start themselves on free loopback ports: one
//! instance, or a Redis Cluster of three masters with a replica each. Never a
//! Redis the test did not start. Needs `redis-server` and `redis-cli`
//! (`apt-get install redis-server`; `tests/run.sh` installs it).

use super::gateway::free_port;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Cluster node timeout: how long a dead master takes to be replaced.
pub const NODE_TIMEOUT_MS: u64 = 1_500;

fn require(binary: &str) {
    let found = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{binary} not found: install it with `apt-get install redis-server` (tests/run.sh does)"
    );
}

/// One redis-server process.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    /// The cluster bus port, for a cluster node.
    cluster_bus: Option<u16>,
    /// For a TLS-only server: its TLS arguments, and redis-cli's.
    tls: Option<(Vec<String>, Vec<String>)>,
}

impl RedisServer {
    /// Starts a standalone server with AOF (`everysec`) under `dir`.
    pub fn start(dir: &Path) -> Self {
        let mut server = Self::reserve(dir, false);
        server.launch();
        server
    }

    /// A server with a port and a directory, not running yet (see [`Self::launch`]).
    pub fn reserve(dir: &Path, cluster: bool) -> Self {
        require("redis-server");
        let port = free_port();
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        Self {
            child: None,
            port,
            dir,
            cluster_bus: cluster.then(free_port),
            tls: None,
        }
    }

    /// Starts a standalone server that speaks only TLS (`rediss://`), with
    /// `cert`/`key` (PEM files) and demanding a client certificate signed by
    /// `ca` (a PEM file); redis-cli uses `client` to talk to it.
    pub fn start_tls(
        dir: &Path,
        ca: &Path,
        cert: &Path,
        key: &Path,
        client: (&Path, &Path),
    ) -> Self {
        let mut server = Self::reserve(dir, false);
        let path = |p: &Path| p.display().to_string();
        let args = vec![
            "--tls-cert-file".to_owned(),
            path(cert),
            "--tls-key-file".to_owned(),
            path(key),
            "--tls-ca-cert-file".to_owned(),
            path(ca),
            "--tls-auth-clients".to_owned(),
            "yes".to_owned(),
        ];
        let cli = vec![
            "--tls".to_owned(),
            "--cacert".to_owned(),
            path(ca),
            "--cert".to_owned(),
            path(client.0),
            "--key".to_owned(),
            path(client.1),
        ];
        server.tls = Some((args, cli));
        server.launch();
        server
    }

    fn start_with(dir: &Path, cluster: bool) -> Self {
        let mut server = Self::reserve(dir, cluster);
        server.launch();
        server
    }

    /// Starts the process (again) and waits until it answers.
    pub fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.tls {
            None => command.args(["--port", &self.port.to_string()]),
            Some((args, _)) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .args(args),
        };
        command
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
            ])
            .args(["--daemonize", "no", "--protected-mode", "no"])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if let Some(bus) = self.cluster_bus {
            // The bus port is explicit: the default (port + 10000) may be taken.
            command.args(["--cluster-port", &bus.to_string()]);
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                // Replicas sync at once (not after the default 5 s), so that
                // a master killed early has a replica able to take over.
                "--repl-diskless-sync-delay",
                "0",
            ]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).as_deref() != Some("PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {} did not start; see {}",
                self.port,
                self.dir.join("redis.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown save, only what the AOF holds survives.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a command with redis-cli against this server.
    pub fn cli(&self, args: &[&str]) -> Option<String> {
        match &self.tls {
            None => cli(self.port, args),
            Some((_, tls)) => {
                let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
                all.extend(args);
                cli(self.port, &all)
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// `redis-cli -p PORT args…`, trimmed output, `None` if it failed.
pub fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.starts_with("Could not connect") && !s.starts_with("ERR"))
}

/// Three masters, one replica each.
pub struct RedisCluster {
    /// Every node; which are masters changes with failovers.
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts six nodes under `dir` and joins them with `redis-cli --cluster create`.
    pub fn start(dir: &Path) -> Self {
        require("redis-cli");
        let nodes: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_with(dir, true)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_healthy(Duration::from_secs(20));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cluster.replicas_in_sync() {
            assert!(Instant::now() < deadline, "the replicas did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    /// Seed URLs for `store.urls`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The `[store]` keys for this cluster.
    pub fn store_toml(&self) -> String {
        let quoted: Vec<String> = self.urls().iter().map(|u| format!("{u:?}")).collect();
        format!(
            "backend = \"redis\"\ncluster = true\nurls = [{}]\n",
            quoted.join(", ")
        )
    }

    /// Whether every live replica has its master link up.
    fn replicas_in_sync(&self) -> bool {
        self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
            n.cli(&["INFO", "replication"]).is_some_and(|info| {
                info.contains("role:master") || info.contains("master_link_status:up")
            })
        })
    }

    /// Ports of the live nodes that are masters now.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .filter(|n| {
                n.cli(&["ROLE"])
                    .is_some_and(|r| r.lines().next() == Some("master"))
            })
            .map(|n| n.port)
            .collect()
    }

    /// Keys held by the master on `port`.
    pub fn dbsize(&self, port: u16) -> u64 {
        cli(port, &["DBSIZE"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until every live node reports `cluster_state:ok` and three masters
    /// serve all slots.
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let all_ok = self.nodes.iter().filter(|n| n.child.is_some()).all(|n| {
                n.cli(&["CLUSTER", "INFO"])
                    .is_some_and(|i| i.contains("cluster_state:ok"))
            });
            if all_ok && self.masters().len() == 3 {
                return;
            }
            if Instant::now() >= deadline {
                let live = self.nodes.iter().find(|n| n.child.is_some());
                let view = live.and_then(|n| n.cli(&["CLUSTER", "NODES"]));
                panic!("the Redis Cluster did not become healthy:\n{view:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The node on `port`.
    pub fn node_mut(&mut self, port: u16) -> &mut RedisServer {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// A replica of the master on `port`, from `CLUSTER REPLICAS`.
    pub fn replica_of(&self, master_port: u16) -> u16 {
        let id = cli(master_port, &["CLUSTER", "MYID"]).expect("master id");
        let replicas = cli(master_port, &["CLUSTER", "REPLICAS", &id]).expect("replicas");
        replicas
            .split_whitespace()
            .find_map(|field| field.split('@').next()?.rsplit_once(':')?.1.parse().ok())
            .expect("a replica address")
    }
}
