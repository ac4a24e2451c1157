//! A fake XMPP server's component listener: accepts the gateway's XEP-0114
//! stream, checks the handshake, and lets a test send stanzas and read replies.

use pushgate::xmpp::{StreamEvent, StreamReader, handshake_digest};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use xmpp_parsers::minidom::Element;

/// The stream id we hand out; contains the characters ejabberd uses.
pub const STREAM_ID: &str = "rr-1795/UHJx+mZ0=";

/// What the fake server does with a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Check the digest; accept if right, `not-authorized` if wrong.
    Check,
    /// Answer the stream header with `host-unknown`.
    HostUnknown,
}

/// The listening side.
pub struct FakeServer {
    listener: TcpListener,
    /// The port the gateway must connect to.
    pub port: u16,
    secret: String,
    /// Direct TLS on accepted connections (ejabberd's `tls: true`).
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl FakeServer {
    /// Listens on a free loopback port, expecting `secret`.
    pub async fn start(secret: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        Self {
            listener,
            port,
            secret: secret.to_owned(),
            tls: None,
        }
    }

    /// Like [`FakeServer::start`], speaking direct TLS with `tls`.
    pub async fn start_tls(secret: &str, tls: rustls::ServerConfig) -> Self {
        Self {
            tls: Some(tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls))),
            ..Self::start(secret).await
        }
    }

    /// Re-listens on the same port after [`FakeServer::stop`] (a server restart).
    pub async fn restart_on(port: u16, secret: &str) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("rebind");
        Self {
            listener,
            port,
            secret: secret.to_owned(),
            tls: None,
        }
    }

    /// Accepts one connection and completes the handshake; panics after `deadline`.
    pub async fn accept(&self, deadline: Duration) -> Component {
        match self.accept_with(Verdict::Check, deadline).await {
            Ok(c) => c,
            Err(why) => panic!("component did not authenticate: {why}"),
        }
    }

    /// Accepts one connection and applies `verdict`. `Err` says why the component
    /// was refused.
    pub async fn accept_with(
        &self,
        verdict: Verdict,
        deadline: Duration,
    ) -> Result<Component, String> {
        let (tcp, _) = tokio::time::timeout(deadline, self.listener.accept())
            .await
            .map_err(|_| "no connection within the deadline".to_owned())?
            .map_err(|e| e.to_string())?;
        let mut c = match &self.tls {
            None => Component::new(tcp),
            Some(acceptor) => {
                let tls = tokio::time::timeout(deadline, acceptor.accept(tcp))
                    .await
                    .map_err(|_| "no TLS handshake within the deadline".to_owned())?
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                let (read, write) = tokio::io::split(tls);
                Component::from_halves(Box::new(read), Box::new(write))
            }
        };
        let header = c.next_event(deadline).await.ok_or("no stream header")?;
        if !matches!(header, StreamEvent::Header { .. }) {
            return Err(format!("expected a header, got {header:?}"));
        }
        let to = super::JID;
        c.write(&format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='{STREAM_ID}' xml:lang='en' from='{to}'>"
        ))
        .await;
        if verdict == Verdict::HostUnknown {
            c.write("<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
            return Err("host-unknown".into());
        }
        let handshake = c.next_stanza(deadline).await.ok_or("no handshake")?;
        if handshake.text() != handshake_digest(STREAM_ID, &self.secret) {
            c.write("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await;
            return Err("not-authorized".into());
        }
        c.write("<handshake/>").await;
        Ok(c)
    }
}

/// One authenticated component connection, from the server's side.
pub struct Component {
    read: Box<dyn AsyncRead + Send + Unpin>,
    write: Box<dyn AsyncWrite + Send + Unpin>,
    reader: StreamReader,
    events: VecDeque<StreamEvent>,
    closed: bool,
    /// Bytes read so far, whitespace keepalives included.
    pub received_bytes: usize,
}

impl Component {
    pub(crate) fn new(tcp: TcpStream) -> Self {
        let (read, write) = tcp.into_split();
        Self::from_halves(Box::new(read), Box::new(write))
    }

    fn from_halves(
        read: Box<dyn AsyncRead + Send + Unpin>,
        write: Box<dyn AsyncWrite + Send + Unpin>,
    ) -> Self {
        Self {
            read,
            write,
            reader: StreamReader::new(1 << 20),
            events: VecDeque::new(),
            closed: false,
            received_bytes: 0,
        }
    }

    /// Sends raw XML.
    pub async fn write(&mut self, xml: &str) {
        let _ = self.write.write_all(xml.as_bytes()).await;
    }

    /// The next stream event, or `None` on EOF or deadline.
    pub async fn next_event(&mut self, deadline: Duration) -> Option<StreamEvent> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.closed {
                return None;
            }
            let mut buf = [0u8; 8192];
            let n = match tokio::time::timeout_at(until, self.read.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.closed = true;
                    return None;
                }
                Ok(Ok(n)) => n,
                Err(_) => return None,
            };
            self.received_bytes += n;
            let mut out = Vec::new();
            if self.reader.feed(&buf[..n], &mut out).is_err() {
                self.closed = true;
                return None;
            }
            self.events.extend(out);
        }
    }

    /// The next stanza, skipping nothing but whitespace; `None` on end/EOF/deadline.
    pub async fn next_stanza(&mut self, deadline: Duration) -> Option<Element> {
        match self.next_event(deadline).await? {
            StreamEvent::Stanza(e) => Some(e),
            _ => None,
        }
    }

    /// Sends `xml` and returns the reply with the same id (other stanzas are
    /// discarded). Panics after `deadline`.
    pub async fn iq(&mut self, xml: &str, deadline: Duration) -> Element {
        let id = xml
            .split("id='")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("test iq has an id='…'")
            .to_owned();
        self.write(xml).await;
        loop {
            let reply = self
                .next_stanza(deadline)
                .await
                .unwrap_or_else(|| panic!("no reply to iq {id}"));
            if reply.attr("id") == Some(id.as_str()) {
                return reply;
            }
        }
    }

    /// Waits for `</stream:stream>` or EOF; true if the stream ended.
    pub async fn wait_end(&mut self, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(StreamEvent::End) => return true,
                Some(_) => continue,
                None => return self.closed,
            }
        }
    }
}
