//! One HTTP/2 + TLS server that plays APNs (`/3/device/{token}`), FCM v1
//! (`/v1/projects/{p}/messages:send`) and the OAuth2 token endpoint (`/token`),
//! records every request, and answers per token as a test tells it.

use super::pki::TestPki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// A request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The request path.
    pub path: String,
    /// Headers, lowercase names.
    pub headers: HashMap<String, String>,
    /// The body as text.
    pub body: String,
    /// The status the mock answered (0: the connection was reset instead).
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// One scripted answer to one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// This status and JSON body, with an optional `Retry-After` in seconds.
    Status(u16, Value, Option<u64>),
    /// Close the TCP connection without answering.
    Reset,
    /// Answer this status and body, and send GOAWAY on the connection.
    GoAway(u16, Value),
}

impl Recorded {
    /// The body parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
    /// The device token the request was for.
    pub fn token(&self) -> Option<String> {
        if let Some(token) = self.path.strip_prefix("/3/device/") {
            return Some(token.to_owned());
        }
        self.json()["message"]["token"].as_str().map(str::to_owned)
    }
}

/// Per-connection signals from a request handler to its connection task.
#[derive(Default)]
struct Signals {
    reset: Notify,
    goaway: Notify,
}

#[derive(Default)]
struct State {
    pushes: Mutex<Vec<Recorded>>,
    token_grants: Mutex<Vec<Recorded>>,
    scripted: Mutex<HashMap<String, (u16, String)>>,
    scripts: Mutex<HashMap<String, VecDeque<Answer>>>,
    delays: Mutex<HashMap<String, Duration>>,
    grants_issued: AtomicUsize,
    connections: AtomicUsize,
    token_lifetime_s: AtomicUsize,
    /// Answers for the next grant requests, in order: status, body, and a
    /// `location` header; a token is issued once they are used up.
    token_answers: Mutex<VecDeque<(u16, String, Option<String>)>>,
}

/// The running mock.
pub struct MockProvider {
    /// Base URL, `https://127.0.0.1:PORT`.
    pub url: String,
    /// Keys and CA the gateway's configuration points at.
    pub pki: TestPki,
    state: Arc<State>,
}

impl MockProvider {
    /// Starts the mock, writing its key material into `dir`.
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, false).await
    }

    /// Starts a mock that, like APNs with certificate auth, completes a TLS
    /// handshake only with a client certificate issued by the test CA.
    pub async fn start_requiring_client_cert(dir: &Path) -> Self {
        Self::start_with(dir, true).await
    }

    async fn start_with(dir: &Path, client_cert: bool) -> Self {
        super::init_crypto();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let url = format!(
            "https://127.0.0.1:{}",
            listener.local_addr().expect("addr").port()
        );
        let pki = TestPki::generate(dir, &format!("{url}/token")).expect("test PKI");
        let tls = if client_cert {
            pki.server_tls_requiring_client_cert()
        } else {
            pki.server_tls().expect("server TLS config")
        };
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let state = Arc::new(State::default());
        state.token_lifetime_s.store(3600, Ordering::SeqCst);
        let serve_state = state.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let state = serve_state.clone();
                state.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let signals = Arc::new(Signals::default());
                    let service_signals = signals.clone();
                    let service =
                        service_fn(move |req| handle(state.clone(), service_signals.clone(), req));
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::pin!(conn);
                    loop {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            () = signals.reset.notified() => return,
                            () = signals.goaway.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                });
            }
        });
        Self { url, pki, state }
    }

    /// Answers pushes to `token` with `status` and `body` from now on.
    pub fn respond(&self, token: &str, status: u16, body: Value) {
        self.state
            .scripted
            .lock()
            .expect("lock")
            .insert(token.to_owned(), (status, body.to_string()));
    }

    /// Answers the next requests for `token` with `answers`, in order; then as
    /// before (a `respond` answer, or success).
    pub fn script(&self, token: &str, answers: impl IntoIterator<Item = Answer>) {
        self.state
            .scripts
            .lock()
            .expect("lock")
            .entry(token.to_owned())
            .or_default()
            .extend(answers);
    }

    /// Drops the answers still scripted for `token`.
    pub fn clear_script(&self, token: &str) {
        self.state.scripts.lock().expect("lock").remove(token);
    }

    /// Requests for `token` so far (every attempt, answered or reset).
    pub fn attempts(&self, token: &str) -> Vec<Recorded> {
        self.pushes()
            .into_iter()
            .filter(|r| r.token().as_deref() == Some(token))
            .collect()
    }

    /// Requests for `token` answered with 200.
    pub fn delivered(&self, token: &str) -> Vec<Recorded> {
        self.attempts(token)
            .into_iter()
            .filter(|r| r.status == 200)
            .collect()
    }

    /// Answers pushes to `token` only after `delay` (a slow provider).
    pub fn delay(&self, token: &str, delay: Duration) {
        self.state
            .delays
            .lock()
            .expect("lock")
            .insert(token.to_owned(), delay);
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// The `expires_in` of the access tokens issued from now on.
    pub fn token_lifetime(&self, seconds: usize) {
        self.state.token_lifetime_s.store(seconds, Ordering::SeqCst);
    }

    /// Answers the next grant requests with these (status, body, `location`)
    /// instead of a token.
    pub fn token_answers(&self, answers: impl IntoIterator<Item = (u16, String, Option<String>)>) {
        self.state
            .token_answers
            .lock()
            .expect("lock")
            .extend(answers);
    }

    /// Pushes received so far (APNs and FCM sends, not token grants).
    pub fn pushes(&self) -> Vec<Recorded> {
        self.state.pushes.lock().expect("lock").clone()
    }

    /// OAuth2 grants received so far.
    pub fn grants(&self) -> Vec<Recorded> {
        self.state.token_grants.lock().expect("lock").clone()
    }

    /// Waits until at least `n` pushes arrived; returns them all.
    pub async fn wait_pushes(&self, n: usize, deadline: Duration) -> Vec<Recorded> {
        super::eventually(deadline, || async { self.pushes().len() >= n }).await;
        self.pushes()
    }
}

async fn handle(
    state: Arc<State>,
    signals: Arc<Signals>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = req.into_body().collect().await?.to_bytes();
    let mut recorded = Recorded {
        path: path.clone(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 200,
        at: Instant::now(),
    };
    if path == "/token" {
        state.token_grants.lock().expect("lock").push(recorded);
        let scripted = state.token_answers.lock().expect("lock").pop_front();
        if let Some((status, body, location)) = scripted {
            let mut response = reply(status, body, None);
            if let Some(location) = location {
                response.headers_mut().insert(
                    "location",
                    hyper::header::HeaderValue::from_str(&location).expect("location"),
                );
            }
            return Ok(response);
        }
        let n = state.grants_issued.fetch_add(1, Ordering::SeqCst) + 1;
        let expires_in = state.token_lifetime_s.load(Ordering::SeqCst);
        return Ok(reply(200, json!({"access_token": format!("test-access-{n}"), "expires_in": expires_in, "token_type": "Bearer"}).to_string(), None));
    }
    let token = if let Some(token) = path.strip_prefix("/3/device/") {
        Some(token.to_owned())
    } else if path.ends_with("/messages:send") {
        recorded.json()["message"]["token"]
            .as_str()
            .map(str::to_owned)
    } else {
        None
    };
    let Some(token) = token else {
        recorded.status = 404;
        state.pushes.lock().expect("lock").push(recorded);
        return Ok(reply(404, json!({"reason": "BadPath"}).to_string(), None));
    };
    let delay = state.delays.lock().expect("lock").get(&token).copied();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let next = state
        .scripts
        .lock()
        .expect("lock")
        .get_mut(&token)
        .and_then(VecDeque::pop_front);
    let response = match next {
        Some(Answer::Reset) => {
            recorded.status = 0;
            state.pushes.lock().expect("lock").push(recorded);
            signals.reset.notify_one();
            // The connection task drops the connection; this never answers.
            std::future::pending::<()>().await;
            return Ok(reply(500, String::new(), None));
        }
        Some(Answer::GoAway(status, body)) => {
            signals.goaway.notify_one();
            reply_with(status, body.to_string(), None, None)
        }
        Some(Answer::Status(status, body, retry_after)) => {
            reply_with(status, body.to_string(), None, retry_after)
        }
        None => {
            let scripted = state.scripted.lock().expect("lock").get(&token).cloned();
            match scripted {
                Some((status, body)) => reply(status, body, None),
                None if path.starts_with("/3/") => reply(200, String::new(), Some("apns-id-1")),
                None => reply(
                    200,
                    json!({"name": "projects/test-project/messages/1"}).to_string(),
                    None,
                ),
            }
        }
    };
    recorded.status = response.status().as_u16();
    // Recorded when answered, so a test that sees it knows the gateway got the answer.
    state.pushes.lock().expect("lock").push(recorded);
    Ok(response)
}

fn reply(status: u16, body: String, apns_id: Option<&str>) -> Response<Full<Bytes>> {
    reply_with(status, body, apns_id, None)
}

fn reply_with(
    status: u16,
    body: String,
    apns_id: Option<&str>,
    retry_after: Option<u64>,
) -> Response<Full<Bytes>> {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(id) = apns_id {
        builder = builder.header("apns-id", id);
    }
    if let Some(seconds) = retry_after {
        builder = builder.header("retry-after", seconds.to_string());
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}
