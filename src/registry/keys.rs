//! Deriving node ids and account hashes under the deployment key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of HMAC output kept for a node id: 160 bits, above the 128 required.
const NODE_ID_BYTES: usize = 20;

/// The deployment key and the derivations made with it.
#[derive(Clone)]
pub struct NodeKeys {
    key: [u8; 32],
}

impl std::fmt::Debug for NodeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeKeys(***)")
    }
}

impl NodeKeys {
    /// Keys from the 32-byte deployment key.
    pub fn new(key: [u8; 32]) -> Self {
        Self { key }
    }

    fn mac(&self, parts: &[&str]) -> [u8; 32] {
        // A 32-byte key is always a valid HMAC key; fall back to an empty MAC never happens.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        for part in parts {
            mac.update(part.as_bytes());
            mac.update(&[0]);
        }
        mac.finalize().into_bytes().into()
    }

    /// The node id of (account, provider, token): unguessable without the key,
    /// stable across registrations. `account` is a normalized bare JID.
    pub(crate) fn node_id(&self, account: &str, provider: &str, token: &str) -> String {
        let digest = self.mac(&["node", account, provider, token]);
        URL_SAFE_NO_PAD.encode(digest.get(..NODE_ID_BYTES).unwrap_or(&digest))
    }

    /// The stored form of an account: hex HMAC, never the JID itself.
    pub fn account_hash(&self, account: &str) -> String {
        hex::encode(self.mac(&["account", account]))
    }

    /// Reads a deployment key written by [`Self::deployment_key_hex`].
    pub(crate) fn key_from_hex(hex_key: &str) -> Option<[u8; 32]> {
        let bytes = hex::decode(hex_key).ok()?;
        <[u8; 32]>::try_from(bytes.as_slice()).ok()
    }

    /// The deployment key in hex, for an export (as secret as the key itself).
    pub(crate) fn deployment_key_hex(&self) -> String {
        hex::encode(self.key)
    }

    /// The stored form of a publish secret.
    pub fn secret_hash(&self, secret: &str) -> String {
        hex::encode(self.mac(&["secret", secret]))
    }
}

/// Compares two byte strings in time independent of where they differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_stable_distinct_and_long_enough() {
        let k = NodeKeys::new([7; 32]);
        let a = k.node_id("alice@example.com", "apns", "aa");
        assert_eq!(a, k.node_id("alice@example.com", "apns", "aa"));
        assert_ne!(a, k.node_id("alice@example.com", "apns", "ab"));
        assert_ne!(a, k.node_id("alice@example.com", "fcm", "aa"));
        assert_ne!(
            a,
            NodeKeys::new([8; 32]).node_id("alice@example.com", "apns", "aa")
        );
        // Separators prevent ("ab","c") colliding with ("a","bc").
        assert_ne!(k.node_id("a", "bc", "d"), k.node_id("ab", "c", "d"));
        assert!(a.len() * 6 >= 128);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
