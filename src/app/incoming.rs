//! Classifying an incoming stanza into what the component should do with it.

use super::commands::{CommandRequest, parse_command};
use super::node::XmlNode;
use super::ns;
use super::publish::{PublishRequest, parse_publish};
use super::replies::{IqHeader, StanzaFault};
use xmpp_parsers::jid::Jid;
use xmpp_parsers::minidom::Element;

/// A request the component answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// disco#info, optionally on a node.
    DiscoInfo {
        /// Reply addressing.
        header: IqHeader,
        /// The queried node.
        node: Option<String>,
    },
    /// disco#items, optionally on a node.
    DiscoItems {
        /// Reply addressing.
        header: IqHeader,
        /// The queried node.
        node: Option<String>,
    },
    /// XEP-0199 ping (servers use it to check the component).
    Ping {
        /// Reply addressing.
        header: IqHeader,
    },
    /// An ad-hoc command from a user.
    Command {
        /// Reply addressing.
        header: IqHeader,
        /// The normalized bare JID of the sender: the account.
        account: String,
        /// The command.
        command: CommandRequest,
    },
    /// A XEP-0357 publish from a server.
    Publish {
        /// Reply addressing.
        header: IqHeader,
        /// The domain of the publisher.
        publisher_domain: String,
        /// The publish.
        request: PublishRequest,
    },
    /// A request we cannot serve; answer with this error.
    Invalid {
        /// Reply addressing.
        header: IqHeader,
        /// The error to answer with.
        fault: StanzaFault,
    },
    /// Nothing to answer (results, errors, messages, presences, id-less iqs).
    Ignore,
}

/// Classifies `stanza`; never fails: what cannot be served becomes
/// [`Request::Invalid`] with the error to answer.
pub fn classify(stanza: &Element) -> Request {
    if !stanza.is("iq", ns::COMPONENT) {
        return Request::Ignore;
    }
    let Some(header) = IqHeader::of(stanza) else {
        return Request::Ignore;
    };
    let fail = |fault: StanzaFault| Request::Invalid {
        header: header.clone(),
        fault,
    };
    let kind = stanza.attr("type").unwrap_or_default();
    if matches!(kind, "result" | "error") {
        return Request::Ignore;
    }
    if !matches!(kind, "get" | "set") {
        return fail(StanzaFault::bad_request(format!(
            "invalid iq type {kind:?}"
        )));
    }
    let mut children = stanza.children();
    let (Some(payload), None) = (children.next(), children.next()) else {
        return fail(StanzaFault::bad_request(
            "an iq get/set carries exactly one child element",
        ));
    };
    let query_node = || payload.attr("node").map(str::to_owned);
    match (kind, payload.name(), payload.ns().as_str()) {
        ("get", "query", ns::DISCO_INFO) => Request::DiscoInfo {
            node: query_node(),
            header,
        },
        ("get", "query", ns::DISCO_ITEMS) => Request::DiscoItems {
            node: query_node(),
            header,
        },
        ("get", "ping", ns::PING) => Request::Ping { header },
        ("set", "command", ns::COMMANDS) => classify_command(header, payload),
        ("set", "pubsub", ns::PUBSUB) => classify_publish(header, payload),
        _ => fail(StanzaFault::new(
            "cancel",
            "service-unavailable",
            format!("<{}/> in {} is not supported", payload.name(), payload.ns()),
        )),
    }
}

/// A `<pubsub/>` set: [`Request::Publish`], or [`Request::Invalid`] without
/// a valid `from` or a readable publish. Shared with the fast path
/// ([`super::fast`]), which reads the same element from its light tree.
pub(super) fn classify_publish<N: XmlNode>(header: IqHeader, pubsub: &N) -> Request {
    let publisher_domain = match header.from.as_deref().map(Jid::new) {
        // Servers publish from their (bare) domain; a user's JID of the
        // right domain must not be able to push to a node it has seen.
        Some(Ok(jid)) if jid.node().is_some() => {
            return Request::Invalid {
                header,
                fault: StanzaFault::new(
                    "auth",
                    "forbidden",
                    "publishes are accepted from servers (a domain), not from users",
                ),
            };
        }
        Some(Ok(jid)) => jid.domain().as_str().to_ascii_lowercase(),
        _ => {
            return Request::Invalid {
                header,
                fault: StanzaFault::bad_request("publish without a valid from"),
            };
        }
    };
    match parse_publish(pubsub) {
        Ok(request) => Request::Publish {
            header,
            publisher_domain,
            request,
        },
        Err(fault) => Request::Invalid { header, fault },
    }
}

/// A `<command/>` set: [`Request::Command`], or [`Request::Invalid`]
/// without a user's `from` or a node. Shared with the fast path, like
/// [`classify_publish`].
pub(super) fn classify_command<N: XmlNode>(header: IqHeader, command: &N) -> Request {
    let parsed = sender_account(&header).and_then(|account| Ok((account, parse_command(command)?)));
    match parsed {
        Ok((account, command)) => Request::Command {
            header,
            account,
            command,
        },
        Err(fault) => Request::Invalid { header, fault },
    }
}

/// The account a command acts for: the bare JID of the sender, lowercased.
fn sender_account(header: &IqHeader) -> Result<String, StanzaFault> {
    let jid = header
        .from
        .as_deref()
        .map(Jid::new)
        .and_then(Result::ok)
        .ok_or_else(|| StanzaFault::bad_request("command without a valid from"))?;
    account_of(&jid).ok_or_else(|| {
        StanzaFault::new(
            "auth",
            "forbidden",
            "devices are registered by user accounts, not by servers",
        )
    })
}

/// The stored form of an account: the bare JID, lowercased; `None` for a JID
/// without a user part (a server).
pub(crate) fn account_of(jid: &Jid) -> Option<String> {
    jid.node()?;
    Some(jid.to_bare().to_string().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_str(xml: &str) -> Request {
        let el: Element = xml.parse().expect("test xml");
        classify(&el)
    }

    #[test]
    fn routes_disco_ping_and_ignores_non_requests() {
        assert!(matches!(
            classify_str("<iq xmlns='jabber:component:accept' type='get' id='1' from='a@b/c'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>"),
            Request::DiscoItems { node: Some(n), .. } if n == ns::COMMANDS
        ));
        assert!(matches!(
            classify_str(
                "<iq xmlns='jabber:component:accept' type='get' id='2' from='b'><ping xmlns='urn:xmpp:ping'/></iq>"
            ),
            Request::Ping { .. }
        ));
        for xml in [
            "<iq xmlns='jabber:component:accept' type='result' id='3'/>",
            "<message xmlns='jabber:component:accept' from='a@b'><body>hi</body></message>",
            "<presence xmlns='jabber:component:accept' from='a@b'/>",
            "<iq xmlns='jabber:component:accept' type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
        ] {
            assert_eq!(classify_str(xml), Request::Ignore, "{xml}");
        }
    }

    #[test]
    fn malformed_iqs_get_errors() {
        let cases = [
            (
                "<iq xmlns='jabber:component:accept' type='set' id='1' from='a@b'/>",
                "bad-request",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='bogus' id='1' from='a@b'><x xmlns='y'/></iq>",
                "bad-request",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='set' id='1' from='a@b'><a xmlns='y'/><b xmlns='y'/></iq>",
                "bad-request",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='get' id='1' from='a@b'><vcard xmlns='vcard-temp'/></iq>",
                "service-unavailable",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='set' id='1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'/></pubsub></iq>",
                "bad-request",
            ),
            (
                "<iq xmlns='jabber:component:accept' type='set' id='1' from='example.com'><command xmlns='http://jabber.org/protocol/commands' node='register-device'/></iq>",
                "forbidden",
            ),
        ];
        for (xml, condition) in cases {
            match classify_str(xml) {
                Request::Invalid { header, fault } => {
                    assert_eq!(header.id, "1");
                    assert_eq!(fault.condition, condition, "{xml}");
                }
                r => panic!("{xml} classified as {r:?}"),
            }
        }
    }

    #[test]
    fn command_account_is_the_lowercased_bare_jid() {
        match classify_str(
            "<iq xmlns='jabber:component:accept' type='set' id='1' from='Alice@Example.com/phone'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'/></iq>",
        ) {
            Request::Command { account, .. } => assert_eq!(account, "alice@example.com"),
            other => panic!("{other:?}"),
        }
    }
}
