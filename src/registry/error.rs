//! What the registry answers besides values.

use thiserror::Error;

/// Why the store could not answer. Always transient from a publisher's point of
/// view: it is answered with a `wait` error, never `cancel`.
#[derive(Debug, Error)]
pub enum RegistryError {
    /// The storage engine failed.
    #[error("store error: {0}")]
    Storage(String),
    /// A stored value could not be decoded.
    #[error("corrupt registration for node {node}: {message}")]
    Corrupt {
        /// The node whose value is unreadable.
        node: String,
        /// The decoder's message.
        message: String,
    },
    /// The store has not been reached yet since the start.
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
    /// The blocking worker went away (shutdown).
    #[error("store worker stopped")]
    Stopped,
}

/// What [`Registry::drop_dead_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadToken {
    /// The registration is gone.
    Removed,
    /// The registration stays without its VoIP token.
    VoipTokenForgotten,
    /// Renewed since, or the token is no longer the registration's.
    Kept,
}
