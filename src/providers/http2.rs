//! One HTTP/2 connection on the `h2` crate: its driver (with keep-alive
//! PINGs), and one request's exchange on it.
//!
//! Not hyper's client here, though hyper runs on this same crate: for every
//! request hyper's client passed the request through a channel to the
//! connection's task and spawned a task of its own to wait for the answer,
//! with a body adapter around each end: about 6% of the gateway's samples
//! at full load, and without it the CPU per delivery fell 11%
//! (BENCHMARKS.md, "Third round, again: less per delivery").
//! Here the request's own task opens the stream and waits for the answer.

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use hyper::header::{CONTENT_LENGTH, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

/// Idle time after which a PING checks the connection is still there.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// Streams opened at most before the server's SETTINGS arrive.
const INITIAL_MAX_STREAMS: usize = 100;
/// How long a PING may wait for its answer before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What went wrong on an HTTP/2 connection. The socket's errors are kept
/// as such, so that a TLS alert (a refused client certificate) can be found
/// in the chain of sources.
#[derive(Debug, thiserror::Error)]
pub enum Http2Error {
    /// The socket (or TLS over it).
    #[error("connection I/O")]
    Io(#[source] std::io::Error),
    /// The protocol: a reset, GOAWAY, a malformed frame.
    #[error("HTTP/2")]
    Protocol(#[source] h2::Error),
    /// A keep-alive PING went unanswered.
    #[error("no answer to a keep-alive PING within {0:?}")]
    KeepAlive(Duration),
    /// The answer's body was longer than allowed.
    #[error("answer longer than {0} bytes")]
    TooLong(usize),
}

impl From<h2::Error> for Http2Error {
    fn from(e: h2::Error) -> Self {
        if !e.is_io() {
            return Self::Protocol(e);
        }
        // `is_io` held, so there is an I/O error to take out.
        Self::Io(
            e.into_io()
                .unwrap_or_else(|| std::io::Error::other("HTTP/2 connection I/O")),
        )
    }
}

/// A provider's answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status.
    pub(crate) status: u16,
    /// Response headers (`apns-id`, `Retry-After`).
    pub(crate) headers: HeaderMap,
    /// The body.
    pub(crate) body: Bytes,
}

/// The error the connection's driver ended with, once it has.
pub(crate) type Ended = watch::Receiver<Option<Arc<Http2Error>>>;

/// The socket under a connection: TLS, or plain TCP for an `http://` endpoint
/// (HTTP/2 with prior knowledge, for local mocks and proxies).
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The HTTP/2 handshake over `io`, and its driver spawned: it PINGs while
/// idle so that a dead connection is noticed, and says how it ended.
pub(crate) async fn handshake(
    io: Box<dyn Io>,
    host: String,
) -> Result<(SendRequest<Bytes>, Ended), Http2Error> {
    // As hyper's client did: no server push (nothing would read it), and at
    // most 100 streams before the server's SETTINGS say how many it takes.
    let (sender, mut connection) = h2::client::Builder::new()
        .enable_push(false)
        .initial_max_send_streams(INITIAL_MAX_STREAMS)
        .handshake(io)
        .await?;
    let ping_pong = connection.ping_pong();
    let (end, ended) = watch::channel(None);
    tokio::spawn(async move {
        let outcome = match ping_pong {
            Some(ping_pong) => {
                tokio::select! {
                    done = &mut connection => done.map_err(Http2Error::from),
                    failed = keep_alive(ping_pong) => Err(failed),
                }
            }
            None => connection.await.map_err(Http2Error::from),
        };
        if let Err(e) = outcome {
            debug!(%host, "HTTP/2 connection ended: {}", crate::errors::chain(&e));
            let _ = end.send(Some(Arc::new(e)));
        }
    });
    Ok((sender, ended))
}

/// PINGs every [`KEEP_ALIVE_INTERVAL`]; returns when one goes unanswered.
async fn keep_alive(mut ping_pong: h2::PingPong) -> Http2Error {
    loop {
        tokio::time::sleep(KEEP_ALIVE_INTERVAL).await;
        let pong = tokio::time::timeout(KEEP_ALIVE_TIMEOUT, ping_pong.ping(h2::Ping::opaque()));
        match pong.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return e.into(),
            Err(_) => return Http2Error::KeepAlive(KEEP_ALIVE_TIMEOUT),
        }
    }
}

/// POSTs `body` to `uri` on `sender`'s connection and reads the answer,
/// its body up to `max_body` bytes.
pub(crate) async fn post(
    sender: SendRequest<Bytes>,
    uri: Uri,
    mut headers: HeaderMap,
    body: Bytes,
    max_body: usize,
) -> Result<Answer, Http2Error> {
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    let mut sender = sender.ready().await?;
    let (response, mut stream) = sender.send_request(request, body.is_empty())?;
    if !body.is_empty() {
        // Buffered by h2 until the peer's window takes it: a push is a few
        // KiB at most, well inside the initial window.
        stream.send_data(body, true)?;
    }
    let (parts, mut incoming) = response.await?.into_parts();
    let mut answer = BytesMut::new();
    while let Some(chunk) = incoming.data().await {
        let chunk = chunk?;
        let _ = incoming.flow_control().release_capacity(chunk.len());
        if answer.len() + chunk.len() > max_body {
            return Err(Http2Error::TooLong(max_body));
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: answer.freeze(),
    })
}
