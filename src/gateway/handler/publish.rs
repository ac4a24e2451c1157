//! Publishes: placed here or at their shard's owner, checked against their
//! registration, admitted into their provider's pool, and answered once
//! durable.

use super::PushComponent;
use crate::app::replies::{self, IqHeader};
use crate::app::{PublishOutcome, PublishRequest};
use crate::delivery::{Arrival, SubmitError, build_push};
use crate::errors::chain;
use crate::gateway::forward::{Arrived, NotOwned, Placed};
use crate::registry::{Registration, RegistryError};
use crate::telemetry;
use std::sync::Arc;
use tracing::{debug, warn};

impl PushComponent {
    /// A publish, here or at its shard's owner.
    pub(super) async fn publish_request(
        &self,
        header: IqHeader,
        publisher_domain: String,
        request: PublishRequest,
        arrived: Arrived,
    ) -> Result<Option<String>, NotOwned> {
        self.note_shard(&request.node);
        let outcome = match self.place(&request.node, arrived).await {
            Placed::Here => self.publish(&publisher_domain, request).await,
            Placed::There(peer, _) => {
                telemetry::note("pushgate.outcome", || "forwarded");
                return Ok(self
                    .forward_publish(&header, peer, &publisher_domain, request)
                    .await);
            }
            Placed::Moving => PublishOutcome::Moving,
            Placed::NotOwner => return Err(NotOwned),
        };
        Ok(Some(self.publish_reply(&header, &outcome)))
    }

    /// Says a publish's shard on its span.
    pub(in crate::gateway) fn note_shard(&self, node: &str) {
        telemetry::note("pushgate.shard", || {
            i64::from(crate::registry::shard_of(node, self.registry.shards()))
        });
    }

    /// Counts a publish's outcome and writes its reply.
    pub(in crate::gateway) fn publish_reply(
        &self,
        header: &IqHeader,
        outcome: &PublishOutcome,
    ) -> String {
        self.metrics.publishes.inc(&[outcome.label()]);
        telemetry::note("pushgate.outcome", || outcome.label());
        match outcome.fault() {
            None => header.empty_result(),
            Some(f) => replies::serialize(&header.error(&f)),
        }
    }

    pub(in crate::gateway) async fn publish(
        &self,
        publisher_domain: &str,
        request: PublishRequest,
    ) -> PublishOutcome {
        let registration = match self.registry.get(&request.node).await {
            Ok(Some(r)) => r,
            Ok(None) => return PublishOutcome::UnknownNode,
            Err(RegistryError::NotOwner { .. } | RegistryError::Fenced { .. }) => {
                return PublishOutcome::Moving;
            }
            Err(e) => {
                // No node at warn: for a registration without a secret it is the
                // credential that lets a server publish.
                warn!("publish refused: {}", chain(&e));
                return PublishOutcome::StoreUnavailable;
            }
        };
        if self.require_account_domain && registration.account_domain != publisher_domain {
            warn!(
                publisher = publisher_domain,
                "publish from a domain that does not own the node"
            );
            return PublishOutcome::WrongDomain;
        }
        match self.registry.keys() {
            Ok(keys) if registration.accepts_secret(keys, request.secret.as_deref()) => {}
            Ok(_) => return PublishOutcome::BadSecret,
            Err(_) => return PublishOutcome::StoreUnavailable,
        }
        if request.notification.account_removed {
            return self.account_removed(&registration).await;
        }
        let first_publish = registration.unpublished.then(|| registration.node.clone());
        telemetry::note("pushgate.provider", || registration.provider.clone());
        let push = build_push(request.notification, &registration, &self.payload);
        // Read from the embedded store, the registration is this publish's
        // alone and gives its strings up; from the cache, it is shared.
        let (node, provider) = match Arc::try_unwrap(registration) {
            Ok(r) => (r.node, r.provider),
            Err(shared) => (shared.node.clone(), shared.provider.clone()),
        };
        let arrival = Arrival {
            push,
            node,
            provider,
            trace: telemetry::sampled(),
        };
        // The outbox write: the reply waits for it.
        match self.stored(self.dispatcher.submit(arrival)).await {
            Ok(()) => {
                if let Some(node) = first_publish {
                    // Once in a registration's life, and off the reply's path:
                    // if it fails, the next publish marks it.
                    let registry = self.registry.clone();
                    tokio::spawn(async move {
                        if let Err(e) = registry.mark_published(&node).await {
                            debug!("registration not marked published: {}", chain(&e));
                        }
                    });
                }
                PublishOutcome::Accepted
            }
            Err(SubmitError::QueueFull | SubmitError::Stopped) => PublishOutcome::Overloaded,
            Err(SubmitError::NotDurable | SubmitError::Starting) => {
                PublishOutcome::StoreUnavailable
            }
            Err(SubmitError::UnknownProvider(p)) => PublishOutcome::ProviderNotConfigured(p),
            Err(SubmitError::NotOwner) => PublishOutcome::Moving,
        }
    }

    /// Tigase's account-removed event (`docs/protocol.md` §4): the registration
    /// goes first, so no later publish can queue a push, then its pending
    /// pushes; nothing reaches the provider. Tigase does not look at the
    /// answer (it is deleting the account), but a store failure still says so.
    async fn account_removed(&self, registration: &Registration) -> PublishOutcome {
        if let Err(e) = self.registry.remove(&registration.node).await {
            warn!("account-removed event not applied: {}", chain(&e));
            return PublishOutcome::StoreUnavailable;
        }
        match self
            .dispatcher
            .forget(&registration.provider, &registration.node)
            .await
        {
            // Entries of a provider no longer configured stay stored until it is.
            Ok(()) | Err(SubmitError::UnknownProvider(_)) => PublishOutcome::AccountRemoved,
            Err(e) => {
                warn!(
                    "account removed, but its pending pushes were not dropped: {}",
                    chain(&e)
                );
                PublishOutcome::StoreUnavailable
            }
        }
    }
}
