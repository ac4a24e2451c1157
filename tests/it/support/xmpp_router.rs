//! A fake XMPP server that routes to its component streams the way real ones
//! do, for cluster tests where nodes come and go: ejabberd keeps every
//! stream and balances over them; Prosody keeps one, and answers a second
//! with `<conflict/>` (`kick_new`, the default) or lets it replace the first
//! (`kick_old`). It counts streams and conflicts, so a test can tell the
//! cluster never fights over a slot.

use super::xmpp_server::{Component, STREAM_ID};
use pushgate::xmpp::{StreamEvent, handshake_digest};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use xmpp_parsers::minidom::Element;

/// How the server treats a second stream for the component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// ejabberd: keep them all, send to each in turn.
    Balance,
    /// Prosody's default: refuse the newcomer with `<conflict/>`.
    KickNew,
    /// Prosody `component_conflict_resolve = "kick_old"`: the newcomer replaces.
    KickOld,
}

enum Command {
    Send(String, oneshot::Sender<Element>),
    Kick,
}

struct Stream {
    id: u64,
    tx: mpsc::Sender<Command>,
}

#[derive(Default)]
struct State {
    streams: Vec<Stream>,
    next: usize,
    most: usize,
    next_id: u64,
}

/// The server; accepts in the background until dropped.
pub struct XmppRouter {
    /// Its component port.
    pub port: u16,
    state: Arc<Mutex<State>>,
    conflicts: Arc<AtomicUsize>,
    accepting: tokio::task::JoinHandle<()>,
}

impl XmppRouter {
    /// Listens on a free loopback port for components with `secret`.
    pub async fn start(mode: Mode, secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State::default()));
        let conflicts = Arc::new(AtomicUsize::new(0));
        let (s, c, secret) = (state.clone(), conflicts.clone(), secret.to_owned());
        let accepting = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (s, c, secret) = (s.clone(), c.clone(), secret.clone());
                tokio::spawn(async move {
                    if let Some(component) = handshake(Component::new(tcp), &secret).await {
                        serve(component, mode, s, c).await;
                    }
                });
            }
        });
        Self {
            port,
            state,
            conflicts,
            accepting,
        }
    }

    /// Streams open now.
    pub fn streams(&self) -> usize {
        self.state.lock().expect("lock").streams.len()
    }

    /// Streams admitted so far.
    pub fn opened(&self) -> u64 {
        self.state.lock().expect("lock").next_id
    }

    /// The most streams ever open at once.
    pub fn most_streams(&self) -> usize {
        self.state.lock().expect("lock").most
    }

    /// `<conflict/>` stream errors sent so far.
    pub fn conflicts(&self) -> usize {
        self.conflicts.load(Ordering::SeqCst)
    }

    /// Sends `xml` on the next stream in turn and waits for the reply with
    /// its id; `None` without a stream, or when the stream ends first or
    /// nothing comes within `deadline`.
    pub async fn iq(&self, xml: &str, deadline: Duration) -> Option<Element> {
        let tx = {
            let mut state = self.state.lock().expect("lock");
            if state.streams.is_empty() {
                return None;
            }
            state.next = (state.next + 1) % state.streams.len();
            state.streams.get(state.next).map(|s| s.tx.clone())?
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Command::Send(xml.to_owned(), reply)).await.ok()?;
        tokio::time::timeout(deadline, answer).await.ok()?.ok()
    }

    /// As [`Self::iq`], panicking without an answer.
    pub async fn must_iq(&self, xml: &str) -> Element {
        self.iq(xml, super::WAIT).await.expect("an answer")
    }
}

impl Drop for XmppRouter {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn handshake(mut c: Component, secret: &str) -> Option<Component> {
    let wait = Duration::from_secs(5);
    if !matches!(c.next_event(wait).await?, StreamEvent::Header { .. }) {
        return None;
    }
    c.write(&format!(
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='{STREAM_ID}' xml:lang='en' from='{}'>",
        super::JID
    ))
    .await;
    let digest = c.next_stanza(wait).await?;
    if digest.text() != handshake_digest(STREAM_ID, secret) {
        return None;
    }
    c.write("<handshake/>").await;
    Some(c)
}

const CONFLICT: &str = "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>";

/// Admits the stream by `mode`, then carries requests and replies until it ends.
async fn serve(
    mut c: Component,
    mode: Mode,
    state: Arc<Mutex<State>>,
    conflicts: Arc<AtomicUsize>,
) {
    let (tx, mut rx) = mpsc::channel(64);
    let admitted = {
        let mut s = state.lock().expect("lock");
        let refused = !s.streams.is_empty() && mode == Mode::KickNew;
        if !s.streams.is_empty() && mode != Mode::Balance {
            conflicts.fetch_add(1, Ordering::SeqCst);
        }
        if refused {
            None
        } else {
            if mode == Mode::KickOld {
                for old in s.streams.drain(..) {
                    let _ = old.tx.try_send(Command::Kick);
                }
            }
            s.next_id += 1;
            let id = s.next_id;
            s.streams.push(Stream { id, tx });
            s.most = s.most.max(s.streams.len());
            Some(id)
        }
    };
    let Some(id) = admitted else {
        c.write(CONFLICT).await;
        return;
    };
    let mut pending: HashMap<String, oneshot::Sender<Element>> = HashMap::new();
    loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(Command::Send(xml, reply)) => {
                    if let Some(id) = xml.split("id='").nth(1).and_then(|r| r.split('\'').next()) {
                        pending.insert(id.to_owned(), reply);
                    }
                    c.write(&xml).await;
                }
                Some(Command::Kick) | None => {
                    c.write(CONFLICT).await;
                    break;
                }
            },
            event = c.next_event(Duration::from_secs(3600)) => match event {
                Some(StreamEvent::Stanza(e)) => {
                    if let Some(reply) = e.attr("id").and_then(|id| pending.remove(id)) {
                        let _ = reply.send(e);
                    }
                }
                Some(StreamEvent::End) | None => break,
                Some(_) => {}
            },
        }
    }
    state.lock().expect("lock").streams.retain(|s| s.id != id);
}
