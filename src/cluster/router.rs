//! Where work for a node goes: this node, the peer that owns its shard, or
//! nowhere for now; and the forwarded REST unregister.

use super::ClusterMetrics;
use super::peers::Peers;
use super::rpc::pb;
use crate::registry::{DeviceRef, Fences, Member, Registry, RegistryError, shard_of};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::Notify;

/// Why a device could not be unregistered on its owner.
#[derive(Debug, Error)]
pub enum Unregister {
    /// The shard is moving or its owner is unreachable: try again.
    #[error("the registration's gateway node is changing")]
    Moving,
    /// This node's store failed.
    #[error(transparent)]
    Store(RegistryError),
    /// The owner's store failed; its words.
    #[error("on the owner: {0}")]
    Remote(String),
}

/// What the members and the assignment look like from this node.
#[derive(Debug, Default)]
pub(crate) struct View {
    /// Live members, sorted by node id.
    pub(super) members: Vec<Member>,
    /// The member index owning each shard.
    pub(super) owners: Vec<usize>,
    /// False while this node is not a member (starting, or fenced).
    pub(super) joined: bool,
}

impl View {
    fn owner(&self, shard: u32) -> Option<&Member> {
        self.owners
            .get(shard as usize)
            .and_then(|&i| self.members.get(i))
    }
}

/// Where work for a node goes.
#[derive(Debug, Clone)]
pub(crate) enum Route {
    /// This node owns the shard.
    Local,
    /// The owner is the peer at this address.
    Peer {
        /// The shard.
        shard: u32,
        /// Its gRPC address.
        address: String,
    },
    /// Nobody can take it now (moving, or this node is not a member).
    Moving,
}

/// Shared by the router, the coordinator and the status page.
pub(crate) struct Shared {
    pub(super) node: String,
    pub(super) fences: Arc<Fences>,
    pub(super) view: RwLock<Arc<View>>,
    pub(super) shards: u32,
    pub(super) forward_timeout: Duration,
    pub(super) peers: Peers,
    pub(super) metrics: Arc<ClusterMetrics>,
    /// Woken to make the coordinator look again at once (a peer left).
    pub(super) nudge: Notify,
}

impl Shared {
    pub(crate) fn view(&self) -> Arc<View> {
        self.view
            .read()
            .map_or_else(|p| p.into_inner().clone(), |v| v.clone())
    }

    pub(super) fn set_view(&self, view: View) {
        let view = Arc::new(view);
        match self.view.write() {
            Ok(mut v) => *v = view,
            Err(p) => *p.into_inner() = view,
        }
    }
}

/// Decides, for each node id, whether this node or a peer handles it; and
/// carries the forwarded calls. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    pub(super) shared: Arc<Shared>,
}

impl Router {
    /// The shard of `node`.
    pub(crate) fn shard(&self, node: &str) -> u32 {
        shard_of(node, self.shared.shards)
    }

    /// Where work for `node` goes now. A shard assigned to this node but not
    /// yet taken (it is being handed over) is waited for, up to half the
    /// forward deadline, rather than refused.
    pub(crate) async fn route(&self, node: &str) -> Route {
        let shard = self.shard(node);
        if self.shared.fences.holds(shard) {
            return Route::Local;
        }
        let view = self.shared.view();
        match view.owner(shard) {
            Some(m) if m.node == self.shared.node => {
                if self
                    .shared
                    .fences
                    .wait_held(shard, self.shared.forward_timeout / 2)
                    .await
                {
                    Route::Local
                } else {
                    Route::Moving
                }
            }
            Some(m) if view.joined => Route::Peer {
                shard,
                address: m.address.clone(),
            },
            _ => Route::Moving,
        }
    }

    /// Removes `device`'s registration on the owner of its shard (the Tigase
    /// REST unregister): here, or on the peer that owns it.
    pub(crate) async fn unregister(
        &self,
        registry: &Registry,
        device: &DeviceRef<'_>,
    ) -> Result<bool, Unregister> {
        let node = registry.keys().map_err(Unregister::Store)?.node_id(
            device.account,
            device.provider,
            device.identity,
        );
        let (shard, address) = match self.route(&node).await {
            Route::Local => {
                return registry.unregister(device).await.map_err(|e| match e {
                    RegistryError::NotOwner { .. } | RegistryError::Fenced { .. } => {
                        Unregister::Moving
                    }
                    e => Unregister::Store(e),
                });
            }
            Route::Moving => return Err(Unregister::Moving),
            Route::Peer { shard, address } => (shard, address),
        };
        let request = pb::UnregisterRequest {
            route: Some(pb::Route {
                shard,
                from_node: self.shared.node.clone(),
            }),
            account: device.account.to_owned(),
            provider: device.provider.to_owned(),
            token: device.identity.to_owned(),
        };
        let m = &self.shared.metrics;
        let started = crate::clock::now();
        let result = self.shared.peers.unregister(&address, request).await;
        m.forward_latency.observe(
            &["unregister"],
            (crate::clock::now() - started).as_secs_f64(),
        );
        let (label, answer) = match result {
            Ok(pb::unregister_reply::Outcome::Removed(removed)) => ("ok", Ok(removed)),
            Ok(pb::unregister_reply::Outcome::NotOwner(_)) => {
                ("not-owner", Err(Unregister::Moving))
            }
            Ok(pb::unregister_reply::Outcome::StoreError(text)) => {
                ("ok", Err(Unregister::Remote(text)))
            }
            Err(e) => {
                tracing::debug!(
                    shard,
                    "unregister forward failed: {}",
                    crate::errors::chain(&e)
                );
                ("unreachable", Err(Unregister::Moving))
            }
        };
        m.forwards.inc(&["unregister", label]);
        answer
    }

    /// The forwarding client.
    pub(crate) fn peers(&self) -> &Peers {
        &self.shared.peers
    }

    /// The cluster's metrics.
    pub(crate) fn metrics(&self) -> &ClusterMetrics {
        &self.shared.metrics
    }

    /// This node's part, for `/readyz`.
    pub fn status(&self) -> serde_json::Value {
        let view = self.shared.view();
        let owned = self.shared.fences.held().len();
        let mut per_member = std::collections::BTreeMap::new();
        for &i in &view.owners {
            if let Some(m) = view.members.get(i) {
                *per_member.entry(m.node.clone()).or_insert(0usize) += 1;
            }
        }
        serde_json::json!({
            "node": self.shared.node,
            "member": view.joined,
            "members": view.members.iter().map(|m| &m.node).collect::<Vec<_>>(),
            "shards_owned": owned,
            "shards_assigned": per_member,
        })
    }

    /// Whether this node is a member now.
    pub fn is_member(&self) -> bool {
        self.shared.view().joined
    }
}
