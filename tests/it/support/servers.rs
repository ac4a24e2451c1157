//! Real XMPP servers for the interop tests: Prosody 0.12 + mod_cloud_notify and
//! ejabberd 23.01 + mod_push from Debian's packages, each started from a fresh
//! directory on free loopback ports, and stopped (exactly that process group)
//! on drop. A server that fails to start fails the test with its log tail.

use super::gateway::free_port;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The XMPP domain of the test servers.
pub const DOMAIN: &str = "localhost";
/// Accounts created on every server: (name, password).
pub const USERS: &[(&str, &str)] = &[
    ("alice", "alicepass"),
    ("bob", "bobpass"),
    ("carol", "carolpass"),
    ("dave", "davepass"),
];

/// Prosody's `push_max_errors` in the tests: low, so that "disabled after its
/// error count" and "wait errors are not counted" both show quickly.
pub const PROSODY_MAX_ERRORS: u32 = 3;

/// Which server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Prosody 0.12 with mod_cloud_notify.
    Prosody,
    /// ejabberd 23.01 with mod_push.
    Ejabberd,
}

/// A running server.
pub struct XmppServer {
    /// Which one.
    pub kind: Kind,
    /// Client port.
    pub c2s_port: u16,
    /// Component port.
    pub component_port: u16,
    dir: PathBuf,
    child: Child,
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The operator snippet `deploy/xmpp/NAME` with `replacements` applied: the
/// interop servers run the documented settings, so the docs stay true.
fn render_snippet(name: &str, replacements: &[(&str, &str)]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/xmpp")
        .join(name);
    let mut text =
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    for (from, to) in replacements {
        if !text.contains(from) {
            return Err(format!("{}: no {from:?} to replace", path.display()));
        }
        text = text.replace(from, to);
    }
    Ok(text)
}

impl XmppServer {
    /// Starts `kind` under `dir` with component `jid`/`secret`; panics with the
    /// server's log tail if it does not come up.
    pub fn start(kind: Kind, dir: &Path, jid: &str, secret: &str) -> Self {
        let result = match kind {
            Kind::Prosody => Self::prosody(dir, jid, secret),
            Kind::Ejabberd => Self::ejabberd(dir, jid, secret),
        };
        result.unwrap_or_else(|e| panic!("{kind:?} did not start: {e}"))
    }

    fn prosody(dir: &Path, jid: &str, secret: &str) -> Result<Self, String> {
        if !Path::new("/usr/bin/prosody").exists()
            || !Path::new("/usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua").exists()
        {
            return Err("Prosody is not installed: apt-get install -y prosody prosody-modules (or run .ci/run)".into());
        }
        let dir = dir.join("prosody");
        std::fs::create_dir_all(dir.join("data")).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(dir.join("certs")).map_err(|e| e.to_string())?;
        let (c2s, component) = (free_port(), free_port());
        let snippet = dir.join("pushgate-snippet.cfg.lua");
        std::fs::write(
            &snippet,
            render_snippet(
                "prosody.cfg.lua",
                &[
                    ("example.com", DOMAIN),
                    ("push.localhost", jid),
                    ("change-me", secret),
                    ("{ 5347 }", &format!("{{ {component} }}")),
                    (
                        "push_max_errors = 16",
                        &format!("push_max_errors = {PROSODY_MAX_ERRORS}"),
                    ),
                ],
            )?,
        )
        .map_err(|e| e.to_string())?;
        let config = dir.join("prosody.cfg.lua");
        std::fs::write(
            &config,
            format!(
                r#"-- pushgate interop test server: the push settings come from deploy/xmpp/
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
plugin_paths = {{ "/usr/lib/prosody/modules" }}
certificates = "{d}/certs"
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{d}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
storage = "internal"
limits = {{ }}
modules_enabled = {{ "disco"; "roster"; "saslauth"; "ping"; "smacks"; "carbons"; "posix"; "cloud_notify" }}
modules_disabled = {{ "s2s" }}
smacks_hibernation_time = 600
smacks_max_unacked_stanzas = 0

Include "{snippet}"

VirtualHost "{DOMAIN}"
"#,
                d = dir.display(),
                snippet = snippet.display(),
            ),
        )
        .map_err(|e| e.to_string())?;
        for (user, password) in USERS {
            run(
                Command::new("prosodyctl")
                    .arg("--config")
                    .arg(&config)
                    .args(["register", user, DOMAIN, password]),
                "prosodyctl register",
            )?;
        }
        let mut prosody = Command::new("prosody");
        prosody.arg("--config").arg(&config).arg("-F");
        Self::spawn(
            Kind::Prosody,
            prosody,
            dir,
            c2s,
            component,
            Duration::from_secs(20),
        )
    }

    fn ejabberd(dir: &Path, jid: &str, secret: &str) -> Result<Self, String> {
        let ctl_src = std::fs::read_to_string("/usr/sbin/ejabberdctl").map_err(|_| {
            "ejabberd is not installed: apt-get install -y ejabberd (or run .ci/run)".to_owned()
        })?;
        let dir = dir.join("ejabberd");
        for sub in ["conf", "spool", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        // Our own copy of ejabberdctl that runs as the current user (root in CI)
        // instead of su-ing to the package's user, who cannot use our directory.
        if !ctl_src.contains("\nINSTALLUSER=ejabberd\n") {
            return Err("unexpected /usr/sbin/ejabberdctl: no INSTALLUSER=ejabberd line".into());
        }
        let ctl = dir.join("ejabberdctl");
        std::fs::write(
            &ctl,
            ctl_src.replace("\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n"),
        )
        .map_err(|e| e.to_string())?;
        run(Command::new("chmod").arg("+x").arg(&ctl), "chmod")?;
        let _ = std::fs::copy("/etc/ejabberd/inetrc", dir.join("conf/inetrc"));
        let (c2s, component, dist) = (free_port(), free_port(), free_port());
        let node = format!("pushgate-it-{dist}@localhost");
        std::fs::write(
            dir.join("conf/ejabberdctl.cfg"),
            format!(
                "ERLANG_NODE={node}\nERL_DIST_PORT={dist}\nERL_OPTIONS=\"-env ERL_CRASH_DUMP_BYTES 0 -kernel inet_dist_use_interface {{127,0,0,1}}\"\nEJABBERD_BYPASS_WARNINGS=true\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        let snippet = dir.join("conf/pushgate.yml");
        std::fs::write(
            &snippet,
            render_snippet(
                "ejabberd.yml",
                &[
                    ("push.example.com", jid),
                    ("change-me", secret),
                    ("port: 5347", &format!("port: {component}")),
                ],
            )?,
        )
        .map_err(|e| e.to_string())?;
        let snippet = snippet.display();
        std::fs::write(
            dir.join("conf/ejabberd.yml"),
            format!(
                r#"hosts: ["{DOMAIN}"]
loglevel: info
log_rotate_count: 0
hide_sensitive_log_data: false
acme: {{auto: false}}
auth_method: internal
auth_password_format: scram
s2s_access: s2s
listen:
  - {{port: {c2s}, ip: "127.0.0.1", module: ejabberd_c2s, max_stanza_size: 262144, access: c2s}}
acl:
  local: {{user_regexp: ""}}
access_rules:
  local: {{allow: local}}
  c2s: {{allow: all}}
  s2s: {{deny: all}}
api_permissions:
  "console commands":
    from: [ejabberd_ctl]
    who: all
    what: "*"
shaper_rules:
  max_user_offline_messages: 5000
modules:
  mod_adhoc: {{}}
  mod_caps: {{}}
  mod_carboncopy: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
include_config_file: "{snippet}"
"#
            ),
        )
        .map_err(|e| e.to_string())?;
        let mut ejabberd = Command::new(&ctl);
        ejabberd
            .args(Self::ctl_args(&dir))
            .arg("foreground")
            .env("HOME", &dir);
        let server = Self::spawn(
            Kind::Ejabberd,
            ejabberd,
            dir,
            c2s,
            component,
            Duration::from_secs(60),
        )?;
        // The ports open before every table is loaded: wait until ejabberd says
        // it has started, and give each registration a few tries.
        server.retry_ctl(&["status"], Duration::from_secs(60))?;
        for (user, password) in USERS {
            server.retry_ctl(
                &["register", user, DOMAIN, password],
                Duration::from_secs(20),
            )?;
        }
        Ok(server)
    }

    /// Runs an ejabberdctl command until it succeeds or `deadline` passes.
    fn retry_ctl(&self, args: &[&str], deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            match self.ctl(args) {
                Ok(()) => return Ok(()),
                // An earlier try that failed late may have registered the user.
                Err(e) if e.contains("already registered") => return Ok(()),
                Err(e) if start.elapsed() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(300)),
            }
        }
    }

    /// Starts `command` in its own process group (so that stopping it stops
    /// its children too), logging to `dir/stdout.log`, and waits for the ports.
    fn spawn(
        kind: Kind,
        mut command: Command,
        dir: PathBuf,
        c2s_port: u16,
        component_port: u16,
        deadline: Duration,
    ) -> Result<Self, String> {
        let log = std::fs::File::create(dir.join("stdout.log")).map_err(|e| e.to_string())?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {kind:?}: {e}"))?;
        let mut server = Self {
            kind,
            c2s_port,
            component_port,
            dir,
            child,
        };
        server.wait_ports(deadline)?;
        Ok(server)
    }

    fn ctl_args(dir: &Path) -> Vec<String> {
        vec![
            "--config-dir".into(),
            dir.join("conf").display().to_string(),
            "--logs".into(),
            dir.join("logs").display().to_string(),
            "--spool".into(),
            dir.join("spool").display().to_string(),
        ]
    }

    /// Runs an ejabberdctl command against this instance.
    pub fn ctl(&self, args: &[&str]) -> Result<(), String> {
        run(
            Command::new(self.dir.join("ejabberdctl"))
                .args(Self::ctl_args(&self.dir))
                .args(args)
                .env("HOME", &self.dir),
            &format!("ejabberdctl {}", args.join(" ")),
        )
    }

    fn wait_ports(&mut self, deadline: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited early ({status}):\n{}", self.log_tail()));
            }
            if port_open(self.c2s_port) && port_open(self.component_port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "ports not open after {deadline:?}:\n{}",
            self.log_tail()
        ))
    }

    /// The last lines of the server's logs.
    pub fn log_tail(&self) -> String {
        match self.kind {
            Kind::Prosody => format!(
                "{}\n{}",
                tail(&self.dir.join("stdout.log"), 20),
                tail(&self.dir.join("prosody.log"), 60)
            ),
            Kind::Ejabberd => format!(
                "{}\n{}",
                tail(&self.dir.join("stdout.log"), 20),
                tail(&self.dir.join("logs/ejabberd.log"), 60)
            ),
        }
    }

    /// The server's main log.
    pub fn log(&self) -> String {
        let path = match self.kind {
            Kind::Prosody => self.dir.join("prosody.log"),
            Kind::Ejabberd => self.dir.join("logs/ejabberd.log"),
        };
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// The push errors the server logged receiving from the gateway, as
    /// (type, condition): what went over the wire, read by the server itself.
    /// Prosody logs `Got error <type:condition:text>` (at debug, which the
    /// tests run at); ejabberd logs `rejected notification … temporarily: text
    /// (condition)` for `wait` errors and `…, disabling push: text (condition)`
    /// otherwise.
    pub fn push_errors_received(&self) -> Vec<(String, String)> {
        let log = self.log();
        let mut seen = Vec::new();
        for line in log.lines() {
            let found = match self.kind {
                Kind::Prosody => line
                    .split_once("Got error <")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .and_then(|(kind, rest)| Some((kind, rest.split_once(':')?.0))),
                Kind::Ejabberd if line.contains("rejected notification") => {
                    let kind = if line.contains(" temporarily: ") {
                        "wait"
                    } else {
                        "not wait"
                    };
                    line.trim_end()
                        .strip_suffix(')')
                        .and_then(|l| l.rsplit_once('('))
                        .map(|(_, condition)| (kind, condition))
                }
                Kind::Ejabberd => None,
            };
            if let Some((kind, condition)) = found {
                seen.push((kind.to_owned(), condition.to_owned()));
            }
        }
        seen
    }
}

impl Drop for XmppServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- {:?} log tail ---\n{}\n--- end ---",
                self.kind,
                self.log_tail()
            );
        }
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
    }
}
