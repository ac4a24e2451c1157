//! Thin HTTP/2 clients for APNs and FCM v1.
//!
//! Our own rather than the `a2` or `fcm` crates: `a2` cannot be pointed at any
//! endpoint but Apple's (no mock, proxy or extra CA), and `fcm` speaks the legacy
//! API Google shut down in 2024. Both clients here take a base URL and an extra CA
//! from configuration, so tests and proxies use the same code as production.

mod apns;
mod apns_cert;
mod apns_table;
mod apns_token;
mod connections;
mod error;
mod fcm;
mod fcm_body;
mod fcm_token;
mod http2;
pub use http2::Http2Error;
mod size;
pub(crate) mod tls;

pub(crate) use apns::ApnsClient;
pub use apns::{answer_of as apns_answer, payload as apns_payload};
pub use apns_token::ApnsTokenSigner;
pub use error::{BuildError, CredentialsError, DeliveryError, ErrorClass, TransportError};
pub(crate) use fcm::FcmClient;
pub use fcm::{answer_of as fcm_answer, data as fcm_data, message as fcm_message};

use crate::config::{DeliveryConfig, ProviderConfig, ProviderKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What kind of push to send; decides APNs push type and priority and FCM priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PushKind {
    /// A silent wake-up: APNs `background`/5 with `content-available`, FCM normal.
    Background,
    /// A visible alert: APNs `alert`/10 with `mutable-content`, FCM high.
    Alert,
    /// An incoming call: APNs `voip` to the PushKit token (topic `.voip`).
    Voip,
}

/// One push to one device, independent of the provider. Stored in the outbox, so
/// its serialized form must stay readable by later versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Push {
    /// The device token.
    pub token: String,
    /// Alert, background or VoIP.
    pub kind: PushKind,
    /// Collapses pushes for the same node at the provider.
    pub collapse_id: Option<String>,
    /// The server's message count: APNs badge and the `unread-messages` key.
    pub badge: Option<u32>,
    /// Alert title (the sender, when the operator includes it).
    #[serde(default)]
    pub alert_title: Option<String>,
    /// Alert text shown when the app cannot rewrite it.
    pub alert_body: Option<String>,
    /// Custom string keys for the app (`account`, `body`, `encrypted`, …).
    pub data: BTreeMap<String, String>,
}

/// A successful delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's id for the message (`apns-id`, FCM message name).
    pub id: Option<String>,
}

/// A future returned by [`PushClient::send`].
pub type SendFuture = Pin<Box<dyn Future<Output = Result<Delivered, DeliveryError>> + Send>>;

/// The future of a send that failed before any request: a push that
/// cannot be encoded, credentials that cannot be used.
pub(crate) fn failed_send(error: DeliveryError) -> SendFuture {
    Box::pin(std::future::ready(Err(error)))
}

/// A push provider client. One instance is shared by all requests to the provider,
/// so connections and tokens are reused.
pub trait PushClient: Send + Sync + 'static {
    /// Sends one push. The request is built from `push` before this
    /// returns; the future holds no reference to it.
    fn send(&self, push: &Push) -> SendFuture;

    /// When the credentials this client presents expire, in seconds since
    /// the epoch: an APNs client certificate. Tokens renew themselves.
    fn credentials_expire_at(&self) -> Option<u64> {
        None
    }

    /// The host requests go to (`server.address` of the request duration
    /// metric); empty when it is not a network client.
    fn server_address(&self) -> &str {
        ""
    }

    /// The request path with its variable parts named (`url.template` of
    /// the request's span): never the path itself, which holds the token.
    fn url_template(&self) -> &'static str {
        ""
    }
}

/// `(provider id, expiry)` of every APNs client certificate in `providers`
/// that can be read (`check-config` reports the others as issues).
pub fn certificate_expiries(providers: &[ProviderConfig]) -> Vec<(String, String)> {
    providers
        .iter()
        .filter_map(|p| {
            let cert = apns_cert::ClientCertificate::of(p)?.ok()?;
            Some((p.id.clone(), cert.not_after_text))
        })
        .collect()
}

/// Provider clients by provider id, in configuration order.
pub type Clients = Vec<(String, Arc<dyn PushClient>)>;

/// Builds the client for one `[[providers]]` entry. Reads and checks every key and
/// CA file, so configuration mistakes surface at start-up and in `check-config`.
pub fn build(
    config: &ProviderConfig,
    delivery: &DeliveryConfig,
) -> Result<Arc<dyn PushClient>, BuildError> {
    Ok(match config.kind {
        ProviderKind::Apns => Arc::new(ApnsClient::new(config, delivery)?),
        ProviderKind::Fcm => Arc::new(FcmClient::new(config, delivery)?),
    })
}
