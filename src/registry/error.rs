//! What the registry answers besides values.

use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Why the store could not answer. Always transient from a publisher's point of
/// view: it is answered with a `wait` error, never `cancel`. The cause is kept
/// as the source; `crate::errors::chain` prints both.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The embedded store's directory or file could not be created or opened.
    #[error("cannot open the embedded store at {}", path.display())]
    Open {
        /// The directory or file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded database failed (a transaction, a table, a commit).
    #[error("embedded store")]
    Embedded(#[source] redb::Error),
    /// The embedded store's journal could not be written or emptied.
    #[error("embedded store: the journal")]
    Journal(#[source] std::io::Error),
    /// Redis answered with an error, or the connection failed under a command.
    #[error("redis")]
    Redis(#[source] redis::RedisError),
    /// No connection to Redis could be opened.
    #[error("redis: no connection")]
    Connect(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Redis did not answer (or could not be reached) in time.
    #[error("redis: no answer within {0:?}")]
    Timeout(Duration),
    /// A `[store]` setting Redis cannot use.
    #[error("{key}")]
    Setting {
        /// The key (`store.url`, `store.urls`).
        key: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A registration could not be encoded.
    #[error("encoding a registration")]
    Encode(#[source] serde_json::Error),
    /// The stored deployment key is not 32 bytes.
    #[error("the stored deployment key is malformed")]
    BadDeploymentKey,
    /// A registration kept changing under a compare-and-set.
    #[error("registration of node {node} kept changing; gave up after {attempts} attempts")]
    Contended {
        /// The node.
        node: String,
        /// Attempts made.
        attempts: usize,
    },
    /// A registration was written and not there after (a bug if ever seen).
    #[error("registration was not stored")]
    NotStored,
    /// A stored value could not be decoded.
    #[error("corrupt registration for node {node}: {message}")]
    Corrupt {
        /// The node whose value is unreadable.
        node: String,
        /// The decoder's message.
        message: String,
    },
    /// The store has not been reached yet since the start; the text of the
    /// last attempt's error.
    #[error("store not connected yet: {0}")]
    NotConnected(String),
    /// `store.shards` differs from what the data was written with.
    #[error(
        "store.shards is {configured} but the data in Redis was written with {recorded} shards; set store.shards = {recorded}"
    )]
    ShardMismatch {
        /// The configuration's value.
        configured: u32,
        /// The value recorded in Redis.
        recorded: u32,
    },
    /// In a cluster: this node does not own the node's shard (it is moving,
    /// or the node fenced itself).
    #[error("shard {shard} is not owned by this node")]
    NotOwner {
        /// The shard.
        shard: u32,
    },
    /// In a cluster: Redis refused the write because the shard's owner record
    /// is no longer the one this node holds (another node took the shard).
    #[error("shard {shard} was taken over by another node; the write was refused")]
    Fenced {
        /// The shard.
        shard: u32,
    },
    /// The account already holds the most registrations allowed.
    #[error("the account already holds {cap} registrations, the most allowed")]
    AccountFull {
        /// `registrations.max_per_account`.
        cap: u32,
    },
    /// The device's node holds a registration made by another kind of
    /// command (a token where a device id registered, or the reverse).
    #[error("the device is registered by another kind of command")]
    OtherIdentity,
    /// Cluster membership needs the Redis backend.
    #[error("the embedded store cannot be shared by a cluster")]
    NotShared,
    /// The blocking worker went away (shutdown).
    #[error("store worker stopped")]
    Stopped,
    /// A batched write failed as a whole; every edit in it reports the one
    /// cause.
    #[error("the batched registration write failed")]
    Batch(#[source] std::sync::Arc<RegistryError>),
}

/// What `Registry::drop_dead_token` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadToken {
    /// The registration is gone.
    Removed,
    /// The registration stays without its VoIP token.
    VoipTokenForgotten,
    /// Renewed since, or the token is no longer the registration's.
    Kept,
}
