//! Calling peers: one gRPC channel (one HTTP/2 connection, requests
//! multiplexed over it) per peer address, made lazily and kept, and on it
//! one forwarding stream (`link`). Not a balanced channel: work must reach
//! one particular node, the owner.
//!
//! Channels live on the cluster's runtime (they spawn their connection
//! tasks where they are made), and calls run there too, so a caller on any
//! thread can forward.

use super::link::{Link, LinkError};
use super::rpc::pb::cluster_client::ClusterClient;
use super::rpc::pb::{self, ForwardItem, NudgeRequest, UnregisterRequest};
use super::rpc::{SECRET_HEADER, Tls};
use crate::config::Secret;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Peers remembered at most; more are forgotten and dialled again when needed.
const MAX_CHANNELS: usize = 256;
/// Least time between two forwarding streams opened to one peer.
const REDIAL: Duration = Duration::from_secs(1);

/// Why a forwarded call did not get an answer.
#[derive(Debug, Error)]
pub(crate) enum ForwardError {
    /// The peer's address cannot be dialled.
    #[error("peer address {0:?} is not usable")]
    Address(String),
    /// The call failed (unreachable, refused, deadline exceeded).
    #[error("peer call failed")]
    Call(#[source] tonic::Status),
    /// No answer within the deadline.
    #[error("no answer from the peer within {0:?}")]
    Timeout(Duration),
    /// The cluster's runtime is gone (shutdown).
    #[error("the cluster runtime stopped")]
    Stopped,
    /// Too many forwards are waiting on this peer already.
    #[error("the queue to the peer is full")]
    Full,
    /// The stream to the peer ended before the answer came.
    #[error("the stream to the peer ended")]
    Closed,
}

impl ForwardError {
    /// The gRPC status code it stands for (`rpc.response.status_code`).
    pub(crate) fn status_code(&self) -> &'static str {
        match self {
            Self::Address(_) | Self::Stopped | Self::Closed => "UNAVAILABLE",
            Self::Call(status) => grpc_code_name(status.code()),
            Self::Timeout(_) => "DEADLINE_EXCEEDED",
            Self::Full => "RESOURCE_EXHAUSTED",
        }
    }
}

/// A gRPC status code by its name in the specification.
fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The metadata key of a unary call's W3C trace context.
pub(super) const TRACEPARENT: &str = "traceparent";

/// The channels to peers.
pub(crate) struct Peers {
    runtime: tokio::runtime::Handle,
    secret: MetadataValue<tonic::metadata::Ascii>,
    tls: Option<Tls>,
    timeout: Duration,
    channels: Mutex<HashMap<String, Channel>>,
    links: Mutex<HashMap<String, Arc<Link>>>,
}

impl Peers {
    pub(super) fn new(
        runtime: tokio::runtime::Handle,
        secret: Secret,
        tls: Option<Tls>,
        timeout: Duration,
    ) -> Self {
        let secret = MetadataValue::try_from(secret.expose())
            .unwrap_or_else(|_| MetadataValue::from_static(""));
        Self {
            runtime,
            secret,
            tls,
            timeout,
            channels: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
        }
    }

    fn channel(&self, address: &str) -> Result<Channel, ForwardError> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let bad = || ForwardError::Address(address.to_owned());
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))
            .map_err(|_| bad())?
            .connect_timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        if let Some(tls) = &self.tls {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(tls.ca.clone())
                        .identity(tls.identity.clone()),
                )
                .map_err(|_| bad())?;
        }
        let channel = {
            let _entered = self.runtime.enter();
            endpoint.connect_lazy()
        };
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(address.to_owned(), channel.clone());
        Ok(channel)
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        // Sent as grpc-timeout: the owner stops working on it when we stop waiting.
        request.set_timeout(self.timeout);
        request
            .metadata_mut()
            .insert(SECRET_HEADER, self.secret.clone());
        // The caller's span, for a unary call (forwarded items carry theirs).
        let traceparent = crate::telemetry::traceparent();
        if let Ok(value) = traceparent.parse() {
            request.metadata_mut().insert(TRACEPARENT, value);
        }
        request
    }

    /// Runs `call` on the cluster runtime within the deadline.
    async fn run<T, F>(
        &self,
        address: &str,
        call: impl FnOnce(ClusterClient<Channel>) -> F,
    ) -> Result<T, ForwardError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>> + Send + 'static,
        T: Send + 'static,
    {
        let client = ClusterClient::new(self.channel(address)?);
        let task = self.runtime.spawn(call(client));
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(response))) => Ok(response.into_inner()),
            Ok(Ok(Err(status))) => Err(ForwardError::Call(status)),
            Ok(Err(_)) => Err(ForwardError::Stopped),
            Err(_) => Err(ForwardError::Timeout(self.timeout)),
        }
    }

    /// The forwarding stream to `address`, opened if there is none (or it ended).
    fn link(&self, address: &str) -> Result<Arc<Link>, ForwardError> {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match links.get(address) {
            Some(link) if link.is_open() => return Ok(link.clone()),
            Some(link) if crate::clock::now() - link.opened_at() < REDIAL => {
                return Err(ForwardError::Closed);
            }
            _ => {}
        }
        let channel = self.channel(address)?;
        let link = Arc::new(Link::open(
            &self.runtime,
            address,
            channel,
            self.secret.clone(),
            SECRET_HEADER,
        ));
        if links.len() >= MAX_CHANNELS {
            links.clear();
        }
        links.insert(address.to_owned(), link.clone());
        Ok(link)
    }

    /// Has the owner at `address` handle `work` (of `route.shard`), over
    /// the stream to it, within the forward deadline.
    pub(crate) async fn forward(
        &self,
        address: &str,
        route: pb::Route,
        work: pb::forward_item::Work,
    ) -> Result<pb::forward_reply::Outcome, ForwardError> {
        let link = self.link(address)?;
        let item = ForwardItem {
            id: 0,
            route: Some(route),
            work: Some(work),
            traceparent: crate::telemetry::traceparent(),
        };
        let (id, reply) = link.send(item).map_err(|e| match e {
            LinkError::Full => ForwardError::Full,
            LinkError::Closed => ForwardError::Closed,
        })?;
        match tokio::time::timeout(self.timeout, reply).await {
            Ok(Ok(reply)) => reply
                .outcome
                .ok_or_else(|| ForwardError::Call(tonic::Status::internal("empty reply"))),
            Ok(Err(_)) => Err(ForwardError::Closed),
            Err(_) => {
                link.forget(id);
                Err(ForwardError::Timeout(self.timeout))
            }
        }
    }

    /// Has the owner at `address` remove a device's registration.
    pub(crate) async fn unregister(
        &self,
        address: &str,
        request: UnregisterRequest,
    ) -> Result<pb::unregister_reply::Outcome, ForwardError> {
        let request = self.request(request);
        let reply = self
            .run(address, |mut c| async move { c.unregister(request).await })
            .await?;
        reply
            .outcome
            .ok_or_else(|| ForwardError::Call(tonic::Status::internal("empty reply")))
    }

    /// Tells every peer at `addresses` to look at the membership now.
    pub(crate) async fn nudge_all(&self, addresses: &[String]) {
        let calls = addresses.iter().map(|a| {
            let request = self.request(NudgeRequest {});
            self.run(a, |mut c| async move { c.nudge(request).await })
        });
        let _ = futures_util::future::join_all(calls).await;
    }
}
