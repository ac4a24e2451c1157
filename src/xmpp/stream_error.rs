//! Reading a `<stream:error/>` and explaining it to an operator.

use super::{NS_STREAM, NS_STREAM_ERRORS};
use xmpp_parsers::minidom::Element;

/// The condition and optional text of a stream error from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamErrorInfo {
    /// The defined condition, e.g. `not-authorized`.
    pub condition: String,
    /// The server's `<text/>`, if any.
    pub text: Option<String>,
}

impl StreamErrorInfo {
    /// Reads `element` if it is a `<stream:error/>`.
    pub(crate) fn parse(element: &Element) -> Option<Self> {
        if !element.is("error", NS_STREAM) {
            return None;
        }
        let condition = element
            .children()
            .find(|c| c.ns() == NS_STREAM_ERRORS && c.name() != "text")
            .map(|c| c.name().to_owned())
            .unwrap_or_else(|| "undefined-condition".to_owned());
        let text = element
            .get_child("text", NS_STREAM_ERRORS)
            .map(Element::text)
            .filter(|t| !t.is_empty());
        Some(Self { condition, text })
    }

    /// One line for the log that says what to do about it.
    pub(crate) fn explain(&self, component_jid: &str) -> String {
        let hint = match self.condition.as_str() {
            "not-authorized" => {
                "the server rejected the handshake: component.secret does not match the server's component secret".to_owned()
            }
            "host-unknown" => format!(
                "the server does not know the component {component_jid}: declare it in the server's config (Prosody Component, ejabberd ejabberd_service hosts)"
            ),
            "conflict" => format!(
                "another connection is already bound as {component_jid} and the server allows only one"
            ),
            "system-shutdown" => "the server is shutting down".to_owned(),
            other => format!("stream error {other}"),
        };
        match &self.text {
            Some(text) => format!("{hint} (server says: {text})"),
            None => hint,
        }
    }

    /// Whether the cause is our configuration rather than a passing fault.
    pub(crate) fn is_configuration_error(&self) -> bool {
        matches!(self.condition.as_str(), "not-authorized" | "host-unknown")
    }
}

/// The bytes of a stream error we send before closing.
pub(crate) fn stream_error_xml(condition: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/></stream:error></stream:stream>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_condition_and_text() {
        let el: Element = "<error xmlns='http://etherx.jabber.org/streams'><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>bad</text></error>"
            .parse()
            .expect("xml");
        let info = StreamErrorInfo::parse(&el).expect("stream error");
        assert_eq!(info.condition, "not-authorized");
        assert_eq!(info.text.as_deref(), Some("bad"));
        assert!(info.is_configuration_error());
        assert!(info.explain("push.example").contains("component.secret"));
    }
}
