//! The HTTP/2 connections of one provider (`super::http2`): `n`
//! multiplexed connections used in turn, each opened on first use and
//! replaced after a failure.
//!
//! Not reqwest here: with its URL parsing, redirect and retry layers, pool
//! lookups and per-request timers it was a quarter of the gateway's CPU per
//! notification (BENCHMARKS.md). A push is one POST on a connection we
//! already hold; that is all this does. reqwest still serves the OAuth2
//! token endpoint ([`super::tls::http_client`]), which is called rarely.

use super::error::{BuildError, CredentialsError, TransportError};
use super::http2::Answer;
use super::http2::{self, Ended, Http2Error, Io};
use bytes::Bytes;
use h2::client::SendRequest;
use hyper::Uri;
use hyper::header::{HeaderMap, HeaderValue};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// Provider answers are a few hundred bytes; a longer one is cut off here
/// (and is then an error, which is logged).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A live connection: its generation (so a failure renews only the connection
/// that failed, not its replacement), the request sender, and how its driver
/// ended once it has.
#[derive(Clone)]
struct Live {
    generation: u64,
    sender: SendRequest<Bytes>,
    /// The error the connection's driver ended with, once it has: a
    /// request on a connection that died learns less, while the reason (a
    /// TLS alert refusing our client certificate, say) is the driver's.
    ended: Ended,
}

impl Live {
    /// Whether the connection's driver is still running.
    fn open(&self) -> bool {
        self.ended.borrow().is_none() && self.ended.has_changed().is_ok()
    }
}

/// How long a failed request waits to learn why its connection ended.
const END_REASON_WAIT: Duration = Duration::from_millis(200);

/// One connection slot.
type Slot = Mutex<Option<Live>>;

/// `n` HTTP/2 connections to one provider endpoint.
pub(crate) struct Connections {
    /// `scheme://authority[/base path]`, without a trailing slash.
    endpoint: String,
    host: String,
    port: u16,
    /// Some for `https` endpoints.
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    timeout: Duration,
    slots: Vec<Slot>,
    next: AtomicUsize,
    generations: AtomicU64,
}

impl Connections {
    /// The endpoint's host.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// `n` (at least one) connection slots to `endpoint`, for provider `id`;
    /// nothing connects until the first request.
    pub(crate) fn new(
        id: &str,
        endpoint: &str,
        mut tls: rustls::ClientConfig,
        timeout: Duration,
        n: usize,
    ) -> Result<Self, BuildError> {
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let bad = |why: String| BuildError::new(id, "endpoint", why);
        let uri: Uri = endpoint
            .parse()
            .map_err(|e| bad(format!("{endpoint}: {e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| bad(format!("{endpoint}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad(format!("{endpoint}: not an http(s) URL"))),
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            tls.alpn_protocols = vec![b"h2".to_vec()];
            let name =
                ServerName::try_from(host.clone()).map_err(|e| bad(format!("{host}: {e}")))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(tls)), name))
        } else {
            None
        };
        Ok(Self {
            endpoint,
            host,
            port,
            tls,
            timeout,
            slots: (0..n.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            generations: AtomicU64::new(0),
        })
    }

    /// POSTs `body` to the endpoint followed by `path`, within the request
    /// timeout (connecting included). A transport error, a timeout or a 5xx
    /// answer renews the connection it used; the error text never holds the
    /// URL (an APNs path holds the device token).
    pub(crate) async fn post(
        &self,
        path: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer, TransportError> {
        let uri: Uri = format!("{}{path}", self.endpoint)
            .parse()
            .map_err(|_| TransportError::Url)?;
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let Some(slot) = self.slots.get(index) else {
            return Err(TransportError::Url);
        };
        let mut generation = None;
        let exchange = self.exchange(slot, uri, headers, body, &mut generation);
        let result = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Timeout(self.timeout)),
        };
        let failed = result.as_ref().map_or(true, |a| a.status >= 500);
        if let (true, Some(generation)) = (failed, generation) {
            let mut held = slot.lock().await;
            if held
                .as_ref()
                .is_some_and(|live| live.generation == generation)
            {
                *held = None;
            }
        }
        result
    }

    async fn exchange(
        &self,
        slot: &Slot,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
        generation: &mut Option<u64>,
    ) -> Result<Answer, TransportError> {
        let Live {
            generation: g,
            sender,
            ended,
        } = {
            let mut held = slot.lock().await;
            match held.as_ref() {
                Some(live) if live.open() => live.clone(),
                _ => {
                    let (sender, ended) = self.connect().await?;
                    let live = Live {
                        generation: self.generations.fetch_add(1, Ordering::Relaxed),
                        sender,
                        ended,
                    };
                    *held = Some(live.clone());
                    live
                }
            }
        };
        *generation = Some(g);
        match http2::post(sender, uri, headers, body, MAX_ANSWER_BYTES).await {
            Ok(answer) => Ok(answer),
            Err(e @ Http2Error::TooLong(_)) => Err(TransportError::Body(Box::new(e))),
            Err(e) => Err(why_ended(ended, e).await),
        }
    }

    /// A new HTTP/2 connection, PINGing while idle so a dead one is noticed.
    async fn connect(&self) -> Result<(SendRequest<Bytes>, Ended), TransportError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|source| TransportError::Connect {
                host: self.host.clone(),
                port: self.port,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| TransportError::Tls {
                        host: self.host.clone(),
                        source,
                    })?;
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return Err(TransportError::NoHttp2 {
                        host: self.host.clone(),
                    });
                }
                Box::new(tls)
            }
            None => Box::new(tcp),
        };
        http2::handshake(io, self.host.clone())
            .await
            .map_err(|source| TransportError::Handshake {
                host: self.host.clone(),
                source,
            })
    }
}

/// The error of a request that failed on a connection: the connection's own
/// error when its driver ended with one (within [`END_REASON_WAIT`]), which
/// says more than the request's "canceled".
async fn why_ended(mut ended: Ended, request_error: Http2Error) -> TransportError {
    let reason = tokio::time::timeout(END_REASON_WAIT, ended.wait_for(Option::is_some)).await;
    match reason {
        Ok(Ok(reason)) => match reason.as_ref() {
            Some(e) => TransportError::Connection(Arc::clone(e)),
            None => TransportError::Send(request_error),
        },
        _ => TransportError::Send(request_error),
    }
}

/// An `Authorization: Bearer` value, marked sensitive (HPACK never indexes
/// it, and `Debug` hides it).
pub(crate) fn bearer_header(token: &str) -> Result<HeaderValue, CredentialsError> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(CredentialsError::HeaderValue)?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::Request;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::AtomicUsize;

    /// A plain-HTTP/2 (h2c) server answering `status` with the request path
    /// as body; counts the connections it accepted.
    async fn h2c_server(status: u16) -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    let body = if path.ends_with("/long") {
                        Bytes::from(vec![b'x'; MAX_ANSWER_BYTES + 1])
                    } else {
                        Bytes::from(path)
                    };
                    let mut response = hyper::Response::new(Full::new(body));
                    *response.status_mut() =
                        hyper::StatusCode::from_u16(status).unwrap_or_default();
                    Ok::<_, std::convert::Infallible>(response)
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        (port, accepted)
    }

    fn connections(port: u16) -> Connections {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Connections::new(
            "test",
            &format!("http://127.0.0.1:{port}/base/"),
            tls,
            Duration::from_secs(5),
            1,
        )
        .expect("valid endpoint")
    }

    #[tokio::test]
    async fn posts_on_one_connection_and_renews_it_after_a_5xx() {
        let (port, accepted) = h2c_server(200).await;
        let c = connections(port);
        for _ in 0..3 {
            let answer = c
                .post("/3/device/abc", HeaderMap::new(), Bytes::from_static(b"{}"))
                .await
                .expect("answered");
            assert_eq!(answer.status, 200);
            assert_eq!(answer.body.as_ref(), b"/base/3/device/abc");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "multiplexed on one");

        let (port, accepted) = h2c_server(503).await;
        let c = connections(port);
        for _ in 0..2 {
            let answer = c
                .post("/x", HeaderMap::new(), Bytes::new())
                .await
                .expect("answered");
            assert_eq!(answer.status, 503);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a 5xx renews the connection"
        );
    }

    #[tokio::test]
    async fn an_answer_over_the_limit_is_an_error_and_the_next_one_is_read() {
        let (port, accepted) = h2c_server(200).await;
        let c = connections(port);
        let err = c
            .post("/long", HeaderMap::new(), Bytes::from_static(b"{}"))
            .await
            .expect_err("too long");
        assert!(matches!(err, TransportError::Body(_)), "{err:?}");
        let answer = c
            .post("/short", HeaderMap::new(), Bytes::new())
            .await
            .expect("answered");
        assert_eq!(answer.body.as_ref(), b"/base/short");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "a failed exchange renews the connection it used"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_transport_error_without_the_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let err = connections(port)
            .post("/3/device/secret-token", HeaderMap::new(), Bytes::new())
            .await
            .expect_err("nobody listens");
        assert!(
            matches!(&err, TransportError::Connect { port: p, .. } if *p == port),
            "{err:?}"
        );
        assert!(
            std::error::Error::source(&err).is_some(),
            "the socket error is kept"
        );
        let text = crate::errors::chain(&err);
        assert!(text.starts_with("connecting to 127.0.0.1"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        let tls = || {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
        };
        for bad in ["ftp://example.com", "example.com", ""] {
            let err = Connections::new("p", bad, tls(), Duration::from_secs(1), 1)
                .err()
                .expect("refused");
            assert_eq!(err.key, "endpoint", "{bad}");
        }
        assert!(
            Connections::new("p", "https://[::1]:8443", tls(), Duration::from_secs(1), 1).is_ok()
        );
    }
}
