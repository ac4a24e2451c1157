//! The socket side of a live session: the reader that frames stanzas and
//! dispatches them to the handler, and the writer that batches replies and
//! sends whitespace keepalives.

use super::{Disconnected, Outgoing, ReplyFuture, Session, StanzaHandler};
use crate::xmpp::frame::{FrameError, StreamEvent, StreamReader};
use crate::xmpp::session::SessionSettings;
use crate::xmpp::stream_error::{StreamErrorInfo, stream_error_xml};
use crate::xmpp::tls::{ReadHalf, WriteHalf};
use actix::Addr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc};

/// How long one write may wait for the server to read: a server that stops
/// reading is as good as gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a live stream ended, as the session logs it.
#[derive(Debug, Error)]
pub(super) enum StreamEnd {
    /// Writing to the socket failed.
    #[error("write failed")]
    Write(#[source] std::io::Error),
    /// The server stopped reading.
    #[error("the server has not read for {0:?} (write timed out)")]
    WriteTimeout(Duration),
    /// Reading from the socket failed.
    #[error("read failed")]
    Read(#[source] std::io::Error),
    /// TCP end of stream.
    #[error("the server closed the connection")]
    Eof,
    /// `</stream:stream>` from the server.
    #[error("the server closed the stream")]
    Closed,
    /// A stream header in the middle of the stream.
    #[error("the server sent a second stream header")]
    SecondHeader,
    /// `<stream:error/>` from the server, explained.
    #[error("server sent a stream error: {0}")]
    StreamError(String),
    /// What the server sent is not XML we accept; we closed the stream.
    #[error("closing the stream")]
    Malformed(#[source] FrameError),
}

async fn write_bytes(write: &mut WriteHalf, bytes: &[u8]) -> Result<(), StreamEnd> {
    match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StreamEnd::Write(e)),
        Err(_) => Err(StreamEnd::WriteTimeout(WRITE_TIMEOUT)),
    }
}

/// Replies queued at once are written with one system call: under load this
/// saves a syscall (and a TCP segment) per reply.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub(super) async fn write_loop(
    mut write: WriteHalf,
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
async fn finish(write: &mut WriteHalf, xml: &str) {
    let _ = write_bytes(write, xml.as_bytes()).await;
    let _ = tokio::time::timeout(WRITE_TIMEOUT, write.shutdown()).await;
}

pub(super) struct ReadLoop {
    pub(super) read: ReadHalf,
    pub(super) reader: StreamReader,
    pub(super) pending: Vec<StreamEvent>,
    pub(super) handler: Arc<dyn StanzaHandler>,
    pub(super) tx: mpsc::Sender<Outgoing>,
    pub(super) in_flight: Arc<Semaphore>,
    pub(super) settings: Arc<SessionSettings>,
    pub(super) me: Addr<Session>,
    pub(super) generation: u64,
}

pub(super) async fn read_loop(mut l: ReadLoop) {
    let reason = read_until_end(&mut l).await;
    l.me.do_send(Disconnected {
        generation: l.generation,
        reason,
    });
}

/// Reads and dispatches until the stream ends; returns why it ended.
async fn read_until_end(l: &mut ReadLoop) -> StreamEnd {
    let mut events = std::mem::take(&mut l.pending);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        for event in events.drain(..) {
            let event = match event {
                StreamEvent::Raw(raw) => match l.handler.clone().handle_raw(&raw) {
                    Some(reply) => {
                        dispatch(l, reply).await;
                        continue;
                    }
                    None => match l.reader.parse_stanza(&raw) {
                        Ok(el) => StreamEvent::Stanza(el),
                        Err(e) => return close_malformed(l, e).await,
                    },
                },
                other => other,
            };
            match event {
                StreamEvent::Raw(_) => {}
                StreamEvent::Stanza(el) => {
                    if let Some(info) = StreamErrorInfo::parse(&el) {
                        return StreamEnd::StreamError(info.explain(&l.settings.jid));
                    }
                    let reply = l.handler.clone().handle(el);
                    dispatch(l, reply).await;
                }
                StreamEvent::End => {
                    let _ = l.tx.send(Outgoing::Final("</stream:stream>".into())).await;
                    return StreamEnd::Closed;
                }
                StreamEvent::Header { .. } => {
                    let _ =
                        l.tx.send(Outgoing::Final(stream_error_xml("invalid-xml")))
                            .await;
                    return StreamEnd::SecondHeader;
                }
            }
        }
        let n = match l.read.read(&mut buf).await {
            Ok(0) => return StreamEnd::Eof,
            Ok(n) => n,
            Err(e) => return StreamEnd::Read(e),
        };
        let data = buf.get(..n).unwrap_or_default();
        // Publishes are read from their bytes once the parser is between
        // stanzas (at once, unless the handshake's last read ended mid-stanza).
        l.reader.split_raw();
        if let Err(e) = l.reader.feed(data, &mut events) {
            return close_malformed(l, e).await;
        }
    }
}

/// Sends the stream error for `e` and says why the stream ends.
async fn close_malformed(l: &ReadLoop, e: FrameError) -> StreamEnd {
    let _ =
        l.tx.send(Outgoing::Final(stream_error_xml(e.condition())))
            .await;
    StreamEnd::Malformed(e)
}

/// Runs one stanza's handling (at most `max_concurrent` at once) and queues
/// its reply.
async fn dispatch(l: &ReadLoop, reply: ReplyFuture) {
    let Ok(permit) = l.in_flight.clone().acquire_owned().await else {
        return;
    };
    let tx = l.tx.clone();
    tokio::spawn(async move {
        if let Some(reply) = reply.await {
            let _ = tx.send(Outgoing::Stanza(reply)).await;
        }
        drop(permit);
    });
}
