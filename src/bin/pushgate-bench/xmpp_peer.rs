//! The XMPP server's side of XEP-0114: accepts the gateway's component
//! connections, checks the handshake, and turns the gateway's replies into
//! ledger entries. Stanza ids say what a reply answers: `p<seq>` a publish,
//! `r<device>` a registration.

use crate::ledger::CurrentLedger;
use anyhow::{Context as _, bail};
use pushgate::xmpp::{StreamEvent, StreamReader, handshake_digest};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use xmpp_parsers::minidom::Element;

/// The component JID the gateway is configured with.
pub const COMPONENT_JID: &str = "push.localhost";
/// The server's domain: accounts are `user<n>@localhost`.
pub const DOMAIN: &str = "localhost";
const STREAM_ID: &str = "bench-stream-1";
const COMMANDS_NS: &str = "http://jabber.org/protocol/commands";
const DATA_NS: &str = "jabber:x:data";
const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// What the readers share with the load: the ledger and registration results.
pub struct Replies {
    /// Where publish replies go.
    pub ledger: Arc<CurrentLedger>,
    /// One permit back per registration answered.
    pub register_window: Arc<Semaphore>,
    /// Node of each registered device (empty until registered).
    pub nodes: Mutex<Vec<String>>,
    /// Registrations answered with a node.
    pub registered: AtomicU64,
    /// Registrations answered otherwise.
    pub registration_errors: AtomicU64,
}

impl Replies {
    /// Shared state for `devices` devices.
    pub fn new(ledger: Arc<CurrentLedger>, devices: usize) -> Self {
        Self {
            ledger,
            register_window: Arc::new(Semaphore::new(0)),
            nodes: Mutex::new(vec![String::new(); devices]),
            registered: AtomicU64::new(0),
            registration_errors: AtomicU64::new(0),
        }
    }
}

/// Accepts `connections` component streams on `listener` and starts a reader
/// for each; returns their write halves.
pub async fn accept_components(
    listener: &TcpListener,
    connections: usize,
    secret: &str,
    replies: &Arc<Replies>,
    deadline: Duration,
) -> anyhow::Result<Vec<OwnedWriteHalf>> {
    let mut writers = Vec::with_capacity(connections);
    for n in 0..connections {
        let (tcp, _) = tokio::time::timeout(deadline, listener.accept())
            .await
            .with_context(|| format!("the gateway opened {n} of {connections} component connections within {deadline:?} (see its log)"))??;
        tcp.set_nodelay(true)?;
        let (read, write) = handshake(tcp, secret, deadline).await?;
        let replies = replies.clone();
        tokio::spawn(read_replies(read, replies));
        writers.push(write);
    }
    Ok(writers)
}

async fn handshake(
    tcp: TcpStream,
    secret: &str,
    deadline: Duration,
) -> anyhow::Result<(Reader, OwnedWriteHalf)> {
    let (read, mut write) = tcp.into_split();
    let mut reader = Reader::new(read);
    match reader.next(deadline).await? {
        Some(StreamEvent::Header { .. }) => {}
        other => bail!("expected the component's stream header, got {other:?}"),
    }
    let header = format!(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='{STREAM_ID}' from='{COMPONENT_JID}'>"
    );
    write.write_all(header.as_bytes()).await?;
    let Some(StreamEvent::Stanza(digest)) = reader.next(deadline).await? else {
        bail!("the component sent no handshake");
    };
    if digest.text() != handshake_digest(STREAM_ID, secret) {
        bail!("the component's handshake digest is wrong");
    }
    write.write_all(b"<handshake/>").await?;
    Ok((reader, write))
}

/// A component stream's read half, parsed into events.
struct Reader {
    read: OwnedReadHalf,
    parser: StreamReader,
    events: std::collections::VecDeque<StreamEvent>,
    buf: Vec<u8>,
}

impl Reader {
    fn new(read: OwnedReadHalf) -> Self {
        Self {
            read,
            parser: StreamReader::new(1 << 20),
            events: Default::default(),
            buf: vec![0; 64 * 1024],
        }
    }

    /// The next event; `None` at the end of the stream or after `deadline`.
    async fn next(&mut self, deadline: Duration) -> anyhow::Result<Option<StreamEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Ok(Some(event));
            }
            let n = match tokio::time::timeout(deadline, self.read.read(&mut self.buf)).await {
                Err(_) | Ok(Ok(0)) => return Ok(None),
                Ok(result) => result?,
            };
            let mut out = Vec::new();
            self.parser
                .feed(self.buf.get(..n).unwrap_or_default(), &mut out)
                .map_err(|e| anyhow::anyhow!("the component's stream is not well-formed: {e}"))?;
            self.events.extend(out);
        }
    }
}

/// Reads until the stream ends; every reply becomes a ledger entry.
async fn read_replies(mut reader: Reader, replies: Arc<Replies>) {
    const IDLE: Duration = Duration::from_secs(3600);
    reader.parser.split_raw();
    while let Ok(Some(event)) = reader.next(IDLE).await {
        // Most replies are a publish's empty result: read its id off the
        // bytes, so the bench spends its CPU on load, not on parsing.
        let event = match event {
            StreamEvent::Raw(raw) => match publish_result(&raw) {
                Some(seq) => {
                    if let Some(ledger) = replies.ledger.get() {
                        ledger.reply(seq, None);
                    }
                    continue;
                }
                None => match reader.parser.parse_stanza(&raw) {
                    Ok(stanza) => StreamEvent::Stanza(stanza),
                    Err(_) => break,
                },
            },
            other => other,
        };
        let StreamEvent::Stanza(stanza) = event else {
            if matches!(event, StreamEvent::End) {
                break;
            }
            continue;
        };
        let Some(id) = stanza.attr("id") else {
            continue;
        };
        if let Some(seq) = id.strip_prefix('p').and_then(|s| s.parse().ok()) {
            if let Some(ledger) = replies.ledger.get() {
                ledger.reply(seq, error_of(&stanza));
            }
        } else if let Some(device) = id.strip_prefix('r').and_then(|s| s.parse::<usize>().ok()) {
            match node_of(&stanza) {
                Some(node) => {
                    if let Ok(mut nodes) = replies.nodes.lock()
                        && let Some(slot) = nodes.get_mut(device)
                    {
                        *slot = node;
                    }
                    replies.registered.fetch_add(1, Ordering::Relaxed);
                }
                None => {
                    replies.registration_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            replies.register_window.add_permits(1);
        }
    }
}

/// `type/condition` of an error reply; `None` for a result.
/// The sequence number of `<iq type='result' id='p<seq>'/>`, if `raw` is one.
fn publish_result(raw: &[u8]) -> Option<u64> {
    let mut reader = quick_xml::Reader::from_reader(raw);
    let quick_xml::events::Event::Empty(iq) = reader.read_event().ok()? else {
        return None;
    };
    if iq.local_name().as_ref() != b"iq" {
        return None;
    }
    let (mut result, mut seq) = (false, None);
    for attr in iq.attributes() {
        let attr = attr.ok()?;
        match attr.key.as_ref() {
            b"type" => result = attr.value.as_ref() == b"result",
            b"id" => {
                seq = std::str::from_utf8(attr.value.as_ref())
                    .ok()?
                    .strip_prefix('p')?
                    .parse()
                    .ok();
            }
            _ => {}
        }
    }
    seq.filter(|_| result)
}

fn error_of(reply: &Element) -> Option<String> {
    if reply.attr("type") != Some("error") {
        return None;
    }
    let error = reply.children().find(|c| c.name() == "error");
    let kind = error.and_then(|e| e.attr("type")).unwrap_or("?");
    let condition = error
        .and_then(|e| {
            e.children()
                .find(|c| c.ns() == STANZAS_NS && c.name() != "text")
        })
        .map_or("?", |c| c.name());
    Some(format!("{kind}/{condition}"))
}

/// The `node` field of a completed `register-device`.
fn node_of(reply: &Element) -> Option<String> {
    let command = reply.get_child("command", COMMANDS_NS)?;
    if command.attr("status") != Some("completed") {
        return None;
    }
    command
        .get_child("x", DATA_NS)?
        .children()
        .find(|f| f.attr("var") == Some("node"))
        .and_then(|f| f.get_child("value", DATA_NS))
        .map(Element::text)
}
