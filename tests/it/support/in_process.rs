//! The gateway in the test's own process: built from a [`TestConfig`] with
//! [`pushgate::gateway::Launch`], its HTTP listener bound to port 0, and
//! optionally a [`ScriptedClient`] in place of the HTTP/2 providers.
//!
//! - [`InProcess::start`] runs it on a thread of its own (its own actix
//!   `System`), so a test can run several side by side.
//! - [`on_test_runtime`] + [`spawn_here`] run the gateway on the test's own
//!   current-thread runtime, so `tokio::time::pause` reaches every timer:
//!   windows, retries and backoff take no wall time, and a test moves the
//!   clock instead of sleeping.
//!
//! Child processes ([`super::gateway::GatewayProcess`]) stay for what needs
//! the process boundary: signals, kill -9, the CLI, log lines, real servers.

use super::gateway::TestConfig;
use pushgate::gateway::Launch;
use pushgate::providers::{Delivered, DeliveryError, ErrorClass, Push, PushClient, SendFuture};
use pushgate::telemetry::Metrics;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A gateway running on its own thread in this process; stopped on drop.
pub struct InProcess {
    /// `http://127.0.0.1:PORT`.
    pub http: String,
    /// The metrics it counts into.
    pub metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

/// A [`Launch`] for `config` with its HTTP listener bound to a free port, and
/// that listener's URL.
pub fn launch(config: &TestConfig) -> (Launch, String) {
    super::init_crypto();
    let config = pushgate::config::load_from_str(&config.to_toml(), "test", Vec::new())
        .expect("the test configuration is valid");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind HTTP");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    (Launch::new(config).http_listener(listener), url)
}

/// Like [`launch`], with `apns` as the `apns` provider's client and a
/// scripted client that always accepts as `fcm`'s (see
/// [`TestConfig::with_scripted_providers`]).
pub fn launch_scripted(config: &TestConfig, apns: &ScriptedClient) -> (Launch, String) {
    let (launch, http) = launch(config);
    let clients: pushgate::providers::Clients = vec![
        ("apns".into(), Arc::new(apns.clone())),
        ("fcm".into(), Arc::new(ScriptedClient::default())),
    ];
    (launch.clients(clients), http)
}

impl InProcess {
    /// Starts `launch` on a new thread.
    pub fn start(launch: Launch, http: String) -> Self {
        let metrics = launch.metrics();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = pushgate::gateway::runtime().map_err(|e| e.to_string())?;
            actix::System::with_tokio_rt(move || runtime)
                .block_on(launch.run(async {
                    let _ = stopped.await;
                }))
                .map_err(|e| e.to_string())
        });
        Self {
            http,
            metrics,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Shuts it down (as on SIGTERM) and waits for it; the gateway's result.
    pub fn stop(mut self) -> Result<(), String> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => tokio::task::block_in_place(|| thread.join())
                .unwrap_or_else(|_| Err("the gateway thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for InProcess {
    /// Asks the gateway to stop. It waits for it only on a multi-thread
    /// runtime: on a current-thread one, the mocks it may still be talking to
    /// run on the very thread that would wait, so it is left to finish alone.
    fn drop(&mut self) {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            let _ = self.shut_down();
        } else if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs `test` inside an actix `System` on a current-thread runtime, where a
/// gateway started with [`spawn_here`] runs all its timers. The test pauses
/// the clock (`tokio::time::pause`) for the part that waits: sockets need it
/// running (with it paused, tokio advances to the next timer whenever the
/// runtime looks idle, even while loopback bytes are on their way), but
/// windows, retries and backoff on a [`ScriptedClient`] involve no socket.
pub fn on_test_runtime<F: Future<Output = ()>>(test: impl FnOnce() -> F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    actix::System::with_tokio_rt(move || runtime).block_on(test());
}

/// Starts `launch` on the current actix `System` (see [`on_test_runtime`]); resolving
/// the returned sender's receiver stops it.
pub fn spawn_here(launch: Launch) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    actix::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        if let Err(e) = launch.on_one_thread().run(shutdown).await {
            panic!("gateway failed: {e}");
        }
    });
    stop
}

/// How the scripted provider answers one push.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Accepted.
    Ok,
    /// Refused with this status, reason and class, and an optional `Retry-After`.
    Refuse {
        /// HTTP status.
        status: u16,
        /// Provider reason.
        reason: &'static str,
        /// What it means.
        class: ErrorClass,
        /// `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The client panics (a bug in it).
    Panic,
    /// The client never answers (a bug in it, below its own timeouts).
    Hang,
}

/// One push the scripted provider received, and when (tokio's clock).
#[derive(Debug, Clone)]
pub struct Sent {
    /// When it arrived.
    pub at: tokio::time::Instant,
    /// What it was.
    pub push: Push,
}

#[derive(Default)]
struct Script {
    sent: Vec<Sent>,
    replies: HashMap<String, VecDeque<Reply>>,
}

/// A provider client without a network: answers each push by token from a
/// script (then `Ok`), and records what it got. Shared between the gateway
/// and the test.
#[derive(Clone, Default)]
pub struct ScriptedClient {
    state: Arc<Mutex<Script>>,
}

impl ScriptedClient {
    /// Answers the next pushes to `token` with `replies`, in order.
    pub fn script(&self, token: &str, replies: impl IntoIterator<Item = Reply>) {
        self.lock()
            .replies
            .entry(token.to_owned())
            .or_default()
            .extend(replies);
    }

    /// Pushes received so far.
    pub fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    /// Pushes received for `token`.
    pub fn sent_to(&self, token: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.push.token == token)
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PushClient for ScriptedClient {
    fn send(&self, push: &Push) -> SendFuture {
        let mut script = self.lock();
        let reply = script
            .replies
            .get_mut(&push.token)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Reply::Ok);
        script.sent.push(Sent {
            at: tokio::time::Instant::now(),
            push: push.clone(),
        });
        Box::pin(async move {
            match reply {
                Reply::Ok => Ok(Delivered { id: None }),
                Reply::Panic => panic!("scripted client panic"),
                Reply::Hang => std::future::pending().await,
                Reply::Refuse {
                    status,
                    reason,
                    class,
                    retry_after,
                } => Err(DeliveryError::Rejected {
                    status,
                    reason: reason.to_owned(),
                    class,
                    invalid_since_ms: None,
                    retry_after,
                    body: String::new(),
                }),
            }
        })
    }
}

impl TestConfig {
    /// Names providers `apns` and `fcm` for [`ScriptedClient`]s: the
    /// credentials are never read, since the clients are injected.
    pub fn with_scripted_providers(mut self) -> Self {
        self.extra.push_str(
            r#"
[[providers]]
id = "apns"
kind = "apns"
topic = "com.example.app"
team_id = "TEAM123456"
key_id = "TESTKEY01"
key_file = "/nonexistent/injected.p8"
{keys}
[[providers]]
id = "fcm"
kind = "fcm"
service_account_file = "/nonexistent/injected.json"
{keys}
"#,
        );
        self
    }
}
