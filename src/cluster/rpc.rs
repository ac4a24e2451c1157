//! The gRPC service peers call (`proto/pushgate/cluster/v1/cluster.proto`),
//! with the standard health service beside it for Kubernetes probes.
//!
//! Every call but health carries the shared secret in the
//! `x-pushgate-cluster-secret` metadata, compared in constant time; with
//! `ca_file`/`cert_file`/`key_file` the transport is mutual TLS as well.

use super::Shared;
use crate::config::{ClusterConfig, Secret};
use crate::gateway::PushComponent;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

/// The generated code.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub(crate) mod pb {
    tonic::include_proto!("pushgate.cluster.v1");
}

mod forward;

use pb::cluster_server::{Cluster as ClusterRpc, ClusterServer};
use pb::{
    ForwardBatch, ForwardResult, ForwardResults, NotOwner, NudgeReply, NudgeRequest,
    UnregisterReply, UnregisterRequest, unregister_reply,
};

/// The metadata key carrying the shared secret.
pub(super) const SECRET_HEADER: &str = "x-pushgate-cluster-secret";

/// Mutual TLS material, when configured.
#[derive(Clone)]
pub(crate) struct Tls {
    pub(super) ca: Certificate,
    pub(super) identity: Identity,
}

impl Tls {
    pub(super) fn load(config: &ClusterConfig) -> Result<Option<Self>, super::ClusterError> {
        let (Some(ca), Some(cert), Some(key)) =
            (&config.ca_file, &config.cert_file, &config.key_file)
        else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|source| super::ClusterError::Tls {
                path: p.display().to_string(),
                source,
            })
        };
        Ok(Some(Self {
            ca: Certificate::from_pem(read(ca)?),
            identity: Identity::from_pem(read(cert)?, read(key)?),
        }))
    }
}

struct Service {
    handler: Arc<PushComponent>,
    shared: Arc<Shared>,
}

/// The gRPC method every forwarded item travels by (`rpc.method`).
pub(crate) const FORWARD_METHOD: &str = "pushgate.cluster.v1.Cluster/Forward";

/// The gRPC method of a peer's REST unregister (`rpc.method`).
const UNREGISTER_METHOD: &str = "pushgate.cluster.v1.Cluster/Unregister";

/// The SERVER span of one call of `method` (a forwarded item, or a unary
/// call), under its caller's span.
fn server_span(
    traces: &crate::telemetry::Traces,
    method: &'static str,
    parent: &opentelemetry::Context,
) -> opentelemetry::Context {
    let cx = traces.span_in(method, opentelemetry::trace::SpanKind::Server, parent);
    crate::telemetry::note_in(&cx, "rpc.system.name", || "grpc");
    crate::telemetry::note_in(&cx, "rpc.method", || method);
    cx
}

type Results =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<ForwardResults, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterRpc for Service {
    type ForwardStream = Results;

    async fn forward(
        &self,
        request: Request<Streaming<ForwardBatch>>,
    ) -> Result<Response<Results>, Status> {
        let (tx, rx) = mpsc::channel::<Vec<ForwardResult>>(16);
        let (handler, shared) = (self.handler.clone(), self.shared.clone());
        tokio::spawn(forward::serve(request.into_inner(), tx, handler, shared));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            let items = rx.recv().await?;
            Some((Ok(ForwardResults { items }), rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn unregister(
        &self,
        request: Request<UnregisterRequest>,
    ) -> Result<Response<UnregisterReply>, Status> {
        let span = self.handler.metrics.traces().map(|t| {
            let traceparent = request
                .metadata()
                .get(super::peers::TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            server_span(t, UNREGISTER_METHOD, &crate::telemetry::remote(traceparent))
        });
        crate::telemetry::within(span, self.unregister_untraced(request.into_inner())).await
    }

    async fn nudge(&self, _request: Request<NudgeRequest>) -> Result<Response<NudgeReply>, Status> {
        self.shared.nudge.notify_one();
        Ok(Response::new(NudgeReply {}))
    }
}

impl Service {
    /// A peer's REST unregister, if this node owns the device's shard.
    async fn unregister_untraced(
        &self,
        r: UnregisterRequest,
    ) -> Result<Response<UnregisterReply>, Status> {
        self.shared.metrics.forwarded_in.inc(&["unregister"]);
        let outcome = if forward::owns(&self.shared, r.route.as_ref().map(|r| r.shard)).await {
            let device = crate::registry::DeviceRef {
                account: &r.account,
                provider: &r.provider,
                identity: &r.token,
                kind: crate::registry::IdentityKind::Token,
            };
            match self.handler.registry.unregister(&device).await {
                Ok(removed) => unregister_reply::Outcome::Removed(removed),
                Err(
                    crate::registry::RegistryError::NotOwner { .. }
                    | crate::registry::RegistryError::Fenced { .. },
                ) => unregister_reply::Outcome::NotOwner(NotOwner {}),
                Err(e) => unregister_reply::Outcome::StoreError(crate::errors::chain(&e)),
            }
        } else {
            unregister_reply::Outcome::NotOwner(NotOwner {})
        };
        Ok(Response::new(UnregisterReply {
            outcome: Some(outcome),
        }))
    }
}

/// Refuses calls without the shared secret.
fn check_secret(secret: &Secret, request: &Request<()>) -> Result<(), Status> {
    let given = request
        .metadata()
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if crate::registry::constant_time_eq(given, secret.expose().as_bytes()) {
        Ok(())
    } else {
        Err(Status::unauthenticated("missing or wrong cluster secret"))
    }
}

/// Starts serving on `listener` in `runtime` until `stop` turns true.
pub(super) fn serve(
    runtime: &tokio::runtime::Handle,
    listener: std::net::TcpListener,
    config: &ClusterConfig,
    handler: Arc<PushComponent>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, super::ClusterError> {
    let secret = config
        .read_secret()
        .map_err(|i| super::ClusterError::Setting {
            key: "cluster.secret",
            message: i.to_string(),
        })?;
    let tls = Tls::load(config)?;
    let bind_error = |source| super::ClusterError::Bind {
        address: config.listen.clone(),
        source,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
    };
    let service = ClusterServer::with_interceptor(Service { handler, shared }, move |req| {
        check_secret(&secret, &req).map(|()| req)
    });
    Ok(runtime.spawn(async move {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        health
            .set_service_status(
                <ClusterServer<Service> as tonic::server::NamedService>::NAME,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        let mut builder = Server::builder();
        if let Some(tls) = tls {
            match builder.tls_config(
                ServerTlsConfig::new()
                    .identity(tls.identity)
                    .client_ca_root(tls.ca),
            ) {
                Ok(b) => builder = b,
                Err(e) => {
                    warn!("cluster TLS could not be set up: {e}; not serving peers");
                    return;
                }
            }
        }
        // No Nagle on the results (the client side sets the same): with it,
        // a small reply could wait for the peer's delayed ACK; the forward
        // latency's maximum at 4,000/s went from ~47 to ~20 ms without it
        // (BENCHMARKS.md, "Forwarding on the owner: one task per stream").
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = builder
            .add_service(health_service)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stopped)
            .await
        {
            warn!("the cluster gRPC server stopped: {e}");
        }
    }))
}
