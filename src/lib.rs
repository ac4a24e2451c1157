//! pushgate: an XEP-0357 push app server for XMPP servers.
//!
//! The crate is laid out along the flow of a notification:
//!
//! - [`config`]: the TOML file plus `PUSHGATE_…` environment overrides, validated at
//!   start-up with errors that name the key.
//! - [`xmpp`]: the XEP-0114 component stream (framing, handshake, keepalive,
//!   reconnect). It knows nothing about push.
//! - [`app`]: what a push component says: disco, the ad-hoc registration commands,
//!   publish → [`app::Notification`], and the mapping of outcomes to IQ replies.
//!   Pure functions over stanzas.
//! - [`registry`]: registrations (push node → device), in the embedded store.
//! - [`delivery`]: one pool actor per provider, with outcome handling.
//! - [`providers`]: thin APNs and FCM v1 HTTP/2 clients.
//! - [`http`]: Tigase REST unregister, health, readiness and metrics.
//! - [`telemetry`]: logging and the metrics registry.
//! - [`cluster`]: several nodes on one Redis: leases, shard ownership with
//!   fencing, forwarding to the owner over gRPC.
//! - [`gateway`]: wires the pieces together and runs them until shutdown.
//! - [`errors`]: an error and its causes as one line of text.
//! - `limits`: per-key rate limits on what outsiders send.
//! - [`clock`]: the one source of time, which tests can pause; [`backoff`]:
//!   the one exponential backoff.
#![forbid(unsafe_code)]
// Nested async state machines (a publish forwarded to its owner, through the
// store's timed operations) need more than the default 128 levels of layout
// queries on some compilers: nightly's fuzz builds hit it.
#![recursion_limit = "256"]
#![warn(missing_docs, unreachable_pub)]

pub mod app;
pub mod backoff;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod errors;
pub mod gateway;
pub mod http;
mod limits;
pub mod probe;
pub mod providers;
pub mod registry;
pub mod telemetry;
pub mod xmpp;
