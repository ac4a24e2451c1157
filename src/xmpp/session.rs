//! The session actor: keeps one component connection to one server alive.
//!
//! The actor owns the connection's lifecycle (connect, reconnect with capped
//! exponential backoff and jitter, close). Two tasks do the socket work: a reader
//! that frames stanzas and hands them to the [`StanzaHandler`] (at most
//! `max_concurrent` at once; beyond that it stops reading, so TCP pushes back), and
//! a writer that sends replies and whitespace keepalives.

mod io;

use super::connection::{self, Connection};
use crate::backoff::{self, Backoff};
use crate::clock::{self, Instant};
use crate::config::Secret;
use crate::telemetry::Metrics;
use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use xmpp_parsers::minidom::Element;

/// Handles one incoming stanza and returns the reply to send, if any.
///
/// Implemented by the application; the session knows nothing about push.
pub(crate) trait StanzaHandler: Send + Sync + 'static {
    /// Handles `stanza`. The future must not panic on any input.
    fn handle(self: Arc<Self>, stanza: Element) -> ReplyFuture;

    /// Handles a stanza the handler can read from its bytes without a parse
    /// tree (its hot path); `None` when it cannot, and the stanza then goes
    /// to [`StanzaHandler::handle`] parsed. `stanza` is a well-nested element
    /// but not yet checked for well-formedness: return `None` for anything
    /// doubtful.
    fn handle_raw(self: Arc<Self>, _stanza: &[u8]) -> Option<ReplyFuture> {
        None
    }
}

/// What a [`StanzaHandler`] returns: the serialized reply, if any.
pub(crate) type ReplyFuture = Pin<Box<dyn Future<Output = Option<String>> + Send>>;

/// Everything a session needs to know about its server and limits.
#[derive(Debug, Clone)]
pub(crate) struct SessionSettings {
    /// A name for logs: `host:port#n`.
    pub label: String,
    /// Server host.
    pub host: String,
    /// Server component port.
    pub port: u16,
    /// Our component JID.
    pub jid: String,
    /// The shared secret.
    pub secret: Secret,
    /// Idle time before a whitespace keepalive.
    pub keepalive: Duration,
    /// Largest stanza accepted.
    pub max_stanza_bytes: usize,
    /// Reconnect delays (equal jitter, so restarted gateways do not come back
    /// in step, yet never much sooner than the step).
    pub reconnect: Backoff,
    /// Connect + handshake deadline.
    pub connect_timeout: Duration,
    /// Direct TLS to the server, if configured.
    pub tls: Option<Arc<super::ComponentTls>>,
    /// Stanzas handled at once.
    pub max_concurrent: usize,
}

/// Asks a session to close its stream gracefully: stop reading, let in-flight
/// stanzas be answered until `deadline`, send `</stream:stream>`, and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close {
    /// When in-flight stanzas must be answered and the stream closed.
    pub deadline: Instant,
}

/// Most time given to the writer to flush the stream's last bytes.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts an authenticated session in the "sessions up" gauge for as long as
/// it lives: however the session ends, dropping it takes the count back.
struct SessionUp(Arc<Metrics>, String);

impl SessionUp {
    fn new(metrics: &Arc<Metrics>, server: &str) -> Self {
        metrics.sessions_up.add(server, 1);
        Self(metrics.clone(), server.to_owned())
    }
}

impl Drop for SessionUp {
    fn drop(&mut self) {
        self.0.sessions_up.add(&self.1, -1);
    }
}

impl SessionSettings {
    /// The server as the sessions gauge names it: `host:port`, as configured.
    fn server(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Disconnected {
    generation: u64,
    reason: io::StreamEnd,
}

enum Outgoing {
    Stanza(String),
    /// Write these bytes (a stream error or footer) and stop writing.
    Final(String),
}

struct Live {
    generation: u64,
    since: Instant,
    tx: mpsc::Sender<Outgoing>,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
    in_flight: Arc<Semaphore>,
    _up: SessionUp,
}

/// One component connection to one server, reconnecting until closed.
pub(crate) struct Session {
    settings: Arc<SessionSettings>,
    handler: Arc<dyn StanzaHandler>,
    metrics: Arc<Metrics>,
    live: Option<Live>,
    generation: u64,
    /// Failed connection attempts since the last session that held.
    failures: u32,
    closing: bool,
}

impl Session {
    /// A session that connects as soon as it is started.
    pub(crate) fn new(
        settings: SessionSettings,
        handler: Arc<dyn StanzaHandler>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            settings: Arc::new(settings),
            handler,
            metrics,
            live: None,
            generation: 0,
            failures: 0,
            closing: false,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        let s = self.settings.clone();
        let attempt = async move {
            let target = connection::Target {
                host: &s.host,
                port: s.port,
                jid: &s.jid,
                secret: s.secret.expose(),
                max_stanza_bytes: s.max_stanza_bytes,
                keepalive: s.keepalive,
                tls: s.tls.as_deref(),
            };
            connection::establish(target, s.connect_timeout).await
        };
        ctx.spawn(attempt.into_actor(self).map(|result, act, ctx| {
            if act.closing {
                return;
            }
            match result {
                Ok(conn) => act.on_connected(conn, ctx),
                Err(e) => {
                    let delay = act.next_delay();
                    if e.is_configuration_error() {
                        error!(server = %act.settings.label, retry_in = ?delay, "component connection failed: {e}");
                    } else {
                        warn!(server = %act.settings.label, retry_in = ?delay, "component connection failed: {e}");
                    }
                    ctx.run_later(delay, |act, ctx| act.connect(ctx));
                }
            }
        }));
    }

    /// The delay before the next attempt; each failure doubles the step.
    fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let ms = self
            .settings
            .reconnect
            .equal_jitter_ms(self.failures, &mut backoff::uniform);
        Duration::from_millis(ms)
    }

    fn on_connected(&mut self, conn: Connection, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        info!(server = %self.settings.label, jid = %self.settings.jid, "component session established");
        let up = SessionUp::new(&self.metrics, &self.settings.server());
        let (tx, rx) = mpsc::channel(1024);
        let in_flight = Arc::new(Semaphore::new(self.settings.max_concurrent));
        let me = ctx.address();
        let writer = tokio::spawn(io::write_loop(
            conn.write,
            rx,
            self.settings.keepalive,
            me.clone(),
            generation,
        ));
        let reader = tokio::spawn(io::read_loop(io::ReadLoop {
            read: conn.read,
            reader: conn.reader,
            pending: conn.pending,
            handler: self.handler.clone(),
            tx: tx.clone(),
            in_flight: in_flight.clone(),
            settings: self.settings.clone(),
            me,
            generation,
        }));
        self.live = Some(Live {
            generation,
            since: clock::now(),
            tx,
            reader,
            writer,
            in_flight,
            _up: up,
        });
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // The server's series exists (at 0) before its first session, so an
        // alert can see a server that was never reached.
        self.metrics.sessions_up.add(&self.settings.server(), 0);
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(live) = self.live.take() {
            live.reader.abort();
            live.writer.abort();
        }
    }
}

impl Handler<Disconnected> for Session {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, ctx: &mut Context<Self>) {
        let Some(live) = self.live.take_if(|l| l.generation == msg.generation) else {
            return;
        };
        live.reader.abort();
        // Let the writer flush a final stream error, but not forever.
        drop(live.tx);
        let writer = live.writer;
        tokio::spawn(async move {
            let abort = writer.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), writer)
                .await
                .is_err()
            {
                abort.abort();
            }
        });
        if self.closing {
            return;
        }
        if clock::now() - live.since >= Duration::from_secs(10) {
            self.failures = 0;
        }
        let delay = self.next_delay();
        warn!(server = %self.settings.label, retry_in = ?delay, "component session lost: {}", crate::errors::chain(&msg.reason));
        ctx.run_later(delay, |act, ctx| act.connect(ctx));
    }
}

impl Handler<Close> for Session {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: Close, _ctx: &mut Context<Self>) -> Self::Result {
        self.closing = true;
        let live = self.live.take();
        let permits = u32::try_from(self.settings.max_concurrent).unwrap_or(u32::MAX);
        let label = self.settings.label.clone();
        let drain = async move {
            let Some(live) = live else { return };
            live.reader.abort();
            if tokio::time::timeout_at(msg.deadline, live.in_flight.acquire_many(permits))
                .await
                .is_err()
            {
                warn!(server = %label, "closing with stanzas still being handled");
            }
            let flushed_by = msg.deadline.min(clock::now() + FLUSH_TIMEOUT);
            let footer = live.tx.send(Outgoing::Final("</stream:stream>".to_owned()));
            let _ = tokio::time::timeout_at(flushed_by, footer).await;
            drop(live.tx);
            let abort = live.writer.abort_handle();
            if tokio::time::timeout_at(flushed_by, live.writer)
                .await
                .is_err()
            {
                abort.abort();
            }
            info!(server = %label, "component session closed");
        };
        Box::pin(drain.into_actor(self).map(|_, _, ctx| ctx.stop()))
    }
}
