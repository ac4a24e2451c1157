//! A real XMPP client for the interop tests: `tests/interop/client.py`
//! (slixmpp) run with the venv's Python, one subcommand per call.

use super::servers::{USERS, XmppServer};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Drives `tests/interop/client.py` with the venv's Python.
pub struct XmppClient {
    python: PathBuf,
    script: PathBuf,
    port: u16,
}

impl XmppClient {
    /// A client of `server`; panics with set-up instructions if the venv is missing.
    pub fn new(server: &XmppServer) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("INTEROP_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("tests/interop/.venv/bin/python"));
        assert!(
            python.exists(),
            "no Python with slixmpp at {}: run `python3 -m venv tests/interop/.venv && tests/interop/.venv/bin/pip install -r tests/interop/requirements.txt` (or .ci/run), or set INTEROP_PYTHON",
            python.display()
        );
        Self {
            python,
            script: root.join("tests/interop/client.py"),
            port: server.c2s_port,
        }
    }

    /// Runs `client.py --user USER SUBCOMMAND ARGS…`; returns its JSON line.
    pub fn run(&self, user: &str, args: &[&str]) -> serde_json::Value {
        let (name, password) = USERS
            .iter()
            .find(|(n, _)| *n == user)
            .copied()
            .unwrap_or_else(|| panic!("unknown test user {user}"));
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args([
                "--port",
                &self.port.to_string(),
                "--user",
                &format!("{name}:{password}"),
            ])
            .args(args)
            .output()
            .expect("run client.py");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        serde_json::from_str(line).unwrap_or_else(|_| {
            panic!(
                "client.py {args:?} failed ({}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}
