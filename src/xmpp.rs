//! The XEP-0114 component stream: framing, handshake, keepalive and reconnect.
//!
//! Nothing here knows about push. A `Session` actor keeps one connection to one
//! server alive and hands every complete stanza to a `StanzaHandler`, sending
//! back whatever reply the handler returns.

mod connection;
mod frame;
mod session;
mod stream_error;
mod tls;

pub use connection::handshake_digest;
pub use frame::{FrameError, StreamEvent, StreamReader};
pub use session::Close;
pub(crate) use session::{ReplyFuture, Session, SessionSettings, StanzaHandler};
pub(crate) use tls::{ComponentTls, is_loopback};

/// `jabber:component:accept`, the namespace of stanzas on a component stream.
pub(crate) const NS_COMPONENT: &str = "jabber:component:accept";
/// The stream namespace.
pub(crate) const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// Stream error conditions.
pub(crate) const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
