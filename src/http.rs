//! The HTTP side (actix-web): the Tigase REST unregister, health, readiness and
//! Prometheus metrics. Served over HTTPS when `http.tls_cert_file` is set.

mod routes;
mod tls;

use crate::app::AppContext;
use crate::config::HttpConfig;
use crate::delivery::Dispatcher;
use crate::registry::Registry;
use crate::telemetry::Metrics;
use actix_web::{App, HttpServer, web};
use std::sync::Arc;
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
}

/// Starts the server on `listener`, or on `http.listen` when there is none;
/// the returned handle stops it. The server does not install signal handlers:
/// the gateway decides when to stop.
pub fn start(
    config: &HttpConfig,
    state: HttpState,
    listener: Option<std::net::TcpListener>,
) -> Result<actix_web::dev::Server, HttpError> {
    let data = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 * 1024))
            .configure(routes::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(5);
    let addr = match &listener {
        Some(l) => l
            .local_addr()
            .map_or_else(|_| config.listen.clone(), |a| a.to_string()),
        None => config.listen.clone(),
    };
    let bind_err = |source| HttpError::Bind {
        addr: addr.clone(),
        source,
    };
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(tls::server_config(cert, key)?),
        _ => None,
    };
    let server = match (listener, tls) {
        (Some(l), Some(tls)) => server.listen_rustls_0_23(l, tls),
        (Some(l), None) => server.listen(l),
        (None, Some(tls)) => server.bind_rustls_0_23(&addr, tls),
        (None, None) => server.bind(&addr),
    }
    .map_err(bind_err)?;
    tracing::info!(listen = %addr, "HTTP listening");
    Ok(server.run())
}
