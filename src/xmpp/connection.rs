//! Opening a component stream: TCP connect, stream header, XEP-0114 handshake.

use super::frame::{FrameError, StreamEvent, StreamReader};
use super::stream_error::StreamErrorInfo;
use super::tls::{ComponentTls, ReadHalf, WriteHalf, plain};
use super::{NS_COMPONENT, NS_STREAM};
use sha1::{Digest, Sha1};
use std::io;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Why a connection attempt failed; the message is the log line an operator sees.
#[derive(Debug, Error)]
pub(crate) enum ConnectError {
    /// DNS could not resolve the server's host name.
    #[error("host unknown: cannot resolve {host}: {source}")]
    Resolve {
        /// The configured host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// Nothing listens on the component port.
    #[error("connection refused by {addr}: is the server's component listener on this port?")]
    Refused {
        /// `host:port`.
        addr: String,
    },
    /// Another socket error.
    #[error("cannot connect to {addr}: {source}")]
    Io {
        /// `host:port`.
        addr: String,
        /// The socket error.
        source: io::Error,
    },
    /// The TLS handshake failed.
    #[error(
        "TLS with {addr} failed (does the server speak direct TLS there, and is its certificate trusted and for this name?)"
    )]
    Tls {
        /// `host:port`.
        addr: String,
        /// What rustls or the socket said.
        #[source]
        source: io::Error,
    },
    /// Connect + handshake did not finish in time.
    #[error("timed out after {0:?} while connecting and handshaking")]
    Timeout(Duration),
    /// The server answered with a stream error.
    #[error("{explanation}")]
    Rejected {
        /// The server's stream error.
        info: StreamErrorInfo,
        /// What it means, for the log.
        explanation: String,
    },
    /// The server closed the stream or socket during the handshake.
    #[error("the server closed the connection during the handshake")]
    Closed,
    /// The server sent something that is not a component stream.
    #[error("protocol error during the handshake: {0}")]
    Protocol(String),
}

impl ConnectError {
    /// True when retrying cannot help until the configuration changes.
    pub(crate) fn is_configuration_error(&self) -> bool {
        match self {
            ConnectError::Rejected { info, .. } => info.is_configuration_error(),
            ConnectError::Resolve { .. } => true,
            _ => false,
        }
    }
}

/// The XEP-0114 handshake value: lowercase hex SHA-1 of stream id + secret.
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut hasher = Sha1::new();
    hasher.update(stream_id.as_bytes());
    hasher.update(secret.as_bytes());
    hex::encode(hasher.finalize())
}

/// An authenticated component stream, split for concurrent reading and writing.
pub(crate) struct Connection {
    pub(crate) read: ReadHalf,
    pub(crate) write: WriteHalf,
    pub(crate) reader: StreamReader,
    /// Events already parsed after the handshake, to be handled first.
    pub(crate) pending: Vec<StreamEvent>,
}

/// Where and as whom to connect.
pub(crate) struct Target<'a> {
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) jid: &'a str,
    pub(crate) secret: &'a str,
    pub(crate) max_stanza_bytes: usize,
    /// Idle time before TCP keepalive probes start.
    pub(crate) keepalive: Duration,
    /// TLS, when the server speaks it.
    pub(crate) tls: Option<&'a ComponentTls>,
}

/// Connects to the target and authenticates, all within `timeout`.
pub(crate) async fn establish(
    target: Target<'_>,
    timeout: Duration,
) -> Result<Connection, ConnectError> {
    tokio::time::timeout(timeout, establish_inner(target))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

/// TCP keepalive probes after `idle` (every 10 s, 3 tries) and, on Linux, a
/// 60 s limit on unacknowledged data: a server that vanished without closing
/// (a partition, a dead host) is noticed in about a minute and a half instead of
/// the kernel's quarter of an hour. Best effort: failures only lose the tuning.
fn tune_socket(stream: &TcpStream, idle: Duration) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let params = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10));
    #[cfg(target_os = "linux")]
    let params = params.with_retries(3);
    let _ = sock.set_tcp_keepalive(&params);
    #[cfg(target_os = "linux")]
    let _ = sock.set_tcp_user_timeout(Some(Duration::from_secs(60)));
}

async fn establish_inner(target: Target<'_>) -> Result<Connection, ConnectError> {
    let Target {
        host,
        port,
        jid,
        secret,
        max_stanza_bytes,
        keepalive,
        tls,
    } = target;
    let addr = format!("{host}:{port}");
    let stream = dial(host, &addr, keepalive).await?;
    let (mut read, mut write) = match tls {
        None => plain(stream),
        Some(tls) => tls.wrap(stream).await.map_err(|source| ConnectError::Tls {
            addr: addr.clone(),
            source,
        })?,
    };
    let io_err = |source| ConnectError::Io {
        addr: addr.clone(),
        source,
    };
    let header = format!(
        "<stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAM}' to='{}'>",
        escape_attr(jid)
    );
    write.write_all(header.as_bytes()).await.map_err(io_err)?;

    let mut reader = StreamReader::new(max_stanza_bytes);
    let mut events = Vec::new();
    let stream_id = stream_id(&mut read, &mut reader, &mut events, &addr, jid).await?;
    let handshake = format!(
        "<handshake>{}</handshake>",
        handshake_digest(&stream_id, secret)
    );
    write
        .write_all(handshake.as_bytes())
        .await
        .map_err(io_err)?;
    loop {
        if events.is_empty() {
            read_more(&mut read, &mut reader, &mut events, &addr).await?;
            continue;
        }
        match events.remove(0) {
            StreamEvent::Stanza(e) if e.is("handshake", NS_COMPONENT) => {
                return Ok(Connection {
                    read,
                    write,
                    reader,
                    pending: events,
                });
            }
            other => return Err(unexpected(other, jid)),
        }
    }
}

/// Resolves `host` and connects to `addr`, with keepalive and user timeout set.
async fn dial(host: &str, addr: &str, keepalive: Duration) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<_> = tokio::net::lookup_host(addr)
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    let stream = TcpStream::connect(addrs.as_slice())
        .await
        .map_err(|source| {
            if source.kind() == io::ErrorKind::ConnectionRefused {
                ConnectError::Refused {
                    addr: addr.to_owned(),
                }
            } else {
                ConnectError::Io {
                    addr: addr.to_owned(),
                    source,
                }
            }
        })?;
    tune_socket(&stream, keepalive);
    Ok(stream)
}

/// Reads the server's stream header and returns its id; what came after it
/// stays in `events`. A server may reject our `to` right after its header.
async fn stream_id(
    read: &mut ReadHalf,
    reader: &mut StreamReader,
    events: &mut Vec<StreamEvent>,
    addr: &str,
    jid: &str,
) -> Result<String, ConnectError> {
    let id = loop {
        read_more(read, reader, events, addr).await?;
        let mut drained = events.drain(..);
        match drained.next() {
            None => continue,
            Some(StreamEvent::Header { id: Some(id), .. }) => {
                let rest: Vec<_> = drained.collect();
                *events = rest;
                break id;
            }
            Some(StreamEvent::Header { id: None, .. }) => {
                return Err(ConnectError::Protocol("stream header without an id".into()));
            }
            Some(other) => return Err(unexpected(other, jid)),
        }
    };
    if let Some(first) = events.first()
        && !matches!(first, StreamEvent::Stanza(e) if e.is("handshake", NS_COMPONENT))
    {
        let first = events.remove(0);
        return Err(unexpected(first, jid));
    }
    Ok(id)
}

async fn read_more(
    read: &mut ReadHalf,
    reader: &mut StreamReader,
    events: &mut Vec<StreamEvent>,
    addr: &str,
) -> Result<(), ConnectError> {
    let mut buf = [0u8; 4096];
    let n = read
        .read(&mut buf)
        .await
        .map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        })?;
    if n == 0 {
        return Err(ConnectError::Closed);
    }
    let data = buf.get(..n).unwrap_or_default();
    reader
        .feed(data, events)
        .map_err(|e: FrameError| ConnectError::Protocol(e.to_string()))
}

fn unexpected(event: StreamEvent, jid: &str) -> ConnectError {
    match event {
        StreamEvent::Stanza(e) => match StreamErrorInfo::parse(&e) {
            Some(info) => ConnectError::Rejected {
                explanation: info.explain(jid),
                info,
            },
            None => {
                ConnectError::Protocol(format!("unexpected <{}/> before the handshake", e.name()))
            }
        },
        // The reader splits raw only once the session asks, after the handshake.
        StreamEvent::Raw(_) => {
            ConnectError::Protocol("an unparsed stanza before the handshake".into())
        }
        StreamEvent::End => ConnectError::Closed,
        StreamEvent::Header { .. } => ConnectError::Protocol("a second stream header".into()),
    }
}

/// Escapes a value for a single-quoted XML attribute.
pub(crate) fn escape_attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn sockets_probe_dead_peers() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stream = TcpStream::connect(addr).await.expect("connect");
        tune_socket(&stream, Duration::from_secs(45));
        let sock = socket2::SockRef::from(&stream);
        assert!(sock.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(
            sock.tcp_keepalive_time().expect("idle"),
            Duration::from_secs(45)
        );
        assert_eq!(
            sock.tcp_user_timeout().expect("user timeout"),
            Some(Duration::from_secs(60))
        );
    }

    #[test]
    fn digest_is_lowercase_hex_sha1_of_id_and_secret() {
        // sha1("abcsecret")
        assert_eq!(
            handshake_digest("abc", "secret"),
            hex::encode(Sha1::digest(b"abcsecret"))
        );
        assert_eq!(handshake_digest("abc", "secret").len(), 40);
    }
}
