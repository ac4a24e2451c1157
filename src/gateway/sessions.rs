//! The component sessions: one per configured stream (server × connection).
//! A single node opens all of them at start; a cluster node opens only those
//! whose slot it holds, following the set the cluster coordinator publishes.

use crate::config::{Config, ConfigIssue, ServerConfig};
use crate::telemetry::Metrics;
use crate::xmpp::{Close, ComponentTls, Session, SessionSettings, StanzaHandler, is_loopback};
use actix::{Actor, Addr, ArbiterHandle};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// How long a stream handed to another node gets to answer what it holds.
const HANDOVER_CLOSE: Duration = Duration::from_secs(5);

/// The settings of every stream, in configuration order; each one's label
/// (`host:port#n`) names its cluster slot.
pub(super) fn stream_settings(config: &Config) -> Result<Vec<SessionSettings>, ConfigIssue> {
    let c = &config.component;
    let reconnect = c.reconnect_backoff()?;
    let mut tls = Vec::new();
    for server in &c.servers {
        tls.push(server_tls(server)?);
    }
    Ok(c.servers
        .iter()
        .zip(tls)
        .flat_map(|(server, tls)| {
            (0..server.connections).map(move |n| SessionSettings {
                tls: tls.clone(),
                label: format!("{}:{}#{n}", server.host, server.port),
                host: server.host.clone(),
                port: server.port,
                jid: c.jid.clone(),
                secret: c.secret.clone(),
                keepalive: Duration::from_secs(c.keepalive_s),
                max_stanza_bytes: c.max_stanza_bytes,
                reconnect,
                connect_timeout: Duration::from_secs(c.connect_timeout_s),
                max_concurrent: c.max_concurrent_stanzas,
            })
        })
        .collect())
}

/// The TLS set-up of `server`, if it has `tls`; warns about a plaintext
/// link that leaves the machine.
fn server_tls(server: &ServerConfig) -> Result<Option<Arc<ComponentTls>>, ConfigIssue> {
    if !server.tls {
        if !is_loopback(&server.host) {
            warn!(
                server = %server.host,
                "the component link is plaintext over the network: notifications and account names travel readable, and the handshake is only a SHA-1 of the secret; set tls = true (ejabberd) or keep the link on a private network"
            );
        }
        return Ok(None);
    }
    let name = server.tls_name.as_deref().unwrap_or(&server.host);
    ComponentTls::new(name, server.ca_file.as_deref())
        .map(|t| Some(Arc::new(t)))
        .map_err(|e| ConfigIssue::new("component.servers.tls", format!("{}: {e}", server.host)))
}

struct Open {
    sessions: BTreeMap<usize, Addr<Session>>,
    /// Set at shutdown: nothing opens after.
    closing: bool,
}

/// Which slots have a session running, closing ones included: a cluster
/// releases a slot only once its stream is gone.
type Live = watch::Sender<BTreeSet<usize>>;

/// The streams open now. Sessions run on their own threads (arbiters, at
/// most one per CPU, shared in turn), so reading, parsing and answering
/// stanzas happens beside the delivery pools. Cheap to clone.
#[derive(Clone)]
pub(super) struct Sessions {
    settings: Arc<Vec<SessionSettings>>,
    handler: Arc<dyn StanzaHandler>,
    metrics: Arc<Metrics>,
    arbiters: Arc<Vec<ArbiterHandle>>,
    open: Arc<Mutex<Open>>,
    live: Arc<Live>,
}

impl Sessions {
    pub(super) fn new(
        settings: Vec<SessionSettings>,
        handler: Arc<dyn StanzaHandler>,
        metrics: Arc<Metrics>,
        arbiters: Vec<ArbiterHandle>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            handler,
            metrics,
            arbiters: Arc::new(arbiters),
            open: Arc::new(Mutex::new(Open {
                sessions: BTreeMap::new(),
                closing: false,
            })),
            live: Arc::new(watch::channel(BTreeSet::new()).0),
        }
    }

    /// Which slots have a session running.
    pub(super) fn live(&self) -> watch::Receiver<BTreeSet<usize>> {
        self.live.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Opens stream `slot` unless it is open (or the gateway is stopping).
    fn start(&self, slot: usize) {
        let Some(settings) = self.settings.get(slot).cloned() else {
            return;
        };
        let mut open = self.lock();
        if open.closing || open.sessions.contains_key(&slot) {
            return;
        }
        let session = Session::new(settings, self.handler.clone(), self.metrics.clone());
        let addr = match self.arbiters.get(slot % self.arbiters.len().max(1)) {
            Some(arbiter) => Session::start_in_arbiter(arbiter, |_| session),
            None => session.start(),
        };
        open.sessions.insert(slot, addr);
        self.live.send_modify(|live| {
            live.insert(slot);
        });
    }

    /// Closes `slot`'s session by `deadline`; it counts as live until closed.
    async fn close(&self, slot: usize, addr: Addr<Session>, deadline: crate::clock::Instant) {
        let _ = tokio::time::timeout_at(deadline, addr.send(Close { deadline })).await;
        let reopened = self.lock().sessions.contains_key(&slot);
        if !reopened {
            self.live.send_modify(|live| {
                live.remove(&slot);
            });
        }
    }

    /// Opens every stream (a single node).
    pub(super) fn start_all(&self) {
        for slot in 0..self.settings.len() {
            self.start(slot);
        }
    }

    /// Keeps the open streams equal to the set `wanted` publishes, until the
    /// gateway stops (a cluster node).
    pub(super) fn follow(&self, mut wanted: watch::Receiver<BTreeSet<usize>>) {
        let sessions = self.clone();
        actix::spawn(async move {
            loop {
                let want = wanted.borrow_and_update().clone();
                let extra: Vec<(usize, Addr<Session>)> = {
                    let open = sessions.lock();
                    open.sessions
                        .iter()
                        .filter(|(slot, _)| !want.contains(slot))
                        .map(|(slot, addr)| (*slot, addr.clone()))
                        .collect()
                };
                for (slot, addr) in extra {
                    sessions.lock().sessions.remove(&slot);
                    let closing = sessions.clone();
                    let deadline = crate::clock::now() + HANDOVER_CLOSE;
                    actix::spawn(async move { closing.close(slot, addr, deadline).await });
                }
                for slot in want {
                    sessions.start(slot);
                }
                if wanted.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// Closes every stream by `deadline`; none opens after.
    pub(super) async fn close_all(&self, deadline: crate::clock::Instant) {
        let open: Vec<(usize, Addr<Session>)> = {
            let mut open = self.lock();
            open.closing = true;
            std::mem::take(&mut open.sessions).into_iter().collect()
        };
        let closes = open
            .into_iter()
            .map(|(slot, addr)| self.close(slot, addr, deadline));
        futures_util::future::join_all(closes).await;
    }
}
