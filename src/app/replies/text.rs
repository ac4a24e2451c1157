//! Replies as text, written straight from their elements.
//!
//! minidom's writer (an rxml encoder behind it) was 8% of the gateway's CPU
//! during a registration flood, as much as reading the command
//! (BENCHMARKS.md, "Registrations: commands on the fast path, a journal
//! for the embedded store"). Replies are elements this crate builds: names
//! checked when built, every attribute without a namespace, no prefixes, so
//! writing one is string pushing. What is not that plain is left to
//! minidom's writer ([`super::write_checked`]).

use xmpp_parsers::minidom::{Element, NSChoice, Node};

/// `element` as XML text: each element's namespace declared where it
/// differs from its parent's, attribute values in single quotes. `None`
/// if an attribute has a namespace or a value or text holds a character
/// XML 1.0 cannot carry.
pub(super) fn write_plain(element: &Element) -> Option<String> {
    let mut out = String::with_capacity(512);
    write_element(element, None, &mut out)?;
    Some(out)
}

fn write_element(element: &Element, parent_ns: Option<&str>, out: &mut String) -> Option<()> {
    out.push('<');
    out.push_str(element.name());
    let ns = match parent_ns {
        Some(parent) if element.has_ns(NSChoice::OneOf(parent)) => None,
        _ => Some(element.ns()),
    };
    if let Some(ns) = &ns {
        push_attribute(out, "xmlns", ns)?;
    }
    for ((attr_ns, name), value) in element.attrs().iter() {
        if !attr_ns.is_none() {
            return None;
        }
        push_attribute(out, name.as_str(), value)?;
    }
    let mut nodes = element.nodes().peekable();
    if nodes.peek().is_none() {
        out.push_str("/>");
        return Some(());
    }
    out.push('>');
    let own_ns = ns.as_deref().or(parent_ns);
    for node in nodes {
        match node {
            Node::Element(child) => write_element(child, own_ns, out)?,
            Node::Text(text) => push_escaped(out, text, false)?,
        }
    }
    out.push_str("</");
    out.push_str(element.name());
    out.push('>');
    Some(())
}

fn push_attribute(out: &mut String, name: &str, value: &str) -> Option<()> {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    push_escaped(out, value, true)?;
    out.push('\'');
    Some(())
}

/// Pushes `text` escaped so that a parser reads it back unchanged: markup
/// characters as entities, and the white space a parser would normalize
/// (a carriage return anywhere; tab and line feed in an attribute value)
/// as character references.
fn push_escaped(out: &mut String, text: &str, attribute: bool) -> Option<()> {
    let mut rest = text;
    while let Some(at) = rest.find(|c: char| needs_care(c, attribute)) {
        let (plain, tail) = rest.split_at(at);
        out.push_str(plain);
        let mut chars = tail.chars();
        let c = chars.next()?;
        out.push_str(match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '\'' => "&apos;",
            '"' => "&quot;",
            '\r' => "&#13;",
            '\n' => "&#10;",
            '\t' => "&#9;",
            _ => return None,
        });
        rest = chars.as_str();
    }
    out.push_str(rest);
    Some(())
}

/// Whether `c` cannot be pushed as it is: markup, white space a parser
/// would normalize, or no XML 1.0 character at all.
fn needs_care(c: char, attribute: bool) -> bool {
    match c {
        '&' | '<' | '>' | '\'' | '"' | '\r' => true,
        '\t' | '\n' => attribute,
        '\u{FFFE}' | '\u{FFFF}' => true,
        c => c < ' ',
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ns;
    use rxml::xml_ncname;

    fn parsed(xml: &str) -> Element {
        xml.parse().expect("the written text parses")
    }

    #[test]
    fn writes_what_parses_back_equal() {
        let mut iq = Element::builder("iq", ns::COMPONENT)
            .attr(xml_ncname!("id").into(), "a'b\"c<d>&e\tf\ng\rh")
            .attr(xml_ncname!("type").into(), "result")
            .build();
        let mut command = Element::builder("command", ns::COMMANDS)
            .attr(xml_ncname!("node").into(), "register-device")
            .build();
        command.append_child(
            Element::builder("note", ns::COMMANDS)
                .append("one\r\ntwo\tthree & <four> ]]> 'five' \"six\" ☃ 𝄞")
                .build(),
        );
        command.append_child(Element::bare("x", ns::DATA));
        iq.append_child(command);
        iq.append_child(Element::bare("error", ns::COMPONENT));
        let text = write_plain(&iq).expect("plain");
        assert_eq!(parsed(&text), iq, "{text}");
        assert!(
            text.starts_with("<iq xmlns='jabber:component:accept' "),
            "{text}"
        );
        assert!(text.contains("<x xmlns='jabber:x:data'/>"), "{text}");
        assert!(text.ends_with("<error/></iq>"), "{text}");
    }

    #[test]
    fn refuses_what_xml_cannot_carry() {
        for bad in ["\u{0}", "a\u{1b}b", "\u{FFFE}", "\u{FFFF}"] {
            let attr = Element::builder("iq", ns::COMPONENT)
                .attr(xml_ncname!("id").into(), bad)
                .build();
            assert_eq!(write_plain(&attr), None, "{bad:?}");
            let text = Element::builder("iq", ns::COMPONENT).append(bad).build();
            assert_eq!(write_plain(&text), None, "{bad:?}");
        }
    }
}
