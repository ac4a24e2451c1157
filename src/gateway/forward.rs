//! Cluster forwarding in the stanza handler: work for a node whose shard
//! another gateway node owns goes there over gRPC, and its reply comes back
//! to be sent on the stream the stanza arrived on. While the shard moves, or
//! when its owner cannot be reached within the deadline, the answer is
//! `wait/service-unavailable`: every XMPP server keeps the registration
//! after it (`docs/protocol.md` §5).
//!
//! A publish travels as read (`publish`); a command as the stanza received.

mod publish;

use super::PushComponent;
use crate::app::replies::{self, IqHeader};
use crate::app::{PublishOutcome, PublishRequest, Request, StanzaFault, classify, fast};
use crate::cluster::FORWARD_METHOD;
use crate::cluster::Route;
use crate::cluster::pb;
use crate::cluster::pb::forward_item::Work;
use crate::errors::chain;
use crate::telemetry::note_in;
use futures_util::FutureExt as _;
use futures_util::future::Either;
use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use std::future::ready;
use tracing::debug;
use xmpp_parsers::minidom::Element;

/// A command stanza as it arrived, kept (in a cluster only) to forward it whole.
pub(crate) struct Original(pub(crate) Element);

impl Original {
    /// The stanza as text; `None` if it cannot be written (it was parsed,
    /// so never, but minidom's writer would panic rather than say so).
    fn into_bytes(self) -> Option<Vec<u8>> {
        replies::write_checked(&self.0).map(String::into_bytes)
    }
}

/// Where a stanza came from.
pub(crate) enum Arrived {
    /// On one of this node's component streams (with the original of a
    /// command, in a cluster).
    Stream(Option<Original>),
    /// From a peer, for a shard it believes this node owns.
    Peer,
}

/// Where the work for a node is done.
pub(crate) enum Placed {
    /// Here.
    Here,
    /// At this peer (with the original of a command).
    There(Peer, Option<Original>),
    /// Nowhere now: answer `wait`.
    Moving,
    /// A peer sent it, and this node does not own the shard.
    NotOwner,
}

/// A peer and the shard it is asked about.
pub(crate) struct Peer {
    shard: u32,
    address: String,
}

/// What a command came to.
pub(crate) enum Handled {
    /// Handled here: the reply.
    Here(Element),
    /// Handled by the owner: its serialized reply, if any.
    There(Option<String>),
    /// A peer's command for a shard this node does not own.
    NotOwned,
}

/// A peer's stanza for a shard this node does not own.
#[derive(Debug)]
pub(crate) struct NotOwned;

/// What a forwarded stanza came to, for the peer that sent it.
pub(crate) enum Forwarded {
    /// The reply to send on its stream, if any.
    Reply(Option<String>),
    /// This node does not own the shard.
    NotOwner,
}

/// The refusal while a shard moves.
pub(crate) fn moving() -> StanzaFault {
    PublishOutcome::Moving
        .fault()
        .unwrap_or_else(|| StanzaFault::new("wait", "service-unavailable", "try again later"))
}

/// The CLIENT span of a forward to the peer at `address`.
fn client_span(traces: &crate::telemetry::Traces, address: &str) -> opentelemetry::Context {
    let cx = traces.span(FORWARD_METHOD, SpanKind::Client);
    note_in(&cx, "rpc.system.name", || "grpc");
    note_in(&cx, "rpc.method", || FORWARD_METHOD);
    note_in(&cx, "server.address", || address.to_owned());
    cx
}

impl PushComponent {
    /// Where the work for `node` is done.
    pub(super) async fn place(&self, node: &str, arrived: Arrived) -> Placed {
        let Some(router) = &self.cluster else {
            return Placed::Here;
        };
        match arrived {
            Arrived::Peer if self.registry.holds(node) => Placed::Here,
            Arrived::Peer => Placed::NotOwner,
            Arrived::Stream(original) => match (router.route(node).await, original) {
                (Route::Local, _) => Placed::Here,
                (Route::Peer { shard, address }, original) => {
                    Placed::There(Peer { shard, address }, original)
                }
                (Route::Moving, _) => Placed::Moving,
            },
        }
    }

    /// Where the work for a device's node is done (commands, REST unregister).
    pub(super) async fn place_device(
        &self,
        account: &str,
        provider: &str,
        identity: &str,
        arrived: Arrived,
    ) -> Placed {
        if self.cluster.is_none() {
            return Placed::Here;
        }
        match self.registry.keys() {
            Ok(keys) => {
                let node = keys.node_id(account, provider, identity);
                self.place(&node, arrived).await
            }
            // Not connected yet: handled here, where the store error is answered.
            Err(_) => Placed::Here,
        }
    }

    /// Has `peer` handle a publish; its reply, or `wait` when it cannot.
    pub(super) async fn forward_publish(
        &self,
        header: &IqHeader,
        peer: Peer,
        publisher_domain: &str,
        request: PublishRequest,
    ) -> Option<String> {
        let message = publish::to_message(header, publisher_domain, request);
        self.forward(header, peer, Work::Publish(message), "publish")
            .await
    }

    /// Has `peer` handle a command; its reply, or `wait` when it cannot.
    pub(super) async fn forward_command(
        &self,
        header: &IqHeader,
        peer: Peer,
        original: Option<Original>,
    ) -> Option<String> {
        match original.and_then(Original::into_bytes) {
            Some(bytes) => {
                self.forward(header, peer, Work::Stanza(bytes), "command")
                    .await
            }
            // Not kept: only outside a cluster, where nothing is forwarded.
            None => Some(replies::serialize(&header.error(&moving()))),
        }
    }

    /// Has `peer` handle `work`; its reply, or `wait` when it cannot.
    async fn forward(
        &self,
        header: &IqHeader,
        peer: Peer,
        work: Work,
        kind: &'static str,
    ) -> Option<String> {
        let Some(router) = &self.cluster else {
            return Some(replies::serialize(&header.error(&moving())));
        };
        // No `from_node`: see the proto.
        let route = pb::Route {
            shard: peer.shard,
            from_node: String::new(),
        };
        let started = crate::clock::now();
        let span = self.metrics.traces().map(|t| client_span(t, &peer.address));
        let result = crate::telemetry::within(
            span.clone(),
            router.peers().forward(&peer.address, route, work),
        )
        .await;
        if let Some(cx) = &span {
            let code = match &result {
                Ok(_) => "OK",
                Err(e) => e.status_code(),
            };
            cx.span()
                .set_attribute(KeyValue::new("rpc.response.status_code", code));
            cx.span().end();
        }
        let m = router.metrics();
        m.forward_latency
            .observe(&[kind], (crate::clock::now() - started).as_secs_f64());
        let outcome = match result {
            Ok(pb::forward_reply::Outcome::Reply(reply)) => {
                m.forwards.inc(&[kind, "ok"]);
                return Some(reply);
            }
            Ok(pb::forward_reply::Outcome::NoReply(_)) => {
                m.forwards.inc(&[kind, "ok"]);
                return None;
            }
            Ok(pb::forward_reply::Outcome::NotOwner(_)) => "not-owner",
            Err(e) => {
                debug!(shard = peer.shard, "forward failed: {}", chain(&e));
                "unreachable"
            }
        };
        m.forwards.inc(&[kind, outcome]);
        if kind == "publish" {
            self.metrics
                .publishes
                .inc(&[PublishOutcome::Moving.label()]);
        }
        Some(replies::serialize(&header.error(&moving())))
    }

    /// Work a peer forwarded, handled only if this node owns its shard.
    ///
    /// Not an `async fn`: the stanza is read now, and the future is the
    /// publish's own or (boxed) a command's; an `async fn` would hold the
    /// work and the request beside it. This future is allocated and copied
    /// for every forwarded item (BENCHMARKS.md, "Forwarding on the owner:
    /// one task per stream").
    pub(crate) fn answer_forwarded(
        &self,
        work: Work,
    ) -> impl Future<Output = Forwarded> + Send + '_ {
        let request = match work {
            Work::Publish(message) => publish::from_message(message),
            Work::Stanza(stanza) => match fast::publish_or_command(&stanza) {
                Some(request) => request,
                None => match std::str::from_utf8(&stanza)
                    .ok()
                    .and_then(|s| s.parse::<Element>().ok())
                {
                    Some(element) => classify(&element),
                    None => return Either::Right(Either::Left(ready(Forwarded::Reply(None)))),
                },
            },
        };
        match request {
            Request::Publish {
                header,
                publisher_domain,
                request,
            } => Either::Left(self.answer_peer_publish(header, publisher_domain, request)),
            // Commands are rare next to publishes: their larger future is
            // boxed so that it does not size every forwarded item's.
            other => Either::Right(Either::Right(
                Box::pin(self.respond(other, Arrived::Peer)).map(|answer| match answer {
                    Ok(reply) => Forwarded::Reply(reply),
                    Err(NotOwned) => Forwarded::NotOwner,
                }),
            )),
        }
    }

    /// A peer's publish: what `respond` does with it, without the branch a
    /// peer's publish never takes (forwarding it on), whose future would
    /// make every forwarded item's larger still.
    fn answer_peer_publish(
        &self,
        header: IqHeader,
        publisher_domain: String,
        request: PublishRequest,
    ) -> impl Future<Output = Forwarded> + Send + '_ {
        let span = self
            .metrics
            .traces()
            .map(|t| t.span("pushgate.publish", SpanKind::Internal));
        let owned = self.registry.holds(&request.node);
        crate::telemetry::within(span, async move {
            if !owned {
                return Forwarded::NotOwner;
            }
            self.note_shard(&request.node);
            let outcome = self.publish(&publisher_domain, request).await;
            Forwarded::Reply(Some(self.publish_reply(&header, &outcome)))
        })
    }
}
