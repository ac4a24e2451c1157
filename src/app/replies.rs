//! Building replies, and the one table that maps publish outcomes to them
//! (`PROTOCOL.md` §5: only a registration that is really gone gets a non-`wait`
//! error, because servers delete the registration on those).

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
    pub fn empty_result(&self) -> String {
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
    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::new("modify", "bad-request", text)
    }

    /// A command form error: `modify/bad-request` + XEP-0050 `<bad-payload/>`.
    pub fn bad_payload(text: impl Into<String>) -> Self {
        Self {
            app_condition: Some(("bad-payload", ns::COMMANDS)),
            ..Self::bad_request(text)
        }
    }

    /// Whether servers keep the registration after this error (§5).
    pub fn is_transient(&self) -> bool {
        self.kind == "wait"
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
pub enum PublishOutcome {
    /// Queued for delivery.
    Accepted,
    /// No registration has this node (never had, unregistered, or token dead).
    UnknownNode,
    /// The registration has a secret and the publish did not carry it.
    BadSecret,
    /// The publisher is not the domain of the registered account.
    WrongDomain,
    /// The provider's queue is full.
    Overloaded,
    /// The store could not answer.
    StoreUnavailable,
    /// The registration names a provider that is no longer configured.
    ProviderNotConfigured(String),
}

impl PublishOutcome {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            PublishOutcome::Accepted => "accepted",
            PublishOutcome::UnknownNode => "item-not-found",
            PublishOutcome::BadSecret => "not-authorized",
            PublishOutcome::WrongDomain => "forbidden",
            PublishOutcome::Overloaded => "resource-constraint",
            PublishOutcome::StoreUnavailable => "store-unavailable",
            PublishOutcome::ProviderNotConfigured(_) => "provider-not-configured",
        }
    }

    /// The error to answer with, or `None` for a plain result.
    pub fn fault(&self) -> Option<StanzaFault> {
        Some(match self {
            PublishOutcome::Accepted => return None,
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
            PublishOutcome::Overloaded => StanzaFault::new(
                "wait",
                "resource-constraint",
                "the delivery queue is full; try again later",
            ),
            PublishOutcome::StoreUnavailable => StanzaFault::new(
                "wait",
                "internal-server-error",
                "the registration store is unavailable; try again later",
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

    #[test]
    fn only_a_gone_registration_is_answered_with_a_non_wait_error() {
        let table = [
            (PublishOutcome::Accepted, None),
            (
                PublishOutcome::UnknownNode,
                Some(("cancel", "item-not-found")),
            ),
            (PublishOutcome::BadSecret, Some(("auth", "not-authorized"))),
            (PublishOutcome::WrongDomain, Some(("auth", "forbidden"))),
            (
                PublishOutcome::Overloaded,
                Some(("wait", "resource-constraint")),
            ),
            (
                PublishOutcome::StoreUnavailable,
                Some(("wait", "internal-server-error")),
            ),
            (
                PublishOutcome::ProviderNotConfigured("x".into()),
                Some(("wait", "internal-server-error")),
            ),
        ];
        for (outcome, expected) in table {
            let got = outcome.fault().map(|f| (f.kind, f.condition));
            assert_eq!(got, expected, "{outcome:?}");
        }
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
