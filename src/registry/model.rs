//! What a registration is.

use super::keys::{NodeKeys, constant_time_eq};
use serde::{Deserialize, Serialize};

/// One device registered for push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The push node the XMPP server publishes to.
    pub node: String,
    /// HMAC of the account's bare JID.
    pub account_hash: String,
    /// The account's bare JID in clear, kept only with `[delivery] include_account`
    /// (Tigase apps read it from the push to tell accounts apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The account's domain, in clear: publishes must come from it.
    pub account_domain: String,
    /// The provider id (a `[[providers]] id`).
    pub provider: String,
    /// The device token at that provider.
    pub token: String,
    /// A second token for VoIP pushes (PushKit), if registered.
    #[serde(default)]
    pub voip_token: Option<String>,
    /// HMAC of the publish secret, if the registration has one.
    #[serde(default)]
    pub secret_hash: Option<String>,
    /// First registration, ms since the Unix epoch.
    pub created_ms: u64,
    /// Last (re-)registration, ms since the Unix epoch.
    pub updated_ms: u64,
    /// What the node was derived from; absent in records written before
    /// kinds were kept (see [`Self::identity_kind`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentityKind>,
    /// Registered and never published to since: such a registration expires
    /// (`registrations.unpublished_expiry_hours`). Absent once published to,
    /// and in records written before this was kept, which never expire.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpublished: bool,
}

/// How a registration names its device, which is what its node is derived
/// from. Each kind is a namespace of its own: a request of one kind never
/// reads, overwrites or removes a registration of another, even where the
/// derived node is the same (a Tigase or REST token `p2:<id>` derives the
/// node of p2 device `<id>`, and FCM tokens may contain `:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityKind {
    /// By its provider token: Tigase commands and the REST unregister.
    Token,
    /// By the client's own device id: p2 and mod_push_appserver commands.
    DeviceId,
}

impl Registration {
    /// The registration's identity kind. Records written before kinds were
    /// kept are read as what they are: only the device-id dialects hand out
    /// publish secrets, so a record with a secret is a device id's and one
    /// without a token's. This is the migration of old data, in every store:
    /// exact on read, and written out with the record's next change.
    pub fn identity_kind(&self) -> IdentityKind {
        self.identity.unwrap_or(if self.secret_hash.is_some() {
            IdentityKind::DeviceId
        } else {
            IdentityKind::Token
        })
    }

    /// Whether a publish carrying `secret` may use this registration. A
    /// registration without a secret accepts any; one with a secret requires it.
    pub fn accepts_secret(&self, keys: &NodeKeys, secret: Option<&str>) -> bool {
        match (&self.secret_hash, secret) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(stored), Some(given)) => {
                constant_time_eq(stored.as_bytes(), keys.secret_hash(given).as_bytes())
            }
        }
    }
}

/// A device as the unregister requests name it.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRef<'a> {
    /// Normalized bare JID of the account.
    pub account: &'a str,
    /// Provider id.
    pub provider: &'a str,
    /// What the node was derived from: the device token, or the client's device
    /// id for the dialects that have one.
    pub identity: &'a str,
    /// Which of the two `identity` is: only a registration of that kind is
    /// removed.
    pub kind: IdentityKind,
}

/// A registration request, before ids are derived.
#[derive(Debug, Clone)]
pub struct NewRegistration {
    /// Normalized bare JID of the account.
    pub account: String,
    /// Provider id.
    pub provider: String,
    /// Device token.
    pub token: String,
    /// Optional VoIP token.
    pub voip_token: Option<String>,
    /// Optional publish secret.
    pub secret: Option<String>,
    /// The client's device id, for dialects that have one: the node is derived
    /// from it instead of the token, so a new token keeps the node.
    pub device_id: Option<String>,
    /// Keep the account's JID in clear (`[delivery] include_account`).
    pub keep_account: bool,
    /// Registrations the account may hold; a new one beyond is refused
    /// ([`super::RegistryError::AccountFull`]). 0 = no cap.
    pub max_per_account: u32,
}

/// One change to the outbox: a value to store under `key`, or its removal.
/// The store does not read values; the delivery module owns their format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxWrite {
    /// The entry's key (it starts with the node, so a sharded store can place it).
    pub key: String,
    /// The encoded entry, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

impl NewRegistration {
    pub(super) fn into_registration(self, keys: &NodeKeys, now: u64) -> Registration {
        let account_domain = self
            .account
            .rsplit_once('@')
            .map_or(self.account.as_str(), |(_, d)| d)
            .to_owned();
        Registration {
            node: keys.node_id(
                &self.account,
                &self.provider,
                self.device_id.as_deref().unwrap_or(&self.token),
            ),
            account_hash: keys.account_hash(&self.account),
            account: self.keep_account.then(|| self.account.clone()),
            account_domain,
            provider: self.provider,
            token: self.token,
            voip_token: self.voip_token,
            secret_hash: self.secret.as_deref().map(|s| keys.secret_hash(s)),
            created_ms: now,
            updated_ms: now,
            identity: Some(if self.device_id.is_some() {
                IdentityKind::DeviceId
            } else {
                IdentityKind::Token
            }),
            unpublished: true,
        }
    }
}

/// What a read-decide-write on one registration does; backends apply it
/// atomically and return what they applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Leave it as it is (or absent).
    Keep,
    /// Delete it.
    Remove,
    /// Store this value.
    Put(Box<Registration>),
}

/// The stored form of a registration, the same in every backend (and in exports).
pub(super) fn encode(r: &Registration) -> Result<Vec<u8>, super::RegistryError> {
    serde_json::to_vec(r).map_err(super::RegistryError::Encode)
}

/// Reads a stored registration of `node`.
pub(super) fn decode(node: &str, bytes: &[u8]) -> Result<Registration, super::RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| super::RegistryError::Corrupt {
        node: node.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
impl Registration {
    /// A registration for tests: `node`, of the account hashed `account_hash`.
    pub(crate) fn sample(node: &str, account_hash: &str) -> Self {
        Self {
            node: node.into(),
            account_hash: account_hash.into(),
            account: None,
            account_domain: "example.org".into(),
            provider: "apns".into(),
            token: format!("token-{node}"),
            voip_token: None,
            secret_hash: None,
            created_ms: 1,
            updated_ms: 1,
            identity: None,
            unpublished: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_required_only_when_registered_with_one() {
        let keys = NodeKeys::new([1; 32]);
        let new = |secret: Option<&str>| NewRegistration {
            account: "alice@example.com".into(),
            provider: "fcm".into(),
            token: "t".into(),
            voip_token: None,
            secret: secret.map(str::to_owned),
            device_id: None,
            keep_account: false,
            max_per_account: 0,
        };
        let open = new(None).into_registration(&keys, 1);
        assert!(open.accepts_secret(&keys, None));
        assert!(open.accepts_secret(&keys, Some("anything")));
        let closed = new(Some("s3")).into_registration(&keys, 1);
        assert_eq!(closed.account_domain, "example.com");
        assert_ne!(closed.secret_hash.as_deref(), Some("s3"));
        assert!(closed.accepts_secret(&keys, Some("s3")));
        assert!(!closed.accepts_secret(&keys, Some("s4")));
        assert!(!closed.accepts_secret(&keys, None));
    }

    /// Records from before identity kinds were kept read as what they are.
    #[test]
    fn old_records_read_with_their_identity_kind() {
        let old = r#"{"node":"n","account_hash":"h","account_domain":"d","provider":"fcm","token":"t","created_ms":1,"updated_ms":1}"#;
        let token = decode("n", old.as_bytes()).expect("old token record");
        assert_eq!(
            (token.identity, token.identity_kind()),
            (None, IdentityKind::Token)
        );
        let with_secret = old.replace("\"t\",", "\"t\",\"secret_hash\":\"ab\",");
        let device = decode("n", with_secret.as_bytes()).expect("old device-id record");
        assert_eq!(device.identity_kind(), IdentityKind::DeviceId);
        // Written out with the kind, and read back the same.
        let mut rewritten = device.clone();
        rewritten.identity = Some(rewritten.identity_kind());
        let bytes = encode(&rewritten).expect("encode");
        assert!(String::from_utf8_lossy(&bytes).contains(r#""identity":"device-id""#));
        assert_eq!(decode("n", &bytes).expect("decode"), rewritten);
    }
}
