//! The membership and ownership loop of one node: renew the lease, compute
//! the assignment, check the shards held, hand over those assigned elsewhere,
//! take those assigned here; fence on a lease that could not be renewed.

mod shards;

use super::assign::assign;
use super::streams::StreamSlots;
use super::{Shared, View};
use crate::clock::{self, Instant};
use crate::config::{ClusterConfig, LeaseTimings};
use crate::delivery::Dispatcher;
use crate::errors::chain;
use crate::registry::{Membership, Registry, RegistryError};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// How soon to look again while a shard assigned here is still held by a
/// live peer that is handing it over.
const HANDOVER_POLL: Duration = Duration::from_millis(200);

pub(super) struct Coordinator {
    shared: Arc<Shared>,
    registry: Registry,
    dispatcher: Dispatcher,
    stop: watch::Receiver<bool>,
    address: String,
    incarnation: String,
    timings: LeaseTimings,
    max_moves: usize,
    /// When the last successful renewal was sent (not answered: the lease
    /// runs from Redis' time of the renewal, which is after this).
    renewed: Option<Instant>,
    /// The component stream slots this node holds.
    streams: StreamSlots,
}

fn new_incarnation() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

impl Coordinator {
    pub(super) fn new(
        config: &ClusterConfig,
        shared: Arc<Shared>,
        registry: Registry,
        dispatcher: Dispatcher,
        stop: watch::Receiver<bool>,
        streams: StreamSlots,
    ) -> Self {
        Self {
            streams,
            shared,
            registry,
            dispatcher,
            stop,
            address: config.advertise(),
            incarnation: new_incarnation(),
            timings: config.timings(),
            max_moves: config.max_moves,
            renewed: None,
        }
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.timings.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    /// Runs until told to stop, then leaves gracefully.
    pub(super) async fn run(mut self) {
        info!(node = %self.shared.node, address = %self.address, "joining the cluster");
        let mut last_error = String::new();
        loop {
            if *self.stop.borrow() {
                break;
            }
            let fence_at = self.renewed.map(|t| t + self.timings.fence_after);
            let result = tokio::select! {
                r = self.round() => Some(r),
                () = sleep_until(fence_at) => None,
            };
            let soon = match result {
                Some(Ok(soon)) => {
                    if !last_error.is_empty() {
                        info!("cluster rounds work again");
                        last_error.clear();
                    }
                    soon
                }
                Some(Err(e)) => {
                    // Said once per distinct cause, not every round.
                    let text = chain(&e);
                    if text != last_error {
                        warn!("cluster round failed (retried every renewal): {text}");
                        last_error = text;
                    }
                    false
                }
                None => false,
            };
            if self
                .renewed
                .is_some_and(|t| clock::now() >= t + self.timings.fence_after)
            {
                self.fence("the lease could not be renewed in time");
            }
            let pause = if soon {
                HANDOVER_POLL
            } else {
                self.timings.renew
            };
            let fence_at = self.renewed.map(|t| t + self.timings.fence_after);
            let mut stop = self.stop.clone();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.shared.nudge.notified() => {}
                () = sleep_until(fence_at) => {}
                _ = stop.changed() => {}
            }
        }
        self.leave().await;
    }

    /// One round; true when something waits on a peer's hand-over, so the
    /// next round should come soon.
    async fn round(&mut self) -> Result<bool, RegistryError> {
        let registry = self.registry.clone();
        let store = registry.shared()?;
        let what = if self.renewed.is_some() {
            Membership::Renew
        } else {
            Membership::Join
        };
        let sent = clock::now();
        let me = self.shared.node.clone();
        let answer = store
            .membership(&me, &self.incarnation, &self.address, self.ttl_ms(), what)
            .await?;
        let Some((_, mut members)) = answer else {
            self.fence(
                "the lease ran out before it was renewed (this process was paused or cut off, or another process uses the same node_id)",
            );
            return Ok(true);
        };
        if what == Membership::Join {
            info!(node = %me, incarnation = %self.incarnation, members = members.len(), "joined the cluster");
            // The others hand this node its share at once, not at their next renewal.
            let peers: Vec<String> = members
                .iter()
                .filter(|m| m.node != me)
                .map(|m| m.address.clone())
                .collect();
            self.shared.peers.nudge_all(&peers).await;
        }
        self.renewed = Some(sent);
        self.shared
            .fences
            .valid_until(sent + self.timings.fence_after);
        members.sort_by(|a, b| a.node.cmp(&b.node));
        let names: Vec<&str> = members.iter().map(|m| m.node.as_str()).collect();
        let owners = assign(&names, self.shared.shards);
        let mine: HashSet<u32> = owners
            .iter()
            .enumerate()
            .filter(|(_, i)| members.get(**i).is_some_and(|m| m.node == me))
            .filter_map(|(s, _)| u32::try_from(s).ok())
            .collect();
        self.shared
            .metrics
            .members
            .set(i64::try_from(members.len()).unwrap_or(0));
        self.shared.set_view(View {
            members: members.clone(),
            owners,
            joined: true,
        });
        self.check_held().await?;
        let more_to_hand_over = self.hand_over(&mine).await?;
        let waiting = self.take(&mine, &members).await?;
        let holder = format!("{me}|{}", self.incarnation);
        let streams_closing = self
            .streams
            .reconcile(store, &members, &me, &holder)
            .await?;
        let owned = self.shared.fences.held().len();
        self.shared
            .metrics
            .shards_owned
            .set(i64::try_from(owned).unwrap_or(0));
        Ok(waiting || more_to_hand_over || streams_closing)
    }

    /// Stops acting as a member at once: every shard dropped, nothing sent
    /// or written for them; joins again as a new incarnation.
    fn fence(&mut self, why: &str) {
        let held: Vec<u32> = self.shared.fences.release_all();
        error!(
            node = %self.shared.node,
            shards = held.len(),
            "fencing this node: {why}; it stops sending and writing, and joins again as a new incarnation"
        );
        self.lose(&held, "lost");
        self.shared.metrics.self_fenced.inc();
        self.streams.drop_all();
        self.renewed = None;
        self.incarnation = new_incarnation();
        self.shared.set_view(View::default());
    }

    /// Graceful leave: hand every shard over, leave the member list, tell
    /// the peers so they take over now rather than at their next round.
    async fn leave(&mut self) {
        let registry = self.registry.clone();
        let Ok(store) = registry.shared() else { return };
        // The streams first: their slots go to the others while the shards
        // are handed over.
        let streams_closed_by = clock::now() + self.timings.renew;
        self.streams.release_all(store, streams_closed_by).await;
        let me = self.shared.node.clone();
        // One more renewal, so the records stay usable while they are handed
        // over; the hand-over must end before they stop being.
        let sent = clock::now();
        if self.renewed.is_some()
            && let Ok(Some(_)) = store
                .membership(
                    &me,
                    &self.incarnation,
                    &self.address,
                    self.ttl_ms(),
                    Membership::Renew,
                )
                .await
        {
            self.renewed = Some(sent);
            self.shared
                .fences
                .valid_until(sent + self.timings.fence_after);
        }
        let deadline = self.renewed.map_or_else(clock::now, |t| {
            t + self.timings.fence_after - self.timings.renew / 2
        });
        let held = self.shared.fences.held();
        if !held.is_empty() {
            info!(
                shards = held.len(),
                "leaving the cluster: handing every shard over"
            );
            if let Err(e) = self.release(&held, deadline).await {
                warn!("hand-over on leave failed: {}", chain(&e));
            }
        }
        // Whatever could not be handed over is dropped here and taken by the
        // others once this node has left; their requests in flight may be sent twice.
        let left_over = self.shared.fences.release_all();
        if !left_over.is_empty() {
            warn!(
                shards = left_over.len(),
                "shards not handed over in time; the other nodes take them over from the outbox"
            );
            self.dispatcher.lose(&left_over);
        }
        match store
            .membership(
                &me,
                &self.incarnation,
                &self.address,
                self.ttl_ms(),
                Membership::Leave,
            )
            .await
        {
            Ok(Some((_, members))) => {
                let peers: Vec<String> = members.into_iter().map(|m| m.address).collect();
                self.shared.peers.nudge_all(&peers).await;
                info!("left the cluster");
            }
            Ok(None) => {}
            Err(e) => warn!(
                "could not leave the member list (peers notice when the lease ends): {}",
                chain(&e)
            ),
        }
        self.shared.set_view(View::default());
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
