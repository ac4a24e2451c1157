//! Lenient XEP-0004 form reading (servers differ in field types, labels and empty
//! placeholders) and small builders for the forms we send.

use super::node::XmlNode;
use super::ns;
use rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

/// A data form as received: its type and fields, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// `form`, `submit`, `result` or `cancel`.
    pub kind: String,
    /// (var, values) pairs; a field without values has an empty list.
    pub fields: Vec<(String, Vec<String>)>,
}

impl Form {
    /// Reads a `<x xmlns='jabber:x:data'/>` element; `None` if it is not one.
    pub fn parse<N: XmlNode>(x: &N) -> Option<Self> {
        if !x.is("x", ns::DATA) {
            return None;
        }
        let fields = x
            .children()
            .filter(|c| c.is("field", ns::DATA))
            .filter_map(|f| {
                let var = f.attr("var")?.to_owned();
                let values = f
                    .children()
                    .filter(|v| v.is("value", ns::DATA))
                    .map(N::text)
                    .collect();
                Some((var, values))
            })
            .collect();
        Some(Self {
            kind: x.attr("type").unwrap_or_default().to_owned(),
            fields,
        })
    }

    /// The first child form of `parent`, if any.
    pub(crate) fn child_of<N: XmlNode>(parent: &N) -> Option<Self> {
        parent.get_child("x", ns::DATA).and_then(Self::parse)
    }

    /// The `FORM_TYPE` value.
    pub(crate) fn form_type(&self) -> Option<&str> {
        self.value("FORM_TYPE")
    }

    /// The first value of `var`, if the field exists and has one.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .and_then(|(_, values)| values.first())
            .map(String::as_str)
    }

    /// The first value of `var`, trimmed, or `None` when missing or blank.
    pub(crate) fn non_empty(&self, var: &str) -> Option<&str> {
        self.value(var).map(str::trim).filter(|v| !v.is_empty())
    }
}

/// A field we send: var, type, label, values and options.
#[derive(Debug, Clone, Default)]
pub struct FieldSpec<'a> {
    /// The field's var.
    pub var: &'a str,
    /// Its XEP-0004 type.
    pub kind: &'a str,
    /// Its label.
    pub label: Option<&'a str>,
    /// Values.
    pub values: Vec<String>,
    /// Options of a list field.
    pub options: Vec<String>,
    /// Whether `<required/>` is set.
    pub required: bool,
}

/// Builds a `<x xmlns='jabber:x:data' type=…>` with an optional title.
pub fn build(kind: &str, title: Option<&str>, fields: &[FieldSpec<'_>]) -> Element {
    let mut x = Element::builder("x", ns::DATA)
        .attr(xml_ncname!("type").into(), kind)
        .build();
    if let Some(title) = title {
        x.append_child(Element::builder("title", ns::DATA).append(title).build());
    }
    for f in fields {
        let mut field = Element::builder("field", ns::DATA)
            .attr(xml_ncname!("var").into(), f.var)
            .attr(xml_ncname!("type").into(), f.kind);
        if let Some(label) = f.label {
            field = field.attr(xml_ncname!("label").into(), label);
        }
        let mut field = field.build();
        if f.required {
            field.append_child(Element::bare("required", ns::DATA));
        }
        for option in &f.options {
            field.append_child(
                Element::builder("option", ns::DATA)
                    .append(
                        Element::builder("value", ns::DATA)
                            .append(option.as_str())
                            .build(),
                    )
                    .build(),
            );
        }
        for value in &f.values {
            field.append_child(
                Element::builder("value", ns::DATA)
                    .append(value.as_str())
                    .build(),
            );
        }
        x.append_child(field);
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prosody_placeholders_and_ejabberd_labels() {
        let x: Element = "<x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='pending-subscription-count'/><field var='last-message-body' type='text-single' label='The body'><value>Hi</value></field></x>"
            .parse()
            .expect("xml");
        let form = Form::parse(&x).expect("form");
        assert_eq!(form.kind, "form");
        assert_eq!(form.form_type(), Some("urn:xmpp:push:summary"));
        assert_eq!(form.value("pending-subscription-count"), None);
        assert_eq!(form.value("last-message-body"), Some("Hi"));
    }

    #[test]
    fn builds_a_form_that_reads_back() {
        let x = build(
            "result",
            None,
            &[FieldSpec {
                var: "node",
                kind: "text-single",
                values: vec!["abc".into()],
                ..FieldSpec::default()
            }],
        );
        let form = Form::parse(&x).expect("form");
        assert_eq!(form.value("node"), Some("abc"));
    }
}
