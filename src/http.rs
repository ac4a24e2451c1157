//! The HTTP side (actix-web): the Tigase REST unregister, health, readiness and
//! Prometheus metrics. Served over HTTPS when `http.tls_cert_file` is set.

mod routes;
mod tls;

pub use routes::read_unregister;

use crate::app::AppContext;
use crate::config::HttpConfig;
use crate::delivery::Dispatcher;
use crate::limits::KeyedRate;
use crate::registry::Registry;
use crate::telemetry::Metrics;
use actix_web::{App, HttpServer, web};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

/// Why the HTTP server could not start.
#[derive(Debug, Error)]
pub enum HttpError {
    /// The address could not be bound.
    #[error("http.listen {addr}: cannot listen: {source}")]
    Bind {
        /// The configured address.
        addr: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS certificate or key is unusable.
    #[error("{key}: {message}")]
    Tls {
        /// The offending key.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// Component JID and providers (for the REST unregister).
    pub app: AppContext,
    /// The registry.
    pub registry: Registry,
    /// The delivery pools (provider health for `/readyz`).
    pub dispatcher: Dispatcher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// In a cluster: where registrations live, and the cluster's status.
    pub cluster: Option<crate::cluster::Router>,
    /// REST calls per client address (`http.rest_per_minute`).
    pub(crate) rest_limit: Option<Arc<KeyedRate<std::net::IpAddr>>>,
}

/// The running listeners: the main one, and the admin one when configured.
pub struct Servers {
    servers: Vec<actix_web::dev::Server>,
}

/// Stops every listener.
#[derive(Clone)]
pub struct Handles(Vec<actix_web::dev::ServerHandle>);

impl Handles {
    /// Stops accepting; with `graceful`, requests in progress may finish.
    pub async fn stop(&self, graceful: bool) {
        futures_util::future::join_all(self.0.iter().map(|h| h.stop(graceful))).await;
    }
}

impl Servers {
    /// What stops them.
    pub fn handles(&self) -> Handles {
        Handles(
            self.servers
                .iter()
                .map(actix_web::dev::Server::handle)
                .collect(),
        )
    }

    /// Runs them on the current actix system until stopped.
    pub fn spawn(self) {
        for server in self.servers {
            actix::spawn(async move {
                if let Err(e) = server.await {
                    tracing::warn!("HTTP server stopped: {}", crate::errors::chain(&e));
                }
            });
        }
    }
}

/// Which routes a listener serves.
#[derive(Clone, Copy)]
enum Role {
    /// Everything (no admin listener configured).
    All,
    /// What the internet may reach: REST unregister and `/healthz`.
    Public,
    /// Health, readiness and metrics.
    Admin,
}

/// Where a listener listens.
enum Socket {
    /// Bound already (tests bind port 0 first).
    Bound(std::net::TcpListener),
    /// An address to bind.
    Address(String),
}

/// Starts the main listener on `listener`, or on `http.listen` when there is
/// none, and the admin listener on `http.admin_listen` when set. The servers
/// install no signal handlers: the gateway decides when to stop.
pub fn start(
    config: &HttpConfig,
    state: HttpState,
    listener: Option<std::net::TcpListener>,
) -> Result<Servers, HttpError> {
    let data = web::Data::new(state);
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let main = listener.map_or_else(|| Socket::Address(config.listen.clone()), Socket::Bound);
    let Some(admin) = &config.admin_listen else {
        let all = run(config, data, Role::All, main, tls)?;
        return Ok(Servers { servers: vec![all] });
    };
    let public = run(config, data.clone(), Role::Public, main, tls)?;
    let admin = run(
        config,
        data,
        Role::Admin,
        Socket::Address(admin.clone()),
        None,
    )?;
    Ok(Servers {
        servers: vec![public, admin],
    })
}

/// One listener: one worker (the gateway's threads are few), the connection
/// cap, the request-head deadline, and a whole-request deadline around every
/// handler (body included).
fn run(
    config: &HttpConfig,
    data: web::Data<HttpState>,
    role: Role,
    socket: Socket,
    tls: Option<rustls::ServerConfig>,
) -> Result<actix_web::dev::Server, HttpError> {
    let deadline = Duration::from_millis(config.request_timeout_ms);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024))
            .wrap(actix_web::middleware::from_fn(move |req, next| {
                within(deadline, req, next)
            }))
            .configure(|cfg| routes::configure(cfg, role))
    })
    .workers(1)
    .max_connections(config.max_connections)
    .client_request_timeout(deadline)
    .client_disconnect_timeout(Duration::from_secs(1))
    .disable_signals()
    .shutdown_timeout(5);
    let addr = match &socket {
        Socket::Bound(l) => l
            .local_addr()
            .map_or_else(|_| config.listen.clone(), |a| a.to_string()),
        Socket::Address(a) => a.clone(),
    };
    let bind_err = |source| HttpError::Bind {
        addr: addr.clone(),
        source,
    };
    let server = match (socket, tls) {
        (Socket::Bound(l), Some(tls)) => server.listen_rustls_0_23(l, tls),
        (Socket::Bound(l), None) => server.listen(l),
        (Socket::Address(a), Some(tls)) => server.bind_rustls_0_23(&a, tls),
        (Socket::Address(a), None) => server.bind(&a),
    }
    .map_err(bind_err)?;
    let what = match role {
        Role::All => "HTTP listening",
        Role::Public => "HTTP listening (REST unregister, /healthz)",
        Role::Admin => "HTTP admin listening (/metrics, /readyz, /healthz)",
    };
    tracing::info!(listen = %addr, "{what}");
    Ok(server.run())
}

/// Runs the rest of the request within `deadline`: a client that sends its
/// body slowly (or a handler that hangs) gets 408, and its slot is freed.
async fn within(
    deadline: Duration,
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody + 'static>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    match tokio::time::timeout(deadline, next.call(req)).await {
        Ok(result) => result,
        Err(_) => Err(actix_web::error::ErrorRequestTimeout(
            "the request took longer than http.request_timeout_ms",
        )),
    }
}
