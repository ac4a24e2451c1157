//! The stanza handler: runs what the `app` functions decide against the registry
//! and the delivery pools.

mod publish;

use super::account_limits::AccountLimits;
use super::forward::{Arrived, Handled, NotOwned, Original, Placed, moving};
use crate::app::commands::{self, CommandPlan, CommandRequest};
use crate::app::replies::{self, IqHeader};
use crate::app::{AppContext, Request, StanzaFault, classify, disco, fast};
use crate::cluster::Router;
use crate::delivery::{Dispatcher, PayloadPolicy};
use crate::errors::chain;
use crate::registry::{DeviceRef, NewRegistration, Registry, RegistryError};
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
        // A publish goes to its owner as read: nothing of the stanza is
        // kept. A command goes to its device's owner as received, so in a
        // cluster commands take the validating path, which keeps the parsed
        // stanza (written out, it declares the namespace that the raw bytes
        // only inherit from the stream).
        let request = if self.cluster.is_some() {
            fast::publish(stanza)?
        } else {
            fast::publish_or_command(stanza)?
        };
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
}
