//! The stanza handler: runs what the `app` functions decide against the registry
//! and the delivery pools.

use super::account_limits::AccountLimits;
use super::forward::{Arrived, Handled, NotOwned, Original, Placed, moving};
use crate::app::commands::{self, CommandPlan, CommandRequest};
use crate::app::replies::{self, IqHeader};
use crate::app::{
    AppContext, PublishOutcome, PublishRequest, Request, StanzaFault, classify, disco, fast,
};
use crate::cluster::Router;
use crate::delivery::{Arrival, Dispatcher, PayloadPolicy, SubmitError, build_push};
use crate::errors::chain;
use crate::registry::{DeviceRef, NewRegistration, Registration, Registry, RegistryError};
use crate::telemetry::{self, Metrics};
use crate::xmpp::{ReplyFuture, StanzaHandler};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use opentelemetry::trace::SpanKind;
use std::sync::Arc;
use tracing::{debug, warn};
use xmpp_parsers::minidom::Element;

/// Everything the handler needs, shared by all sessions.
pub(crate) struct PushComponent {
    /// Deployment facts for the app logic.
    pub app: AppContext,
    /// The registry.
    pub registry: Registry,
    /// The provider pools.
    pub dispatcher: Dispatcher,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// `[publish] require_account_domain`.
    pub require_account_domain: bool,
    /// What a push may carry (`[delivery] include_*`).
    pub payload: PayloadPolicy,
    /// In a cluster, where each node's work goes.
    pub cluster: Option<Router>,
    /// What one account may do (`[registrations]`).
    pub limits: AccountLimits,
}

/// The kind of a publish's or command's span: the server side of the
/// stanza when it came on a stream; inside the gRPC server span when a
/// peer forwarded it.
fn kind_of(arrived: &Arrived) -> SpanKind {
    match arrived {
        Arrived::Stream(_) => SpanKind::Server,
        Arrived::Peer => SpanKind::Internal,
    }
}

impl StanzaHandler for PushComponent {
    fn handle(self: Arc<Self>, stanza: Element) -> ReplyFuture {
        let request = classify(&stanza);
        // A command goes to its device's owner as received; a publish goes as read.
        let keep = self.cluster.is_some() && matches!(request, Request::Command { .. });
        let arrived = Arrived::Stream(keep.then_some(Original(stanza)));
        Box::pin(async move { self.respond(request, arrived).await.unwrap_or(None) })
    }

    fn handle_raw(self: Arc<Self>, stanza: &[u8]) -> Option<ReplyFuture> {
        // Only publishes take this path, and one goes to its owner as read:
        // nothing of the stanza is kept.
        let request = fast::publish(stanza)?;
        let arrived = Arrived::Stream(None);
        Some(Box::pin(async move {
            self.respond(request, arrived).await.unwrap_or(None)
        }))
    }
}

impl PushComponent {
    /// The serialized reply to `request`, if it deserves one; `NotOwned` for
    /// a peer's stanza whose shard is not (or no longer) this node's.
    pub(crate) async fn respond(
        &self,
        request: Request,
        arrived: Arrived,
    ) -> Result<Option<String>, NotOwned> {
        let reply = match request {
            Request::Ignore => return Ok(None),
            Request::Invalid { header, fault } => {
                debug!(id = %header.id, "refusing stanza: {}", fault.text);
                header.error(&fault)
            }
            Request::Ping { header } => header.result(None),
            Request::DiscoInfo { header, node } => match disco::info(&self.app, node.as_deref()) {
                Ok(q) => header.result(Some(q)),
                Err(f) => header.error(&f),
            },
            Request::DiscoItems { header, node } => {
                match disco::items(&self.app, node.as_deref()) {
                    Ok(q) => header.result(Some(q)),
                    Err(f) => header.error(&f),
                }
            }
            Request::Command {
                header,
                account,
                command,
            } => {
                let span = self
                    .metrics
                    .traces()
                    .map(|t| t.span("pushgate.command", kind_of(&arrived)));
                let handled =
                    telemetry::within(span, self.command(header, account, command, arrived)).await;
                match handled {
                    Handled::Here(reply) => reply,
                    Handled::There(reply) => return Ok(reply),
                    Handled::NotOwned => return Err(NotOwned),
                }
            }
            Request::Publish {
                header,
                publisher_domain,
                request,
            } => {
                let span = self
                    .metrics
                    .traces()
                    .map(|t| t.span("pushgate.publish", kind_of(&arrived)));
                return telemetry::within(
                    span,
                    self.publish_request(header, publisher_domain, request, arrived),
                )
                .await;
            }
        };
        Ok(Some(replies::serialize(&reply)))
    }

    /// A publish, here or at its shard's owner.
    async fn publish_request(
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
    pub(super) fn note_shard(&self, node: &str) {
        telemetry::note("pushgate.shard", || {
            i64::from(crate::registry::shard_of(node, self.registry.shards()))
        });
    }

    /// Counts a publish's outcome and writes its reply.
    pub(super) fn publish_reply(&self, header: &IqHeader, outcome: &PublishOutcome) -> String {
        self.metrics.publishes.inc(&[outcome.label()]);
        telemetry::note("pushgate.outcome", || outcome.label());
        match outcome.fault() {
            None => header.empty_result(),
            Some(f) => replies::serialize(&header.error(&f)),
        }
    }

    async fn command(
        &self,
        header: IqHeader,
        account: String,
        cmd: CommandRequest,
        arrived: Arrived,
    ) -> Handled {
        let session_id = cmd
            .session_id
            .clone()
            .unwrap_or_else(|| hex::encode(rand::random::<[u8; 8]>()));
        // The node is the client's to choose: only offered commands become
        // label values, so /metrics cannot be grown from outside.
        let label = self
            .app
            .command(&cmd.node)
            .map_or("unknown", |spec| spec.node.as_str());
        telemetry::note("pushgate.command", || label.to_owned());
        if matches!(arrived, Arrived::Stream(_))
            && let Some((outcome, fault)) = self.limits.refusal(&account)
        {
            self.count_command(label, outcome);
            return Handled::Here(header.error(&fault));
        }
        let refused = |fault: &StanzaFault| {
            self.count_command(label, "refused");
            Handled::Here(header.error(fault))
        };
        let (spec, plan) = match commands::plan(&cmd, &self.app, &session_id) {
            Ok(planned) => planned,
            Err(fault) => return refused(&fault),
        };
        if let CommandPlan::Register(device) | CommandPlan::Unregister(device) = &plan {
            match self
                .place_device(&account, &device.provider, device.identity(), arrived)
                .await
            {
                Placed::Here => {}
                Placed::There(peer, original) => {
                    return Handled::There(self.forward_command(&header, peer, original).await);
                }
                Placed::Moving => return refused(&moving()),
                Placed::NotOwner => return Handled::NotOwned,
            }
        }
        let result = match plan {
            CommandPlan::Reply(reply) => return Handled::Here(header.result(Some(reply))),
            CommandPlan::Register(device) => {
                let secret = device
                    .with_secret
                    .then(|| URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>()));
                self.stored(self.registry.register(NewRegistration {
                    account,
                    provider: device.provider,
                    token: device.token.unwrap_or_default(),
                    voip_token: device.voip_token,
                    secret: secret.clone(),
                    device_id: device.device_id,
                    keep_account: self.payload.include_account,
                    max_per_account: self.limits.config.max_per_account,
                }))
                .await
                .map(|r| {
                    commands::completed_register(
                        spec,
                        &self.app,
                        &session_id,
                        &r.node,
                        secret.as_deref(),
                    )
                })
            }
            CommandPlan::Unregister(device) => self
                .stored(self.registry.unregister(&DeviceRef {
                    account: &account,
                    provider: &device.provider,
                    identity: device.identity(),
                    kind: device.identity_kind(),
                }))
                .await
                .map(|removed| commands::completed_unregister(spec, &session_id, removed)),
        };
        Handled::Here(match result {
            Ok(reply) => {
                self.count_command(label, "ok");
                header.result(Some(reply))
            }
            Err(RegistryError::NotOwner { .. } | RegistryError::Fenced { .. }) => {
                self.count_command(label, "moving");
                header.error(&moving())
            }
            Err(RegistryError::AccountFull { cap }) => {
                self.count_command(label, "account-full");
                header.error(&StanzaFault::new(
                    "cancel",
                    "not-allowed",
                    format!(
                        "this account already has {cap} devices registered, the most this gateway allows; unregister one first"
                    ),
                ))
            }
            Err(RegistryError::OtherIdentity) => {
                self.count_command(label, "refused");
                header.error(&StanzaFault::new(
                "cancel",
                "conflict",
                "this device is registered through another kind of command; unregister it there first",
            ))
            }
            Err(e) => {
                warn!("{label} failed: {}", chain(&e));
                self.count_command(label, "store-error");
                header.error(&StanzaFault::new(
                    "wait",
                    "internal-server-error",
                    "the registration store is unavailable; try again later",
                ))
            }
        })
    }

    /// A store write in a span of its own, when tracing.
    fn stored<F: Future>(
        &self,
        write: F,
    ) -> futures_util::future::Either<opentelemetry::context::WithContext<F>, F> {
        let span = self
            .metrics
            .traces()
            .map(|t| t.span("pushgate.store.write", SpanKind::Internal));
        telemetry::within(span, write)
    }

    /// Counts a command's outcome, and says it on the command's span.
    fn count_command(&self, label: &str, outcome: &'static str) {
        self.metrics.registration_commands.inc(&[label, outcome]);
        telemetry::note("pushgate.outcome", || outcome);
    }

    pub(super) async fn publish(
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
