//! Building replies, and the one table that maps publish outcomes to them.
//!
//! What a server does with our reply decides whether its user keeps getting
//! pushes (`docs/protocol.md` §5): ejabberd deletes the registration on any
//! error that is not of type `wait`; Prosody counts such errors and deletes
//! after 16; Tigase ignores the type and keeps the registration only for
//! `remote-server-timeout`, `service-unavailable`, `internal-server-error`
//! and `bad-request`, deleting it on every other condition (`resource-constraint`
//! included). So "try later" is always type `wait` with one of Tigase's kept
//! conditions, and a non-`wait` error means the registration is really gone.
//!
//! | outcome | reply | ejabberd | Prosody | Tigase |
//! |---|---|---|---|---|
//! | accepted | `result` | keeps | keeps | keeps |
//! | account removed (Tigase event) | `result` | — | — | keeps (it is deleting the account) |
//! | unknown node | `cancel/item-not-found` | deletes | counts; deletes after 16 | deletes |
//! | wrong publish-options secret | `auth/not-authorized` | deletes | counts; deletes after 16 | deletes |
//! | publisher not the account's domain | `auth/forbidden` | deletes | counts; deletes after 16 | deletes |
//! | overloaded (queue full, pool stopping) | `wait/service-unavailable` | keeps | keeps | keeps |
//! | store unavailable, outbox not loaded | `wait/internal-server-error` | keeps | keeps | keeps |
//! | cluster: the node's shard is moving, its owner unreachable | `wait/service-unavailable` | keeps | keeps | keeps |
//! | provider no longer configured | `wait/internal-server-error` | keeps | keeps | keeps |
//!
//! Replies to ad-hoc commands are read by clients, not servers, and are not
//! bound by this table.

mod text;

use super::node::XmlNode;
use super::ns;
use rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

/// The addressing of a request, kept to answer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IqHeader {
    /// The request's id.
    pub id: String,
    /// Who sent it (the reply goes there).
    pub from: Option<String>,
    /// Whom it was for (the reply comes from there).
    pub to: Option<String>,
}

impl IqHeader {
    /// Reads id/from/to off any stanza; `None` without an id (nothing to answer).
    pub fn of<N: XmlNode>(stanza: &N) -> Option<Self> {
        Some(Self {
            id: stanza.attr("id")?.to_owned(),
            from: stanza.attr("from").map(str::to_owned),
            to: stanza.attr("to").map(str::to_owned),
        })
    }

    fn reply(&self, kind: &str) -> Element {
        let mut b = Element::builder("iq", ns::COMPONENT)
            .attr(xml_ncname!("type").into(), kind)
            .attr(xml_ncname!("id").into(), self.id.as_str());
        if let Some(to) = &self.from {
            b = b.attr(xml_ncname!("to").into(), to.as_str());
        }
        if let Some(from) = &self.to {
            b = b.attr(xml_ncname!("from").into(), from.as_str());
        }
        b.build()
    }

    /// `<iq type='result'/>` without a payload, serialized: the answer to
    /// nearly every publish, so it skips building an element.
    pub(crate) fn empty_result(&self) -> String {
        let mut xml = String::with_capacity(64 + self.id.len());
        xml.push_str("<iq xmlns='jabber:component:accept' type='result' id='");
        xml.push_str(&quick_xml::escape::escape(self.id.as_str()));
        for (name, value) in [("to", &self.from), ("from", &self.to)] {
            if let Some(value) = value {
                xml.push_str("' ");
                xml.push_str(name);
                xml.push_str("='");
                xml.push_str(&quick_xml::escape::escape(value.as_str()));
            }
        }
        xml.push_str("'/>");
        xml
    }

    /// `<iq type='result'/>` with an optional payload.
    pub fn result(&self, payload: Option<Element>) -> Element {
        let mut iq = self.reply("result");
        if let Some(p) = payload {
            iq.append_child(p);
        }
        iq
    }

    /// `<iq type='error'/>` carrying `fault`.
    pub fn error(&self, fault: &StanzaFault) -> Element {
        let mut reply = self.reply("error");
        reply.append_child(fault.to_element());
        reply
    }
}

/// `reply` (an `<iq/>`) as text, never panicking and never invalid XML:
/// minidom's writer panics on a character XML cannot carry (were one ever to
/// reach a reply, from the configuration, say), so every text and attribute
/// value is checked first. A reply that fails is logged and replaced by a
/// `wait/internal-server-error` to the same id, which every server keeps the
/// registration on.
pub fn serialize(reply: &Element) -> String {
    if let Some(text) = text::write_plain(reply).or_else(|| write_checked(reply)) {
        return text;
    }
    tracing::error!(
        "a reply could not be serialized (a character XML cannot carry); answering internal-server-error"
    );
    let mut xml = String::from("<iq xmlns='jabber:component:accept' type='error'");
    for name in ["id", "to", "from"] {
        if let Some(value) = reply.attr(name).filter(|v| xml_chars(v)) {
            xml.push_str(&format!(" {name}='{}'", quick_xml::escape::escape(value)));
        }
    }
    xml.push_str("><error type='wait'><internal-server-error xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
    xml
}

/// `element` as text, or `None` where minidom's writer would panic.
pub(crate) fn write_checked(element: &Element) -> Option<String> {
    if !carries_only_xml_chars(element) {
        return None;
    }
    let mut out = Vec::new();
    element.write_to(&mut out).ok()?;
    String::from_utf8(out).ok()
}

fn xml_chars(text: &str) -> bool {
    text.chars().all(|c| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    })
}

/// Whether every text and attribute value under `root` is made of XML 1.0
/// characters (no C0 control but tab, line feed and carriage return, no
/// U+FFFE or U+FFFF).
pub(crate) fn carries_only_xml_chars(root: &Element) -> bool {
    let ok = xml_chars;
    let mut stack = vec![root];
    while let Some(element) = stack.pop() {
        if !element.attrs().iter().all(|(_, value)| ok(value)) {
            return false;
        }
        for node in element.nodes() {
            match node {
                xmpp_parsers::minidom::Node::Element(child) => stack.push(child),
                xmpp_parsers::minidom::Node::Text(text) => {
                    if !ok(text) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

/// A stanza error: type, defined condition, human text, and an optional
/// application-specific condition element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaFault {
    /// `cancel`, `wait`, `modify` or `auth`.
    pub kind: &'static str,
    /// An RFC 6120 defined condition.
    pub condition: &'static str,
    /// Why, in words.
    pub text: String,
    /// Application condition (name, namespace), e.g. XEP-0050 `bad-payload`.
    pub app_condition: Option<(&'static str, &'static str)>,
}

impl StanzaFault {
    /// A fault without an application condition.
    pub fn new(kind: &'static str, condition: &'static str, text: impl Into<String>) -> Self {
        Self {
            kind,
            condition,
            text: text.into(),
            app_condition: None,
        }
    }

    /// `modify/bad-request`.
    pub(crate) fn bad_request(text: impl Into<String>) -> Self {
        Self::new("modify", "bad-request", text)
    }

    /// A command form error: `modify/bad-request` + XEP-0050 `<bad-payload/>`.
    pub(crate) fn bad_payload(text: impl Into<String>) -> Self {
        Self {
            app_condition: Some(("bad-payload", ns::COMMANDS)),
            ..Self::bad_request(text)
        }
    }

    fn to_element(&self) -> Element {
        let mut error = Element::builder("error", ns::COMPONENT)
            .attr(xml_ncname!("type").into(), self.kind)
            .build();
        error.append_child(Element::bare(self.condition, ns::STANZAS));
        if !self.text.is_empty() {
            error.append_child(
                Element::builder("text", ns::STANZAS)
                    .append(self.text.as_str())
                    .build(),
            );
        }
        if let Some((name, ns)) = self.app_condition {
            error.append_child(Element::bare(name, ns));
        }
        error
    }
}

/// What became of a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PublishOutcome {
    /// Queued for delivery.
    Accepted,
    /// Tigase's account-removed event: the registration and its pending pushes
    /// are gone, nothing was sent.
    AccountRemoved,
    /// No registration has this node (never had, unregistered, or token dead).
    UnknownNode,
    /// The registration has a secret and the publish did not carry it.
    BadSecret,
    /// The publisher is not the domain of the registered account.
    WrongDomain,
    /// The provider's queue is full, or its pool is stopping.
    Overloaded,
    /// The store could not answer (or the outbox is not loaded yet).
    StoreUnavailable,
    /// In a cluster: the node's shard is moving between gateway nodes, or its
    /// owner could not be reached in time.
    Moving,
    /// The registration names a provider that is no longer configured.
    ProviderNotConfigured(String),
}

impl PublishOutcome {
    /// A short label for metrics (a closed set).
    pub(crate) fn label(&self) -> &'static str {
        match self {
            PublishOutcome::Accepted => "accepted",
            PublishOutcome::AccountRemoved => "account-removed",
            PublishOutcome::UnknownNode => "item-not-found",
            PublishOutcome::BadSecret => "not-authorized",
            PublishOutcome::WrongDomain => "forbidden",
            PublishOutcome::Overloaded => "overloaded",
            PublishOutcome::StoreUnavailable => "store-unavailable",
            PublishOutcome::Moving => "moving",
            PublishOutcome::ProviderNotConfigured(_) => "provider-not-configured",
        }
    }

    /// Whether this means "try later": the registration is fine and the
    /// server must keep it. Every such reply uses a condition that ejabberd,
    /// Prosody *and* Tigase keep (see the module documentation). The match
    /// is exhaustive, so a new outcome must be classified; the unit tests
    /// check each transient one against the three servers' rules.
    #[cfg(test)]
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            PublishOutcome::Overloaded
            | PublishOutcome::StoreUnavailable
            | PublishOutcome::Moving
            | PublishOutcome::ProviderNotConfigured(_) => true,
            PublishOutcome::Accepted
            | PublishOutcome::AccountRemoved
            | PublishOutcome::UnknownNode
            | PublishOutcome::BadSecret
            | PublishOutcome::WrongDomain => false,
        }
    }

    /// The error to answer with, or `None` for a plain result.
    pub(crate) fn fault(&self) -> Option<StanzaFault> {
        Some(match self {
            PublishOutcome::Accepted | PublishOutcome::AccountRemoved => return None,
            PublishOutcome::UnknownNode => StanzaFault::new(
                "cancel",
                "item-not-found",
                "no push registration for this node",
            ),
            PublishOutcome::BadSecret => StanzaFault::new(
                "auth",
                "not-authorized",
                "the publish-options secret does not match the registration",
            ),
            PublishOutcome::WrongDomain => StanzaFault::new(
                "auth",
                "forbidden",
                "this node belongs to an account of another domain",
            ),
            // Not resource-constraint: Tigase deletes the registration on it.
            PublishOutcome::Overloaded => StanzaFault::new(
                "wait",
                "service-unavailable",
                "the push gateway is overloaded (delivery queue full); try again later",
            ),
            PublishOutcome::StoreUnavailable => StanzaFault::new(
                "wait",
                "internal-server-error",
                "the registration store is unavailable; try again later",
            ),
            PublishOutcome::Moving => StanzaFault::new(
                "wait",
                "service-unavailable",
                "the push gateway node for this registration is changing; try again later",
            ),
            PublishOutcome::ProviderNotConfigured(p) => StanzaFault::new(
                "wait",
                "internal-server-error",
                format!("push provider {p:?} is not configured on this gateway"),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a server does with an error reply to a publish (`docs/protocol.md` §5).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Verdict {
        Keeps,
        /// Counted; the registration goes after a number of them.
        Counts,
        Deletes,
    }

    /// One server's rule, as data.
    enum Rule {
        /// Keeps on errors of this type; `otherwise` for the rest.
        ByType(&'static str, Verdict),
        /// Keeps on these conditions whatever the type; deletes on the rest.
        ByCondition(&'static [&'static str]),
    }

    const SERVERS: [(&str, Rule); 3] = [
        ("ejabberd", Rule::ByType("wait", Verdict::Deletes)),
        ("Prosody", Rule::ByType("wait", Verdict::Counts)),
        (
            "Tigase",
            Rule::ByCondition(&[
                "remote-server-timeout",
                "service-unavailable",
                "internal-server-error",
                "bad-request",
            ]),
        ),
    ];

    fn verdict(rule: &Rule, fault: &StanzaFault) -> Verdict {
        match rule {
            Rule::ByType(kind, _) if fault.kind == *kind => Verdict::Keeps,
            Rule::ByType(_, otherwise) => *otherwise,
            Rule::ByCondition(kept) if kept.contains(&fault.condition) => Verdict::Keeps,
            Rule::ByCondition(_) => Verdict::Deletes,
        }
    }

    /// Every outcome. The match fails to compile when a variant is added, as a
    /// reminder to list it here too.
    fn every_outcome() -> Vec<PublishOutcome> {
        let all = vec![
            PublishOutcome::Accepted,
            PublishOutcome::AccountRemoved,
            PublishOutcome::UnknownNode,
            PublishOutcome::BadSecret,
            PublishOutcome::WrongDomain,
            PublishOutcome::Overloaded,
            PublishOutcome::StoreUnavailable,
            PublishOutcome::Moving,
            PublishOutcome::ProviderNotConfigured("x".into()),
        ];
        for outcome in &all {
            match outcome {
                PublishOutcome::Accepted
                | PublishOutcome::AccountRemoved
                | PublishOutcome::UnknownNode
                | PublishOutcome::BadSecret
                | PublishOutcome::WrongDomain
                | PublishOutcome::Overloaded
                | PublishOutcome::StoreUnavailable
                | PublishOutcome::Moving
                | PublishOutcome::ProviderNotConfigured(_) => {}
            }
        }
        all
    }

    #[test]
    fn every_transient_reply_is_kept_by_every_server() {
        let mut transient = 0;
        for outcome in every_outcome()
            .into_iter()
            .filter(PublishOutcome::is_transient)
        {
            transient += 1;
            let fault = outcome.fault().expect("a transient outcome is an error");
            assert!(!fault.text.is_empty(), "{outcome:?} says what happened");
            for (server, rule) in &SERVERS {
                assert_eq!(
                    verdict(rule, &fault),
                    Verdict::Keeps,
                    "{server} must keep the registration after {outcome:?} ({}/{})",
                    fault.kind,
                    fault.condition
                );
            }
        }
        assert_eq!(transient, 4);
    }

    #[test]
    fn only_a_gone_registration_is_answered_with_an_error_a_server_acts_on() {
        for outcome in every_outcome().into_iter().filter(|o| !o.is_transient()) {
            let Some(fault) = outcome.fault() else {
                continue;
            };
            // ejabberd's rule is the strictest for these: it must delete.
            assert_eq!(
                verdict(&SERVERS[0].1, &fault),
                Verdict::Deletes,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn the_table_is_as_documented() {
        let table = [
            (PublishOutcome::Accepted, None),
            (PublishOutcome::AccountRemoved, None),
            (
                PublishOutcome::UnknownNode,
                Some(("cancel", "item-not-found")),
            ),
            (PublishOutcome::BadSecret, Some(("auth", "not-authorized"))),
            (PublishOutcome::WrongDomain, Some(("auth", "forbidden"))),
            (
                PublishOutcome::Overloaded,
                Some(("wait", "service-unavailable")),
            ),
            (
                PublishOutcome::StoreUnavailable,
                Some(("wait", "internal-server-error")),
            ),
            (
                PublishOutcome::Moving,
                Some(("wait", "service-unavailable")),
            ),
            (
                PublishOutcome::ProviderNotConfigured("x".into()),
                Some(("wait", "internal-server-error")),
            ),
        ];
        assert_eq!(table.len(), every_outcome().len());
        for (outcome, expected) in table {
            let got = outcome.fault().map(|f| (f.kind, f.condition));
            assert_eq!(got, expected, "{outcome:?}");
            assert_ne!(got.map(|g| g.1), Some("resource-constraint"));
        }
    }

    /// minidom's writer panics on such characters; `serialize` answers an
    /// internal-server-error instead.
    #[test]
    fn a_reply_xml_cannot_carry_becomes_an_internal_error() {
        let request: Element = "<iq xmlns='jabber:component:accept' type='set' id='x&amp;1' from='localhost' to='push.localhost'/>"
            .parse()
            .expect("xml");
        let header = IqHeader::of(&request).expect("id");
        for bad in ["a\u{0}b", "\u{1b}", "\u{FFFE}"] {
            let fault = StanzaFault::bad_request(format!("unknown provider {bad}"));
            let text = serialize(&header.error(&fault));
            let parsed: Element = text.parse().expect("valid XML");
            assert_eq!(parsed.attr("type"), Some("error"), "{text}");
            assert_eq!(parsed.attr("id"), Some("x&1"), "{text}");
            let error = parsed.get_child("error", ns::COMPONENT).expect("error");
            assert_eq!(error.attr("type"), Some("wait"));
            assert!(error.has_child("internal-server-error", ns::STANZAS));
            let payload = Element::builder("note", ns::COMMANDS)
                .attr(xml_ncname!("type").into(), bad)
                .build();
            let text = serialize(&header.result(Some(payload)));
            assert!(text.contains("internal-server-error"), "{text}");
        }
        let fine = serialize(&header.error(&StanzaFault::bad_request("tab\tok")));
        assert!(fine.contains("tab\tok"), "{fine}");
    }

    #[test]
    fn error_reply_swaps_addresses_and_carries_the_condition() {
        let request: Element = "<iq xmlns='jabber:component:accept' type='set' id='a/b+=' from='localhost' to='push.localhost'/>"
            .parse()
            .expect("xml");
        let header = IqHeader::of(&request).expect("id");
        let reply = header.error(&PublishOutcome::UnknownNode.fault().expect("fault"));
        let text = String::from(&reply);
        assert!(text.contains("to='localhost'"), "{text}");
        assert!(text.contains("from='push.localhost'"), "{text}");
        assert!(text.contains("id='a/b+='"), "{text}");
        let error = reply.get_child("error", ns::COMPONENT).expect("error");
        assert_eq!(error.attr("type"), Some("cancel"));
        assert!(error.has_child("item-not-found", ns::STANZAS));
    }
}
