//! Connections to Redis or a Redis Cluster, each multiplexing many requests.
//!
//! deadpool-redis opens them (with its create timeout); we then keep
//! `pool_size` of them checked out and share clones, because a deadpool checkout
//! costs a `PING` round trip on every recycle, and a publish may cost only one
//! round trip. After an I/O error or a timeout (or any error on a cluster, see
//! [`Connections::run`]) the held connections are dropped and reopened on next
//! use, which is how the store recovers by itself when Redis comes back or a
//! cluster fails over.

use super::super::RegistryError;
use crate::config::StoreConfig;
use deadpool_redis::Runtime;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Where connections come from.
enum Factory {
    Single(deadpool_redis::Pool),
    Cluster(deadpool_redis::cluster::Pool),
    /// A Redis Cluster over TLS with our own CA or client certificate:
    /// deadpool's cluster manager cannot be handed certificates, so the
    /// client opens connections itself (within the same connect timeout).
    ClusterTls(Box<redis::cluster::ClusterClient>),
}

/// One multiplexed connection, to a server or to a whole cluster.
#[derive(Clone)]
pub(super) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The shared connections and the limits every request runs under.
pub(super) struct Connections {
    factory: Factory,
    held: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    command_timeout: Duration,
    connect_timeout: Duration,
}

fn config_error(
    key: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> RegistryError {
    RegistryError::Setting {
        key,
        source: Box::new(e),
    }
}

impl Connections {
    /// Prepares connections as `config` says; opens none yet, so a Redis that is
    /// down does not stop the start. Fails only on a malformed URL.
    pub(super) fn new(config: &StoreConfig) -> Result<Self, RegistryError> {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let size = config.pool_size.max(1);
        let info = |key: &'static str, url: &str| -> Result<redis::ConnectionInfo, RegistryError> {
            let info = url
                .into_connection_info()
                .map_err(|e| config_error(key, e))?;
            let mut settings = info.redis_settings().clone();
            if let Some(user) = &config.username {
                settings = settings.set_username(user);
            }
            if let Some(password) = &config.password {
                settings = settings.set_password(password.expose());
            }
            Ok(info.set_redis_settings(settings))
        };
        let certificates = tls_certificates(config)?;
        let factory = if config.cluster {
            let seeds: Vec<redis::ConnectionInfo> = match &config.url {
                Some(url) => vec![info("store.url", url)?],
                None => config
                    .urls
                    .iter()
                    .map(|u| info("store.urls", u))
                    .collect::<Result<_, _>>()?,
            };
            if let Some(certificates) = certificates {
                let client = redis::cluster::ClusterClientBuilder::new(seeds)
                    .certs(certificates)
                    .build()
                    .map_err(|e| config_error("store.tls_ca_file", e))?;
                return Ok(Self::with(Factory::ClusterTls(Box::new(client)), config));
            }
            let manager = deadpool_redis::cluster::Manager::new(seeds, false)
                .map_err(|e| config_error("store.urls", e))?;
            let pool = deadpool_redis::cluster::Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .create_timeout(Some(connect_timeout))
                .wait_timeout(Some(connect_timeout))
                .build()
                .map_err(|e| config_error("store.urls", e))?;
            Factory::Cluster(pool)
        } else {
            let url = config.url.as_deref().unwrap_or_default();
            let mut server = info("store.url", url)?;
            if let Some(certificates) = &certificates {
                // The client carries the certificates in the connection
                // info, which deadpool's manager then connects with.
                server = redis::Client::build_with_tls(server, certificates.clone())
                    .map_err(|e| config_error("store.tls_ca_file", e))?
                    .get_connection_info()
                    .clone();
            }
            let manager =
                deadpool_redis::Manager::new(server).map_err(|e| config_error("store.url", e))?;
            let pool = deadpool_redis::Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .create_timeout(Some(connect_timeout))
                .wait_timeout(Some(connect_timeout))
                .build()
                .map_err(|e| config_error("store.url", e))?;
            Factory::Single(pool)
        };
        Ok(Self::with(factory, config))
    }

    fn with(factory: Factory, config: &StoreConfig) -> Self {
        Self {
            factory,
            held: (0..config.pool_size.max(1))
                .map(|_| Mutex::new(None))
                .collect(),
            next: AtomicUsize::new(0),
            command_timeout: Duration::from_millis(config.command_timeout_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        }
    }

    /// Whether this talks to a Redis Cluster (pipelines must then stay in one slot).
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self.factory, Factory::Cluster(_) | Factory::ClusterTls(_))
    }

    /// Runs `request` on one of the connections within the command timeout.
    ///
    /// The connection's and the request's futures are boxed: the redis
    /// crate's are several KiB each, and held inline they made every future
    /// that might touch the store as large (a publish's was 17 KiB, moved
    /// and zeroed per stanza even when its registration came from the
    /// cache: BENCHMARKS.md, "A moderate rate: fewer
    /// commits, smaller futures").
    pub(super) async fn run<T, F, Fut>(&self, request: F) -> Result<T, RegistryError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.held.len().max(1);
        let conn = Box::pin(self.connection(slot)).await?;
        match tokio::time::timeout(self.command_timeout, Box::pin(request(conn))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                // A cluster connection that saw any error may hold a stale slot
                // map (a transaction answered MOVED is not redirected by the
                // client), so every cluster error opens fresh connections.
                if self.is_cluster()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                {
                    self.forget_all();
                }
                Err(RegistryError::Redis(e))
            }
            Err(_) => {
                self.forget_all();
                Err(RegistryError::Timeout(self.command_timeout))
            }
        }
    }

    async fn connection(&self, slot: usize) -> Result<Conn, RegistryError> {
        if let Some(conn) = self.held.get(slot).and_then(|m| lock(m).clone()) {
            return Ok(conn);
        }
        let opened = tokio::time::timeout(self.connect_timeout, self.open()).await;
        let conn = match opened {
            Ok(result) => result?,
            Err(_) => return Err(RegistryError::Timeout(self.connect_timeout)),
        };
        if let Some(m) = self.held.get(slot) {
            *lock(m) = Some(conn.clone());
        }
        Ok(conn)
    }

    async fn open(&self) -> Result<Conn, RegistryError> {
        let unavailable = |e: Box<dyn std::error::Error + Send + Sync>| RegistryError::Connect(e);
        Ok(match &self.factory {
            Factory::Single(pool) => Conn::Single(deadpool_redis::Connection::take(
                pool.get().await.map_err(|e| unavailable(e.into()))?,
            )),
            Factory::Cluster(pool) => Conn::Cluster(deadpool_redis::cluster::Connection::take(
                pool.get().await.map_err(|e| unavailable(e.into()))?,
            )),
            Factory::ClusterTls(client) => Conn::Cluster(
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| unavailable(e.into()))?,
            ),
        })
    }

    fn forget_all(&self) {
        for m in &self.held {
            *lock(m) = None;
        }
    }
}

/// The CA and client certificate `[store]` names for `rediss://`, read now
/// so that a missing file stops the start with its key.
fn tls_certificates(config: &StoreConfig) -> Result<Option<redis::TlsCertificates>, RegistryError> {
    let read = |key: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| {
            config_error(
                key,
                std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
            )
        })
    };
    let root_cert = match &config.tls_ca_file {
        Some(path) => Some(read("store.tls_ca_file", path)?),
        None => None,
    };
    let client_tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(redis::ClientTlsConfig {
            client_cert: read("store.tls_cert_file", cert)?,
            client_key: read("store.tls_key_file", key)?,
        }),
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
