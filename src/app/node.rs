//! The little a reader of publishes and forms asks of an XML element, so the
//! same reading code serves the parse tree ([`Element`]) and the fast path's
//! light tree ([`super::fast`]): one set of rules, two representations.

use xmpp_parsers::minidom::Element;

/// An element: its name and namespace, attributes without a namespace,
/// element children in order, and its own text.
pub trait XmlNode {
    /// Whether this is `name` in namespace `ns`.
    fn is(&self, name: &str, ns: &str) -> bool;
    /// The local name.
    fn name(&self) -> &str;
    /// An attribute without a namespace prefix.
    fn attr<'a>(&'a self, name: &'a str) -> Option<&'a str>;
    /// Child elements, in document order.
    fn children(&self) -> impl Iterator<Item = &Self>;
    /// The text directly inside this element (not its children's).
    fn text(&self) -> String;
    /// The first child `name` in `ns`.
    fn get_child(&self, name: &str, ns: &str) -> Option<&Self> {
        self.children().find(|c| c.is(name, ns))
    }
}

impl XmlNode for Element {
    fn is(&self, name: &str, ns: &str) -> bool {
        Element::is(self, name, ns)
    }
    fn name(&self) -> &str {
        Element::name(self)
    }
    fn attr<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        Element::attr(self, name)
    }
    fn children(&self) -> impl Iterator<Item = &Self> {
        Element::children(self)
    }
    fn text(&self) -> String {
        Element::text(self)
    }
    fn get_child(&self, name: &str, ns: &str) -> Option<&Self> {
        Element::get_child(self, name, ns)
    }
}
