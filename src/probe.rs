//! `pushgate probe URL`: one HTTP GET, success on a 2xx status. The
//! container image has no shell and no curl, so health checks that cannot
//! use Kubernetes' own `httpGet` (the chart's `helm test` pod, a Compose
//! healthcheck) run the gateway's binary instead.
//!
//! Plain HTTP/1.1 over a blocking socket, every step bounded by the timeout:
//! the endpoints probed are the gateway's own, on the pod network.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

/// The most of the answer read: the status line is all that matters.
const MAX_HEAD: usize = 8 * 1024;

/// Why a probe failed.
#[derive(Debug, Error)]
pub enum ProbeError {
    /// Not an `http://host:port/path` URL.
    #[error("{0:?} is not an http:// URL (https is not supported: probe the plain listener)")]
    Url(String),
    /// The host did not resolve or no address answered.
    #[error("cannot connect to {address}")]
    Connect {
        /// host:port.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Sending the request or reading the answer failed (or timed out).
    #[error("no answer from {address}")]
    Exchange {
        /// host:port.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("the answer from {0} is not an HTTP response")]
    NotHttp(String),
    /// A status other than 2xx.
    #[error("{url} answered {status}")]
    Status {
        /// The URL probed.
        url: String,
        /// The HTTP status.
        status: u16,
    },
}

/// Where a URL points.
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    host: &'a str,
    port: u16,
    path: &'a str,
}

fn parse(url: &str) -> Result<Target<'_>, ProbeError> {
    let bad = || ProbeError::Url(url.to_owned());
    let rest = url.strip_prefix("http://").ok_or_else(bad)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    // [v6]:port, or host:port, or host (port 80).
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(bad)?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().map_err(|_| bad())?),
            None if after.is_empty() => (host, 80),
            None => return Err(bad()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
            None => (authority, 80),
        }
    };
    let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
    if host.is_empty() || !printable(host) || !printable(path) {
        return Err(bad());
    }
    Ok(Target { host, port, path })
}

/// GETs `url` within `timeout`; `Ok` with the status on a 2xx answer.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    let target = parse(url)?;
    let address = format!("{}:{}", target.host, target.port);
    // Outside any runtime the clock is the monotonic one, as the socket timeouts.
    let deadline = crate::clock::now() + timeout;
    let left = || {
        deadline
            .saturating_duration_since(crate::clock::now())
            .max(Duration::from_millis(1))
    };
    let connect_error = |source| ProbeError::Connect {
        address: address.clone(),
        source,
    };
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for a in (target.host, target.port)
        .to_socket_addrs()
        .map_err(connect_error)?
    {
        match TcpStream::connect_timeout(&a, left()) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let mut stream = stream.ok_or_else(|| connect_error(last))?;
    let exchange_error = |source| ProbeError::Exchange {
        address: address.clone(),
        source,
    };
    let host_header = if target.host.contains(':') {
        format!("[{}]", target.host)
    } else {
        target.host.to_owned()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: pushgate-probe\r\nConnection: close\r\n\r\n",
        target.path
    );
    stream
        .set_write_timeout(Some(left()))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .map_err(exchange_error)?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_HEAD {
        stream
            .set_read_timeout(Some(left()))
            .map_err(exchange_error)?;
        let n = stream.read(&mut buf).map_err(exchange_error)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let status = status_of(&head).ok_or_else(|| ProbeError::NotHttp(address.clone()))?;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(ProbeError::Status {
            url: url.to_owned(),
            status,
        })
    }
}

/// The status code of `HTTP/1.x NNN …`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    (code.len() == 3).then(|| code.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn urls_are_read_or_refused() {
        assert_eq!(
            parse("http://127.0.0.1:8080/readyz").ok(),
            Some(Target {
                host: "127.0.0.1",
                port: 8080,
                path: "/readyz"
            })
        );
        assert_eq!(
            parse("http://[::1]:9/x").ok(),
            Some(Target {
                host: "::1",
                port: 9,
                path: "/x"
            })
        );
        assert_eq!(
            parse("http://h").ok().map(|t| (t.port, t.path)),
            Some((80, "/"))
        );
        for bad in [
            "https://h/",
            "h:1/",
            "http://:1/",
            "http://h:x/",
            "http://[::1/",
            "http://h/a b",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    /// Serves one connection with `answer`.
    fn serve_once(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut request = [0u8; 512];
                let _ = s.read(&mut request);
                let _ = s.write_all(answer);
            }
        });
        format!("http://{address}/healthz")
    }

    #[test]
    fn a_2xx_answer_passes_and_anything_else_fails() {
        let ok = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(probe(&ok, Duration::from_secs(5)).ok(), Some(200));
        let down = serve_once(b"HTTP/1.1 503 Service Unavailable\r\n\r\n");
        assert!(matches!(
            probe(&down, Duration::from_secs(5)),
            Err(ProbeError::Status { status: 503, .. })
        ));
        let junk = serve_once(b"SSH-2.0-OpenSSH\r\n");
        assert!(matches!(
            probe(&junk, Duration::from_secs(5)),
            Err(ProbeError::NotHttp(_))
        ));
    }

    #[test]
    fn a_closed_port_fails_with_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        drop(listener);
        let e = probe(&format!("http://{address}/"), Duration::from_secs(5))
            .expect_err("nothing listens");
        assert!(matches!(e, ProbeError::Connect { .. }), "{e}");
    }

    #[test]
    fn a_silent_server_fails_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        // Accepted by the kernel, never answered.
        let e = probe(&format!("http://{address}/"), Duration::from_millis(200))
            .expect_err("no answer");
        assert!(matches!(e, ProbeError::Exchange { .. }), "{e}");
        drop(listener);
    }
}
