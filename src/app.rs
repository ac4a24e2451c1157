//! What a push component says, as pure functions over stanzas: no sockets, no
//! store. The gateway runs the effects these functions ask for.
//!
//! - [`incoming`]: classify a stanza into a [`Request`].
//! - [`disco`]: disco#info and disco#items answers.
//! - [`commands`]: the Tigase `register-device` / `unregister-device` commands.
//! - [`publish`]: a XEP-0357 publish → [`Notification`].
//! - [`fast`]: the same from a publish's bytes, without a parse tree (the hot
//!   path); [`node`] lets one reading code serve both.
//! - [`replies`]: results and stanza errors, and how publish outcomes map to them.

pub mod commands;
pub mod disco;
pub mod fast;
pub mod forms;
pub mod incoming;
pub mod node;
pub mod publish;
pub mod replies;

pub use incoming::{Request, classify};
pub use publish::{Encrypted, Notification, Priority, PublishRequest};
pub(crate) use replies::PublishOutcome;
pub use replies::StanzaFault;

/// Namespaces used by the push component.
pub mod ns {
    /// XEP-0357 push.
    pub(crate) const PUSH: &str = "urn:xmpp:push:0";
    /// XEP-0357 summary form type.
    pub(crate) const PUSH_SUMMARY: &str = "urn:xmpp:push:summary";
    /// XEP-0060 pubsub.
    pub(crate) const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    /// XEP-0004 data forms.
    pub(crate) const DATA: &str = "jabber:x:data";
    /// XEP-0050 ad-hoc commands.
    pub(crate) const COMMANDS: &str = "http://jabber.org/protocol/commands";
    /// XEP-0030 disco#info.
    pub(crate) const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
    /// XEP-0030 disco#items.
    pub(crate) const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
    /// XEP-0199 ping.
    pub const PING: &str = "urn:xmpp:ping";
    /// Stanza error conditions.
    pub(crate) const STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
    /// Tigase explicit priority.
    pub(crate) const TIGASE_PRIORITY: &str = "tigase:push:priority:0";
    /// Tigase encrypted payload.
    pub(crate) const TIGASE_ENCRYPT: &str = "tigase:push:encrypt:0";
    /// Tigase incoming call.
    pub(crate) const TIGASE_JINGLE: &str = "tigase:push:jingle:0";
    /// Tigase MUC offline marker.
    pub(crate) const TIGASE_MUC_OFFLINE: &str = "http://tigase.org/protocol/muc#offline";
    /// Tigase account events (`account-removed`).
    pub(crate) const TIGASE_ACCOUNT_EVENT: &str = "http://tigase.org/protocol/account#event";
    /// The component stream namespace stanzas are built in.
    pub(crate) const COMPONENT: &str = "jabber:component:accept";
}

/// What the app logic needs to know about the deployment.
#[derive(Debug, Clone)]
pub struct AppContext {
    /// Our component JID, lowercase.
    pub component_jid: String,
    /// The configured provider ids, in configuration order, with their kinds.
    pub providers: Vec<(String, crate::config::ProviderKind)>,
    /// The offered registration commands.
    pub commands: Vec<commands::CommandSpec>,
    /// mod_push_appserver `type` values and the provider ids they map to.
    pub appserver_types: Vec<(String, String)>,
}

impl AppContext {
    /// The context of a validated configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            component_jid: config.component.jid.to_ascii_lowercase(),
            providers: config
                .providers
                .iter()
                .map(|p| (p.id.clone(), p.kind))
                .collect(),
            commands: commands::command_specs(&config.commands),
            appserver_types: config
                .commands
                .appserver
                .iter()
                .map(|(t, p)| (t.clone(), p.clone()))
                .collect(),
        }
    }

    /// The kind of the configured provider `id`.
    pub(crate) fn provider_kind(&self, id: &str) -> Option<crate::config::ProviderKind> {
        self.providers
            .iter()
            .find(|(p, _)| p == id)
            .map(|(_, kind)| *kind)
    }

    /// The offered command with this node.
    pub fn command(&self, node: &str) -> Option<&commands::CommandSpec> {
        self.commands.iter().find(|c| c.node == node)
    }
}
