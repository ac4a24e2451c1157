//! Test support: a fake XMPP server that accepts the component, mock APNs/FCM
//! providers over HTTP/2 + TLS with a test CA, and the gateway binary as a child
//! process with a generated configuration.

pub mod cluster;
pub mod gateway;
pub mod harness;
pub mod in_process;
pub mod interop;
pub mod mock_provider;
pub mod pki;
pub mod redis;
pub mod servers;
pub mod xmpp_client;
pub mod xmpp_router;
pub mod xmpp_server;

use std::time::Duration;

/// The default deadline of a test wait.
pub const WAIT: Duration = Duration::from_secs(10);

/// The test's component JID and secret.
pub const JID: &str = "push.localhost";
/// The component secret the fake server expects.
pub const SECRET: &str = "s3cr3t";

/// An APNs-shaped token (64 hex digits) derived from `seed`.
pub fn apns_token(seed: u8) -> String {
    format!("{seed:02x}").repeat(32)
}

/// Installs the ring crypto provider for rustls (needed once per process).
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `check` until it returns true or `deadline` passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The first child of `parent` named `name` in namespace `ns`.
pub fn ns_child<'a>(
    parent: &'a xmpp_parsers::minidom::Element,
    name: &str,
    ns: &str,
) -> Option<&'a xmpp_parsers::minidom::Element> {
    parent.get_child(name, ns)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The processes whose parent is `pid`, from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // After the command name (which may hold spaces): state, then ppid.
                    let (_, rest) = stat.rsplit_once(')')?;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
}

/// Sends signal `name` (`TERM`, `KILL`, `STOP`, …) to process `pid`; true
/// if `kill` says it was sent.
pub fn signal(pid: u32, name: &str) -> bool {
    std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success())
}
