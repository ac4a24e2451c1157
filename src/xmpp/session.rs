//! The session actor: keeps one component connection to one server alive.
//!
//! The actor owns the connection's lifecycle (connect, reconnect with capped
//! exponential backoff and jitter, close). Two tasks do the socket work: a reader
//! that frames stanzas and hands them to the [`StanzaHandler`] (at most
//! `max_concurrent` at once; beyond that it stops reading, so TCP pushes back), and
//! a writer that sends replies and whitespace keepalives.

use super::backoff::Backoff;
use super::connection::{self, Connection};
use super::frame::StreamEvent;
use super::stream_error::{StreamErrorInfo, stream_error_xml};
use crate::config::Secret;
use crate::telemetry::Metrics;
use actix::prelude::*;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};
use xmpp_parsers::minidom::Element;

/// Handles one incoming stanza and returns the reply to send, if any.
///
/// Implemented by the application; the session knows nothing about push.
pub trait StanzaHandler: Send + Sync + 'static {
    /// Handles `stanza`. The future must not panic on any input.
    fn handle(&self, stanza: Element) -> Pin<Box<dyn Future<Output = Option<Element>> + Send>>;
}

/// Everything a session needs to know about its server and limits.
#[derive(Debug, Clone)]
pub struct SessionSettings {
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
    /// First reconnect delay.
    pub reconnect_min: Duration,
    /// Largest reconnect delay.
    pub reconnect_max: Duration,
    /// Connect + handshake deadline.
    pub connect_timeout: Duration,
    /// Stanzas handled at once.
    pub max_concurrent: usize,
}

/// Asks a session to close its stream gracefully: stop reading, let in-flight
/// stanzas be answered within `grace`, send `</stream:stream>`, and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Close {
    /// How long in-flight stanzas may take.
    pub grace: Duration,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Disconnected {
    generation: u64,
    reason: String,
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
}

/// One component connection to one server, reconnecting until closed.
pub struct Session {
    settings: Arc<SessionSettings>,
    handler: Arc<dyn StanzaHandler>,
    metrics: Arc<Metrics>,
    live: Option<Live>,
    generation: u64,
    backoff: Backoff,
    closing: bool,
}

impl Session {
    /// A session that connects as soon as it is started.
    pub fn new(
        settings: SessionSettings,
        handler: Arc<dyn StanzaHandler>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let backoff = Backoff::new(settings.reconnect_min, settings.reconnect_max);
        Self {
            settings: Arc::new(settings),
            handler,
            metrics,
            live: None,
            generation: 0,
            backoff,
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
                    let delay = act.backoff.next_delay();
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

    fn on_connected(&mut self, conn: Connection, ctx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        info!(server = %self.settings.label, jid = %self.settings.jid, "component session established");
        self.metrics.sessions_up.inc();
        let (tx, rx) = mpsc::channel(1024);
        let in_flight = Arc::new(Semaphore::new(self.settings.max_concurrent));
        let me = ctx.address();
        let writer = tokio::spawn(write_loop(
            conn.write,
            rx,
            self.settings.keepalive,
            me.clone(),
            generation,
        ));
        let reader = tokio::spawn(read_loop(ReadLoop {
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
            since: Instant::now(),
            tx,
            reader,
            writer,
            in_flight,
        });
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.connect(ctx);
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        if let Some(live) = self.live.take() {
            live.reader.abort();
            live.writer.abort();
            self.metrics.sessions_up.dec();
        }
    }
}

impl Handler<Disconnected> for Session {
    type Result = ();

    fn handle(&mut self, msg: Disconnected, ctx: &mut Context<Self>) {
        let Some(live) = self.live.take_if(|l| l.generation == msg.generation) else {
            return;
        };
        self.metrics.sessions_up.dec();
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
        if live.since.elapsed() >= Duration::from_secs(10) {
            self.backoff.reset();
        }
        let delay = self.backoff.next_delay();
        warn!(server = %self.settings.label, retry_in = ?delay, "component session lost: {}", msg.reason);
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
        let was_live = live.is_some();
        let drain = async move {
            let Some(live) = live else { return };
            live.reader.abort();
            if tokio::time::timeout(msg.grace, live.in_flight.acquire_many(permits))
                .await
                .is_err()
            {
                warn!(server = %label, "closing with stanzas still being handled");
            }
            let _ = live
                .tx
                .send(Outgoing::Final("</stream:stream>".to_owned()))
                .await;
            drop(live.tx);
            let abort = live.writer.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), live.writer)
                .await
                .is_err()
            {
                abort.abort();
            }
            info!(server = %label, "component session closed");
        };
        Box::pin(drain.into_actor(self).map(move |_, act, ctx| {
            if was_live {
                act.metrics.sessions_up.dec();
            }
            ctx.stop();
        }))
    }
}

/// How long one write may wait for the server to read: a server that stops
/// reading is as good as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

async fn write_bytes(write: &mut OwnedWriteHalf, bytes: &[u8]) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err(format!(
            "the server has not read for {WRITE_TIMEOUT:?} (write timed out)"
        )),
    }
}

/// Replies queued at once are written with one system call: under load this
/// saves a syscall (and a TCP segment) per reply.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

async fn write_loop(
    mut write: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Outgoing>,
    keepalive: Duration,
    me: Addr<Session>,
    generation: u64,
) {
    let mut batch = String::new();
    loop {
        let next = tokio::time::timeout(keepalive, rx.recv()).await;
        let result = match next {
            Ok(Some(Outgoing::Stanza(xml))) => {
                batch.push_str(&xml);
                let mut last = None;
                while batch.len() < WRITE_BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(Outgoing::Stanza(xml)) => batch.push_str(&xml),
                        Ok(final_xml @ Outgoing::Final(_)) => {
                            last = Some(final_xml);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let written = write_bytes(&mut write, batch.as_bytes()).await;
                batch.clear();
                match (written, last) {
                    (Ok(()), Some(Outgoing::Final(xml))) => {
                        finish(&mut write, &xml).await;
                        return;
                    }
                    (result, _) => result,
                }
            }
            Ok(Some(Outgoing::Final(xml))) => {
                finish(&mut write, &xml).await;
                return;
            }
            Ok(None) => return,
            Err(_) => write_bytes(&mut write, b" ").await,
        };
        if let Err(reason) = result {
            me.do_send(Disconnected { generation, reason });
            return;
        }
    }
}

/// Writes the last words of a stream and shuts the socket down.
async fn finish(write: &mut OwnedWriteHalf, xml: &str) {
    let _ = write_bytes(write, xml.as_bytes()).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
}

struct ReadLoop {
    read: OwnedReadHalf,
    reader: super::frame::StreamReader,
    pending: Vec<StreamEvent>,
    handler: Arc<dyn StanzaHandler>,
    tx: mpsc::Sender<Outgoing>,
    in_flight: Arc<Semaphore>,
    settings: Arc<SessionSettings>,
    me: Addr<Session>,
    generation: u64,
}

async fn read_loop(mut l: ReadLoop) {
    let reason = read_until_end(&mut l).await;
    l.me.do_send(Disconnected {
        generation: l.generation,
        reason,
    });
}

/// Reads and dispatches until the stream ends; returns why it ended.
async fn read_until_end(l: &mut ReadLoop) -> String {
    let mut events = std::mem::take(&mut l.pending);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        for event in events.drain(..) {
            match event {
                StreamEvent::Stanza(el) => {
                    if let Some(info) = StreamErrorInfo::parse(&el) {
                        return format!(
                            "server sent a stream error: {}",
                            info.explain(&l.settings.jid)
                        );
                    }
                    dispatch(l, el).await;
                }
                StreamEvent::End => {
                    let _ = l.tx.send(Outgoing::Final("</stream:stream>".into())).await;
                    return "the server closed the stream".to_owned();
                }
                StreamEvent::Header { .. } => {
                    let _ =
                        l.tx.send(Outgoing::Final(stream_error_xml("invalid-xml")))
                            .await;
                    return "the server sent a second stream header".to_owned();
                }
            }
        }
        let n = match l.read.read(&mut buf).await {
            Ok(0) => return "the server closed the connection".to_owned(),
            Ok(n) => n,
            Err(e) => return format!("read failed: {e}"),
        };
        let data = buf.get(..n).unwrap_or_default();
        if let Err(e) = l.reader.feed(data, &mut events) {
            let _ =
                l.tx.send(Outgoing::Final(stream_error_xml(e.condition())))
                    .await;
            return format!("closing the stream: {e}");
        }
    }
}

async fn dispatch(l: &ReadLoop, stanza: Element) {
    let Ok(permit) = l.in_flight.clone().acquire_owned().await else {
        return;
    };
    let handler = l.handler.clone();
    let tx = l.tx.clone();
    tokio::spawn(async move {
        if let Some(reply) = handler.handle(stanza).await {
            let _ = tx.send(Outgoing::Stanza(String::from(&reply))).await;
        }
        drop(permit);
    });
}
