//! Mock APNs and FCM: one HTTP/2 + TLS server answering `/3/device/{token}`,
//! `/v1/projects/{p}/messages:send` and the OAuth2 `/token` grant. It reads the
//! publish sequence number out of every push, tells the ledger, and answers
//! after a configured latency, with configured rates of errors.

use crate::ledger::CurrentLedger;
use crate::pki::TestPki;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Marker before the sequence number in every publish body.
pub const MARKER: &str = "pgbench-";
/// Prefix of the FCM tokens the bench registers.
const FCM_TOKEN_PREFIX: &str = "fcm-bench-";

/// How the mock providers behave.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SinkBehaviour {
    /// Time before every answer.
    pub latency_ms: u64,
    /// Share of pushes answered 503 with `Retry-After: 1` (0.0-1.0).
    pub unavailable_rate: f64,
    /// Share of pushes answered "token dead": APNs 410 `Unregistered`, FCM 404
    /// `UNREGISTERED` (0.0-1.0).
    pub dead_rate: f64,
}

/// The device token the bench registers for `device` at APNs.
pub fn apns_token(device: u32) -> String {
    format!("{device:064x}")
}

/// The device token the bench registers for `device` at FCM (FCM tokens are
/// about 150 characters; so is this one).
pub fn fcm_token(device: u32) -> String {
    format!("{FCM_TOKEN_PREFIX}{device}-{}", "x".repeat(130))
}

/// The running mock; its URL is where both providers point.
pub struct Sink {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA and keys the gateway is configured with.
    pub pki: TestPki,
}

impl Sink {
    /// Listens on a free loopback port, writing key material into `dir`.
    pub async fn start(
        dir: &Path,
        ledger: Arc<CurrentLedger>,
        behaviour: SinkBehaviour,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let pki = TestPki::generate(dir, &format!("{url}/token"))?;
        let acceptor = TlsAcceptor::from(Arc::new(pki.server_tls()?));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let ledger = ledger.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| answer(ledger.clone(), behaviour, req));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(4096)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(Self { url, pki })
    }
}

/// Which provider a request is for, and the device its token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Apns(Option<u32>),
    Fcm(Option<u32>),
}

fn target(path: &str, body: &[u8]) -> Option<Target> {
    if let Some(token) = path.strip_prefix("/3/device/") {
        return Some(Target::Apns(u32::from_str_radix(token, 16).ok()));
    }
    path.ends_with("/messages:send")
        .then(|| Target::Fcm(number_after(body, FCM_TOKEN_PREFIX.as_bytes())))
}

/// The decimal number right after the first `marker` in `haystack`.
fn number_after<T: std::str::FromStr>(haystack: &[u8], marker: &[u8]) -> Option<T> {
    let at = haystack.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let digits = haystack.get(at..)?;
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(digits.get(..len)?).ok()?.parse().ok()
}

async fn answer(
    current: Arc<CurrentLedger>,
    behaviour: SinkBehaviour,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    if path == "/token" {
        let grant = r#"{"access_token":"bench-access","expires_in":3600,"token_type":"Bearer"}"#;
        return Ok(reply(200, grant, None));
    }
    if behaviour.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(behaviour.latency_ms)).await;
    }
    let Some(target) = target(&path, &body) else {
        return Ok(reply(404, r#"{"reason":"BadPath"}"#, None));
    };
    let Some(ledger) = current.get() else {
        return Ok(reply(200, "", None));
    };
    let (Some(seq), Some(device)) = (
        number_after::<u64>(&body, MARKER.as_bytes()),
        device_of(target),
    ) else {
        ledger.unknown_delivery();
        return Ok(reply(400, r#"{"reason":"BadDeviceToken"}"#, None));
    };
    let draw: f64 = rand::random();
    if draw < behaviour.unavailable_rate {
        ledger.provider_error();
        let body = match target {
            Target::Apns(_) => r#"{"reason":"ServiceUnavailable"}"#,
            Target::Fcm(_) => r#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#,
        };
        return Ok(reply(503, body, Some(1)));
    }
    if draw < behaviour.unavailable_rate + behaviour.dead_rate {
        ledger.refused_by_provider(seq, device, true);
        return Ok(match target {
            Target::Apns(_) => reply(
                410,
                &format!(
                    r#"{{"reason":"Unregistered","timestamp":{}}}"#,
                    pushgate::clock::unix_ms()
                ),
                None,
            ),
            Target::Fcm(_) => reply(
                404,
                r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"UNREGISTERED"}]}}"#,
                None,
            ),
        });
    }
    ledger.delivered(seq, device);
    Ok(match target {
        Target::Apns(_) => reply(200, "", None),
        Target::Fcm(_) => reply(200, r#"{"name":"projects/test-project/messages/1"}"#, None),
    })
}

fn device_of(target: Target) -> Option<u32> {
    match target {
        Target::Apns(device) | Target::Fcm(device) => device,
    }
}

fn reply(status: u16, body: &str, retry_after_s: Option<u64>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Some(seconds) = retry_after_s {
        headers.insert(hyper::header::RETRY_AFTER, seconds.into());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_sequence_numbers_are_read_back() {
        let apns = format!("/3/device/{}", apns_token(77));
        assert_eq!(target(&apns, b""), Some(Target::Apns(Some(77))));
        let fcm_body = format!(
            r#"{{"message":{{"token":"{}","data":{{"body":"{MARKER}123"}}}}}}"#,
            fcm_token(5)
        );
        assert_eq!(
            target("/v1/projects/p/messages:send", fcm_body.as_bytes()),
            Some(Target::Fcm(Some(5)))
        );
        assert_eq!(
            number_after::<u64>(fcm_body.as_bytes(), MARKER.as_bytes()),
            Some(123)
        );
        assert_eq!(number_after::<u64>(b"no marker", MARKER.as_bytes()), None);
    }
}
