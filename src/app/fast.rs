//! Publishes (and registration commands) read straight from their bytes:
//! the hot path.
//!
//! A publish is most of what a push component receives, and building the
//! validating parser's tree for it was the top cost per notification
//! (BENCHMARKS.md). Here quick-xml reads the stanza into a light tree
//! (`LightElement`) and the same reading code as the parsed path
//! (`classify_publish` and `classify_command`, through [`XmlNode`]) turns it
//! into a [`Request`].
//!
//! It is deliberately narrow: only a well-formed `<iq type='set'>` with an id,
//! a valid `from` and a `<pubsub/>` whose `<publish/>` has a node, or a
//! `<command/>` with a node from a user. Anything
//! else, and anything doubtful about the XML (control characters, references
//! in attribute values, `xmlns=''`, undeclared prefixes, comments, …), returns
//! `None`, and the stanza takes the validating path, which answers exactly as
//! it always did.

use super::incoming::{Request, classify_command, classify_publish};
use super::node::XmlNode;
use super::ns;
use super::replies::IqHeader;
use quick_xml::NsReader;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};
use quick_xml::name::ResolveResult;
use std::borrow::Cow;

/// Namespaces a publish or a command is read in; others are kept by value.
const KNOWN: [&str; 10] = [
    ns::COMPONENT,
    ns::COMMANDS,
    ns::PUBSUB,
    ns::PUSH,
    ns::DATA,
    ns::TIGASE_PRIORITY,
    ns::TIGASE_ENCRYPT,
    ns::TIGASE_JINGLE,
    ns::TIGASE_MUC_OFFLINE,
    ns::TIGASE_ACCOUNT_EVENT,
];

/// The namespaces of the `xml` and `xmlns` prefixes, which no declaration
/// in a stanza may bind.
const RESERVED_NAMESPACES: [&[u8]; 2] = [
    b"http://www.w3.org/XML/1998/namespace",
    b"http://www.w3.org/2000/xmlns/",
];

/// Deepest nesting read; anything deeper goes to the validating path.
const MAX_DEPTH: usize = 16;

/// An element of the light tree: namespace-resolved, borrowing names, values
/// and text from the stanza where it can; no validation beyond quick-xml's
/// (the callers of [`publish`] vouch for the rest).
#[derive(Debug, Default)]
pub(crate) struct LightElement<'a> {
    name: Cow<'a, str>,
    ns: Cow<'static, str>,
    attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    children: Vec<LightElement<'a>>,
    text: Cow<'a, str>,
}

impl XmlNode for LightElement<'_> {
    fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn attr<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
    fn children(&self) -> impl Iterator<Item = &Self> {
        self.children.iter()
    }
    fn text(&self) -> String {
        self.text.clone().into_owned()
    }
}

/// Reads `stanza` as a publish, or `None` to leave it to the validating path.
pub fn publish(stanza: &[u8]) -> Option<Request> {
    read(stanza, false)
}

/// Reads `stanza` as a publish or an ad-hoc command (a registration),
/// or `None` to leave it to the validating path. Registrations come in
/// floods when a cluster comes back and every phone registers again; the
/// validating parser was the largest cost of one (BENCHMARKS.md,
/// "Registrations: where the time goes").
pub fn publish_or_command(stanza: &[u8]) -> Option<Request> {
    read(stanza, true)
}

fn read(stanza: &[u8], commands: bool) -> Option<Request> {
    let iq = light_tree(stanza)?;
    if !iq.is("iq", ns::COMPONENT) || iq.attr("type") != Some("set") {
        return None;
    }
    let [payload] = iq.children.as_slice() else {
        return None;
    };
    let header = IqHeader::of(&iq)?;
    let request = if payload.is("pubsub", ns::PUBSUB) {
        classify_publish(header, payload)
    } else if commands && payload.is("command", ns::COMMANDS) {
        classify_command(header, payload)
    } else {
        return None;
    };
    match request {
        // A refusal is left to the validating path, which answers it.
        request @ (Request::Publish { .. } | Request::Command { .. }) => Some(request),
        _ => None,
    }
}

/// Whether UTF-8 `bytes` hold only characters XML 1.0 allows: no C0
/// controls but tab, newline and carriage return, and neither U+FFFE nor
/// U+FFFF (UTF-8 `EF BF BE`/`EF BF BF`; surrogates cannot be valid UTF-8);
/// no `]]>`, and no character reference longer than the validating parser
/// reads. The validating parser refuses the rest, so the fast path
/// must too.
///
/// Most stanzas hold none of the bytes that need a closer look, so they
/// are looked for a block at a time, in a loop without early exit that the
/// compiler turns into vector instructions; only a block holding one is
/// read byte by byte. Byte by byte throughout, this was 1.5% of the
/// gateway's CPU at full load.
fn only_xml_chars(bytes: &[u8]) -> bool {
    const BLOCK: usize = 32;
    let mut start = 0;
    for block in bytes.chunks(BLOCK) {
        let doubtful = block.iter().fold(false, |seen, &b| {
            seen | (b < 0x20) | (b == 0xEF) | (b == b']') | (b == b'&')
        });
        if doubtful && !xml_chars_from(bytes, start, start + block.len()) {
            return false;
        }
        start += block.len();
    }
    true
}

/// [`only_xml_chars`] for the bytes at `start..end` of `bytes` (a sequence
/// may run on past `end`).
fn xml_chars_from(bytes: &[u8], start: usize, end: usize) -> bool {
    let mut i = start;
    while let Some(&b) = bytes.get(i).filter(|_| i < end) {
        match b {
            b'\t' | b'\n' | b'\r' => {}
            0..0x20 => return false,
            0xEF if matches!(bytes.get(i + 1..i + 3), Some([0xBF, 0xBE | 0xBF])) => return false,
            // `]]>` may not appear in text; in an attribute it may, but no
            // publish has it: all of it is left to the validating path.
            b']' if bytes.get(i + 1..i + 3) == Some(b"]>") => return false,
            // The validating parser refuses a character reference of more
            // than 8 digits (`&#000000065;`); none of 7 or fewer is doubtful.
            b'&' if bytes.get(i + 1) == Some(&b'#') => {
                let digits = bytes
                    .get(i + 2..)
                    .unwrap_or_default()
                    .iter()
                    .skip_while(|&&b| b == b'x')
                    .take_while(|b| b.is_ascii_hexdigit())
                    .count();
                if digits > 7 {
                    return false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    true
}

/// The light tree of one element, or `None` if anything about it is doubtful.
pub(crate) fn light_tree(stanza: &[u8]) -> Option<LightElement<'_>> {
    let text = std::str::from_utf8(stanza).ok()?;
    if !only_xml_chars(stanza) {
        return None;
    }
    let mut reader = NsReader::from_str(text);
    let mut open: Vec<LightElement> = Vec::new();
    loop {
        let (resolved, event) = reader.read_resolved_event().ok()?;
        let ns = match (&event, resolved) {
            (Event::Start(_) | Event::Empty(_), ResolveResult::Bound(ns)) => {
                let ns = std::str::from_utf8(ns.as_ref()).ok()?;
                Some(match KNOWN.iter().find(|k| **k == ns) {
                    Some(known) => Cow::Borrowed(*known),
                    None => Cow::Owned(ns.to_owned()),
                })
            }
            // No default namespace declared within the stanza: the stream's.
            (Event::Start(_) | Event::Empty(_), ResolveResult::Unbound) => {
                Some(Cow::Borrowed(ns::COMPONENT))
            }
            (Event::Start(_) | Event::Empty(_), ResolveResult::Unknown(_)) => return None,
            _ => None,
        };
        match event {
            // A publish nests 8 deep; deeper is not one (and a deep tree
            // would be dropped recursively).
            Event::Start(_) if open.len() >= MAX_DEPTH => return None,
            Event::Start(start) => open.push(element(text, &start, ns?)?),
            Event::Empty(start) => {
                let done = element(text, &start, ns?)?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return whole(&mut reader, done),
                }
            }
            Event::End(_) => {
                let done = open.pop()?;
                match open.last_mut() {
                    Some(parent) => parent.children.push(done),
                    None => return whole(&mut reader, done),
                }
            }
            Event::Text(t) => {
                let parent = open.last_mut()?;
                let piece = t.xml10_content().ok()?;
                if parent.text.is_empty() {
                    parent.text = piece;
                } else {
                    parent.text.to_mut().push_str(&piece);
                }
            }
            Event::GeneralRef(r) => {
                let parent = open.last_mut()?;
                match r.resolve_char_ref().ok()? {
                    Some(c) if is_xml_char(c) => parent.text.to_mut().push(c),
                    Some(_) => return None,
                    None => parent
                        .text
                        .to_mut()
                        .push_str(resolve_predefined_entity(&r.decode().ok()?)?),
                }
            }
            // CDATA, comments, PIs, declarations, DOCTYPE, end of input.
            _ => return None,
        }
    }
}

/// `root` if nothing follows it.
fn whole<'a>(reader: &mut NsReader<&[u8]>, root: LightElement<'a>) -> Option<LightElement<'a>> {
    matches!(reader.read_event().ok()?, Event::Eof).then_some(root)
}

/// A light element for a start tag: local name, namespace, and the attributes
/// without a prefix (namespace declarations and prefixed ones are not asked
/// for by name). Refuses `xmlns=''` and values with references, `<` or
/// characters that attribute-value normalization would change.
fn element<'a>(
    text: &'a str,
    start: &BytesStart<'_>,
    ns: Cow<'static, str>,
) -> Option<LightElement<'a>> {
    if !strict_tag(start.as_ref()) {
        return None;
    }
    // The reserved prefixes name no element a publish has (the validating
    // parser refuses `xml:` on an element).
    if start.name().prefix().is_some_and(|p| {
        p.as_ref()
            .get(..3)
            .is_some_and(|x| x.eq_ignore_ascii_case(b"xml"))
    }) {
        return None;
    }
    let name = borrow(text, start.local_name().as_ref())?;
    let mut attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.ok()?;
        let raw = attr.value.as_ref();
        if raw
            .iter()
            .any(|b| matches!(b, b'&' | b'<' | b'\t' | b'\n' | b'\r'))
        {
            return None;
        }
        let key = attr.key.as_ref();
        // Undeclaring the default namespace, binding a prefix to nothing
        // or to one of the two reserved namespaces (which XML namespaces
        // forbid, and quick-xml lets through: both found by the
        // differential fuzz target), or (re)binding a reserved `xml…`
        // prefix: left to the validating path.
        let declares = key == b"xmlns" || key.starts_with(b"xmlns:");
        if declares
            && (raw.is_empty()
                || RESERVED_NAMESPACES.contains(&raw)
                || key
                    .get(6..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"xml")))
        {
            return None;
        }
        // Namespace declarations and `xml:` are not the element's own; any
        // other prefix would have to be resolved: left to the validating path.
        if key.starts_with(b"xmlns:") || key.starts_with(b"xml:") || key == b"xmlns" {
            continue;
        }
        if key.contains(&b':') {
            return None;
        }
        attrs.push((borrow(text, key)?, borrow(text, raw)?));
    }
    Some(LightElement {
        name,
        ns,
        attrs,
        children: Vec::new(),
        text: Cow::Borrowed(""),
    })
}

/// Whether a start tag's inside (`name attr='v' …`, as quick-xml hands it
/// over, without an empty element's `/`) is what the validating parser
/// accepts: ASCII names, whitespace before each attribute, quoted values.
/// quick-xml itself is lenient there (`a='1'#b='2'` reads as two
/// attributes); anything else, or any non-ASCII name, is left to the
/// validating path (found by the differential fuzz target).
fn strict_tag(raw: &[u8]) -> bool {
    /// An ASCII NCName (no colon).
    fn ncname(raw: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while let Some(&b) = raw.get(*i) {
            let ok = b.is_ascii_alphabetic()
                || b == b'_'
                || (*i > start && (b.is_ascii_digit() || b == b'-' || b == b'.'));
            if !ok {
                break;
            }
            *i += 1;
        }
        *i > start && *i - start <= MAX_TOKEN
    }
    /// A qualified name: `local` or `prefix:local`.
    fn name(raw: &[u8], i: &mut usize) -> bool {
        if !ncname(raw, i) {
            return false;
        }
        if raw.get(*i) == Some(&b':') {
            *i += 1;
            return ncname(raw, i);
        }
        true
    }
    fn spaces(raw: &[u8], i: &mut usize) -> bool {
        let start = *i;
        while matches!(raw.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
        *i > start
    }
    let mut i = 0;
    if !name(raw, &mut i) {
        return false;
    }
    loop {
        let spaced = spaces(raw, &mut i);
        match raw.get(i) {
            None => return true,
            // Something right after a name or value is not XML: `#b='2'`,
            // or a second `/` (quick-xml took off an empty element's one).
            Some(_) if !spaced => return false,
            Some(_) => {}
        }
        if !name(raw, &mut i) {
            return false;
        }
        spaces(raw, &mut i);
        if raw.get(i) != Some(&b'=') {
            return false;
        }
        i += 1;
        spaces(raw, &mut i);
        let Some(&quote @ (b'\'' | b'"')) = raw.get(i) else {
            return false;
        };
        i += 1;
        let value_start = i;
        while let Some(&b) = raw.get(i) {
            if b == quote {
                break;
            }
            if b == b'<' {
                return false;
            }
            i += 1;
        }
        if raw.get(i) != Some(&quote) || i - value_start > MAX_TOKEN {
            return false;
        }
        i += 1;
    }
}

/// The longest name or attribute value read here. The validating parser
/// (rxml) refuses tokens of 8 KiB and more; half that leaves no doubt, and
/// no publish comes near it.
const MAX_TOKEN: usize = 4096;

/// `part` as a slice of `text` when it is one (what quick-xml hands out when
/// reading from a string), so nothing is copied; otherwise a copy.
fn borrow<'a>(text: &'a str, part: &[u8]) -> Option<Cow<'a, str>> {
    let offset = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    match offset
        .checked_add(part.len())
        .and_then(|end| text.get(offset..end))
    {
        Some(slice) if slice.as_bytes() == part => Some(Cow::Borrowed(slice)),
        _ => std::str::from_utf8(part)
            .ok()
            .map(|s| Cow::Owned(s.to_owned())),
    }
}

/// XML 1.0 `Char` (a character reference may not name anything else).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
mod tests;
