//! Incremental framing of an XMPP stream into header, stanzas and end, with a size
//! limit per stanza. Built on rxml (the parser xmpp-parsers uses) and minidom's
//! tree builder, so stanzas come out as namespace-correct [`Element`]s.
//!
//! After [`StreamReader::split_raw`], complete stanzas come out as bytes
//! instead ([`StreamEvent::Raw`], found by [`split`]); the application reads
//! the ones it has a fast path for and hands the others back to
//! [`StreamReader::parse_stanza`].

mod split;

use rxml::error::EndOrError;
use rxml::{Parse, RawEvent, RawParser};
use thiserror::Error;
use xmpp_parsers::minidom::{Element, tree_builder::TreeBuilder};

/// What the stream produced.
#[derive(Debug)]
pub enum StreamEvent {
    /// The peer's `<stream:stream>` header.
    Header {
        /// The stream id (used in the handshake digest).
        id: Option<String>,
        /// The `from` attribute.
        from: Option<String>,
    },
    /// One complete top-level element (a stanza, handshake or stream error).
    Stanza(Element),
    /// One complete top-level element, unparsed (after
    /// [`StreamReader::split_raw`]): the exact bytes of a well-nested
    /// element, not yet checked for well-formedness.
    Raw(Vec<u8>),
    /// The peer sent `</stream:stream>`.
    End,
}

/// Why the stream cannot go on; each maps to a stream error condition.
#[derive(Debug, Error)]
pub enum FrameError {
    /// The XML is not well-formed (or uses something XMPP forbids).
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// A stanza (or the stream header) exceeded the configured size.
    #[error("stanza larger than {0} bytes")]
    TooLarge(usize),
    /// Elements nested deeper than 64, or more than 64 attributes on one
    /// element.
    #[error("{0}")]
    TooComplex(&'static str),
}

/// Deepest element nesting accepted within a stanza. A publish nests 8 deep;
/// a tree much deeper would be dropped (and serialized) recursively, which a
/// small thread stack cannot afford.
pub(crate) const MAX_DEPTH: usize = 64;
/// Most attributes (namespace declarations included) on one element.
pub(crate) const MAX_ATTRIBUTES: usize = 64;

impl FrameError {
    /// The RFC 6120 stream error condition to send before closing.
    pub fn condition(&self) -> &'static str {
        match self {
            FrameError::NotWellFormed(_) => "not-well-formed",
            FrameError::TooLarge(_) | FrameError::TooComplex(_) => "policy-violation",
        }
    }
}

/// Turns bytes into [`StreamEvent`]s. Feed it whatever the socket gave.
pub struct StreamReader {
    parser: RawParser,
    tree: TreeBuilder,
    max_stanza_bytes: usize,
    /// Bytes consumed since the current stanza began.
    pending_bytes: usize,
    /// Whether a top-level element has begun and not yet ended.
    in_stanza: bool,
    header_seen: bool,
    /// Some while complete stanzas are handed out as bytes.
    splitter: Option<split::Splitter>,
    /// Attributes of the element whose head is being read.
    attributes: usize,
}

impl StreamReader {
    /// A reader that refuses stanzas larger than `max_stanza_bytes`.
    pub fn new(max_stanza_bytes: usize) -> Self {
        Self {
            parser: RawParser::new(),
            tree: TreeBuilder::new(),
            max_stanza_bytes,
            pending_bytes: 0,
            in_stanza: false,
            header_seen: false,
            splitter: None,
            attributes: 0,
        }
    }

    /// From now on, hands complete stanzas out as [`StreamEvent::Raw`] bytes.
    /// Takes effect only between stanzas after the header (else stanzas keep
    /// coming out parsed until a later call finds the parser between two);
    /// a no-op while already splitting.
    pub fn split_raw(&mut self) {
        if self.splitter.is_none() && self.header_seen && !self.in_stanza && self.tree.depth() == 1
        {
            self.splitter = Some(split::Splitter::new());
        }
    }

    /// Parses one stanza that came out as [`StreamEvent::Raw`], with the
    /// stream's namespace declarations in scope. Any error is the stream's:
    /// close it with [`FrameError::condition`].
    pub fn parse_stanza(&mut self, raw: &[u8]) -> Result<Element, FrameError> {
        let mut events = Vec::with_capacity(1);
        self.feed_parser(raw, &mut events)?;
        match (events.pop(), events.is_empty(), self.in_stanza) {
            (Some(StreamEvent::Stanza(stanza)), true, false) => Ok(stanza),
            _ => Err(FrameError::NotWellFormed(
                "not one complete element".to_owned(),
            )),
        }
    }

    /// Reads all of `data`, appending complete events to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), FrameError> {
        let Some(splitter) = self.splitter.as_mut() else {
            return self.feed_parser(data, out);
        };
        let mut stanzas = Vec::new();
        let split = splitter.split(data, self.max_stanza_bytes, &mut stanzas);
        out.extend(stanzas.into_iter().map(StreamEvent::Raw));
        match split? {
            split::Split::NeedMore => Ok(()),
            split::Split::Strict(rest) => {
                self.splitter = None;
                self.feed_parser(&rest, out)
            }
        }
    }

    /// Parses all of `data` with the validating parser.
    fn feed_parser(&mut self, data: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), FrameError> {
        let mut buf = data;
        loop {
            let before = buf.len();
            let result = self.parser.parse(&mut buf, false);
            // The header is bounded like a stanza.
            if self.in_stanza || !self.header_seen {
                self.pending_bytes += before - buf.len();
            }
            match result {
                Ok(Some(event)) => self.on_event(event, out)?,
                Ok(None) => return Ok(()),
                Err(EndOrError::NeedMoreData) => {
                    self.check_size()?;
                    return Ok(());
                }
                Err(EndOrError::Error(e)) => return Err(FrameError::NotWellFormed(e.to_string())),
            }
            self.check_size()?;
        }
    }

    fn check_size(&self) -> Result<(), FrameError> {
        if (self.in_stanza || !self.header_seen) && self.pending_bytes > self.max_stanza_bytes {
            Err(FrameError::TooLarge(self.max_stanza_bytes))
        } else {
            Ok(())
        }
    }

    fn on_event(&mut self, event: RawEvent, out: &mut Vec<StreamEvent>) -> Result<(), FrameError> {
        let depth = self.tree.depth();
        match event {
            // The stream element is depth 1: a stanza's elements are below it.
            RawEvent::ElementHeadOpen(..) if depth > MAX_DEPTH => {
                return Err(FrameError::TooComplex("elements nested too deep"));
            }
            RawEvent::ElementHeadOpen(..) => self.attributes = 0,
            RawEvent::Attribute(..) => {
                self.attributes += 1;
                if self.attributes > MAX_ATTRIBUTES {
                    return Err(FrameError::TooComplex("too many attributes on one element"));
                }
            }
            _ => {}
        }
        if depth <= 1 {
            match event {
                // Whitespace keepalives between stanzas: drop, never accumulate.
                RawEvent::Text(..) => return Ok(()),
                RawEvent::ElementHeadOpen(..) if self.header_seen => {
                    self.in_stanza = true;
                    self.pending_bytes = 0;
                }
                _ => {}
            }
        }
        if depth == 1 && matches!(event, RawEvent::ElementFoot(_)) {
            out.push(StreamEvent::End);
            return Ok(());
        }
        let closes_element = matches!(event, RawEvent::ElementFoot(_));
        let closes_head = matches!(event, RawEvent::ElementHeadClose(_));
        self.tree
            .process_event(event)
            .map_err(|e| FrameError::NotWellFormed(e.to_string()))?;
        if closes_head && !self.header_seen && self.tree.depth() == 1 {
            self.header_seen = true;
            let top = self.tree.top();
            out.push(StreamEvent::Header {
                id: top.and_then(|e| e.attr("id")).map(str::to_owned),
                from: top.and_then(|e| e.attr("from")).map(str::to_owned),
            });
        }
        if closes_element && self.tree.depth() == 1 {
            self.in_stanza = false;
            if let Some(stanza) = self.tree.unshift_child() {
                out.push(StreamEvent::Stanza(stanza));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
        xmlns='jabber:component:accept' id='a+b/c=' from='push.localhost'>";

    fn feed_all(
        reader: &mut StreamReader,
        chunks: &[&str],
    ) -> Result<Vec<StreamEvent>, FrameError> {
        let mut out = Vec::new();
        for chunk in chunks {
            reader.feed(chunk.as_bytes(), &mut out)?;
        }
        Ok(out)
    }

    #[test]
    fn splits_header_stanzas_and_end_across_chunk_boundaries() {
        let mut r = StreamReader::new(65536);
        let text = format!(
            "{HEADER}<handshake/> \n<iq type='get' id='1' from='a@b/c' xml:lang='en'><query xmlns='http://jabber.org/protocol/disco#info'/></iq></stream:stream>"
        );
        // Feed one byte at a time: the worst case for an incremental parser.
        let chunks: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        let events = feed_all(&mut r, &refs).expect("valid stream");
        assert!(matches!(&events[0], StreamEvent::Header { id: Some(id), .. } if id == "a+b/c="));
        assert!(
            matches!(&events[1], StreamEvent::Stanza(e) if e.is("handshake", "jabber:component:accept"))
        );
        match &events[2] {
            StreamEvent::Stanza(iq) => {
                assert!(iq.is("iq", "jabber:component:accept"));
                assert_eq!(iq.attr("from"), Some("a@b/c"));
                assert!(iq.has_child("query", "http://jabber.org/protocol/disco#info"));
            }
            other => panic!("expected iq, got {other:?}"),
        }
        assert!(matches!(events[3], StreamEvent::End));
    }

    #[test]
    fn refuses_an_oversized_stanza() {
        let mut r = StreamReader::new(4096);
        let big = format!(
            "{HEADER}<message><body>{}</body></message>",
            "x".repeat(10_000)
        );
        let err = feed_all(&mut r, &[&big]).expect_err("too large");
        assert_eq!(err.condition(), "policy-violation");
    }

    /// A stanza nested `levels` deep.
    fn nested(levels: usize) -> String {
        format!(
            "<iq type='set' id='d'>{}{}</iq>",
            "<a>".repeat(levels - 1),
            "</a>".repeat(levels - 1)
        )
    }

    #[test]
    fn a_ten_thousand_deep_stanza_is_refused_on_a_small_stack() {
        // Where the gateway's threads could be: 2 MiB. Without the limit the
        // tree would be dropped recursively, 10,000 frames deep.
        let result = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let mut r = StreamReader::new(1 << 20);
                feed_all(&mut r, &[HEADER, &nested(10_000)]).map(|_| ())
            })
            .expect("thread")
            .join()
            .expect("no abort, no panic");
        let e = result.expect_err("refused");
        assert!(matches!(e, FrameError::TooComplex(_)), "{e}");
        assert_eq!(e.condition(), "policy-violation");
    }

    #[test]
    fn depth_and_attribute_limits_are_exact() {
        let mut r = StreamReader::new(1 << 20);
        let events = feed_all(&mut r, &[HEADER, &nested(MAX_DEPTH)]).expect("at the limit");
        assert!(matches!(events.last(), Some(StreamEvent::Stanza(_))));
        let mut r = StreamReader::new(1 << 20);
        assert!(feed_all(&mut r, &[HEADER, &nested(MAX_DEPTH + 1)]).is_err());

        let attrs = |n: usize| {
            let list: String = (0..n).map(|i| format!(" a{i}='v'")).collect();
            format!("<iq type='get' id='x'><q{list}/></iq>")
        };
        let mut r = StreamReader::new(1 << 20);
        let events = feed_all(&mut r, &[HEADER, &attrs(MAX_ATTRIBUTES)]).expect("at the limit");
        assert!(matches!(events.last(), Some(StreamEvent::Stanza(_))));
        let mut r = StreamReader::new(1 << 20);
        let e = feed_all(&mut r, &[HEADER, &attrs(MAX_ATTRIBUTES + 1)]).expect_err("refused");
        assert!(matches!(e, FrameError::TooComplex(_)), "{e}");
    }

    #[test]
    fn a_stream_header_is_bounded_like_a_stanza() {
        let mut r = StreamReader::new(1024);
        let long = format!(
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='{}'",
            "x".repeat(4096)
        );
        let e = feed_all(&mut r, &[&long]).expect_err("refused before the header ends");
        assert!(matches!(e, FrameError::TooLarge(1024)), "{e}");
    }

    #[test]
    fn whitespace_keepalives_do_not_add_up_to_a_limit() {
        let mut r = StreamReader::new(4096);
        let mut out = Vec::new();
        r.feed(HEADER.as_bytes(), &mut out).expect("header");
        for _ in 0..10_000 {
            r.feed(b" ", &mut out).expect("whitespace is fine");
        }
        r.feed(b"<iq type='result' id='x'/>", &mut out)
            .expect("stanza");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn malformed_xml_is_not_well_formed() {
        let mut r = StreamReader::new(4096);
        let err = feed_all(&mut r, &[HEADER, "<iq></message>"]).expect_err("mismatched tags");
        assert_eq!(err.condition(), "not-well-formed");
    }

    /// A reader past the header, splitting raw.
    fn splitting(max: usize) -> StreamReader {
        let mut r = StreamReader::new(max);
        let mut out = Vec::new();
        r.feed(HEADER.as_bytes(), &mut out).expect("header");
        r.split_raw();
        r
    }

    fn raw(events: &[StreamEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                StreamEvent::Raw(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn splits_raw_stanzas_byte_by_byte_with_tricky_attributes() {
        let stanzas = [
            "<iq type='set' id='a>b/' to=\"x'/>\"><pubsub xmlns='p'><publish node='/>'/></pubsub></iq>",
            "<message a='1'/>",
            "<presence><x>text > with / slashes</x><y/></presence>",
        ];
        let mut r = splitting(4096);
        let text = format!(" \n{}\t{}{}", stanzas[0], stanzas[1], stanzas[2]);
        let mut out = Vec::new();
        for b in text.as_bytes() {
            r.feed(std::slice::from_ref(b), &mut out).expect("valid");
        }
        assert_eq!(raw(&out), stanzas);
        for stanza in stanzas {
            let el = r
                .parse_stanza(stanza.as_bytes())
                .expect("parses in the stream's scope");
            assert_eq!(el.ns(), "jabber:component:accept");
        }
        r.feed(b"</stream:stream>", &mut out).expect("end");
        assert!(matches!(out.last(), Some(StreamEvent::End)));
    }

    #[test]
    fn what_the_split_does_not_model_goes_to_the_parser() {
        let mut r = splitting(4096);
        let mut out = Vec::new();
        r.feed(b"<a/><b><![CDATA[<c>]]></b><d/>", &mut out)
            .expect("CDATA sections are the parser's to read");
        assert!(matches!(&out[0], StreamEvent::Raw(a) if a == b"<a/>"));
        assert!(
            out[1..].iter().all(|e| matches!(e, StreamEvent::Stanza(_))),
            "{out:?}"
        );
        let mut r = splitting(4096);
        let err = r
            .feed(b"<a/><b><!-- c --></b>", &mut out)
            .expect_err("XMPP forbids comments, as before");
        assert_eq!(err.condition(), "not-well-formed");
        let mut r = splitting(4096);
        assert!(
            r.feed(b"<a></b>", &mut out).is_ok(),
            "the split does not check names"
        );
        assert!(r.parse_stanza(b"<a></b>").is_err(), "the parser does");
    }

    #[test]
    fn refuses_an_oversized_raw_stanza_in_one_chunk_or_many() {
        let big = format!("<message><body>{}</body></message>", "x".repeat(10_000));
        let mut r = splitting(4096);
        let err = r
            .feed(big.as_bytes(), &mut Vec::new())
            .expect_err("too large");
        assert_eq!(err.condition(), "policy-violation");
        let mut r = splitting(4096);
        let err = big
            .as_bytes()
            .chunks(100)
            .try_for_each(|c| r.feed(c, &mut Vec::new()))
            .expect_err("too large");
        assert_eq!(err.condition(), "policy-violation");
    }

    #[test]
    fn splitting_starts_only_between_stanzas() {
        let mut r = StreamReader::new(4096);
        let mut out = Vec::new();
        r.feed(format!("{HEADER}<iq id='1'>").as_bytes(), &mut out)
            .expect("header and half a stanza");
        r.split_raw();
        r.feed(b"</iq>", &mut out).expect("rest");
        assert!(
            matches!(out.last(), Some(StreamEvent::Stanza(_))),
            "{out:?}"
        );
        r.split_raw();
        r.feed(b"<iq id='2'/>", &mut out).expect("next");
        assert!(matches!(out.last(), Some(StreamEvent::Raw(_))), "{out:?}");
        r.feed(b"<iq id='3'>", &mut out).expect("half");
        r.split_raw();
        r.feed(b"</iq>", &mut out).expect("other half");
        assert!(
            matches!(out.last(), Some(StreamEvent::Raw(b)) if b == b"<iq id='3'></iq>"),
            "a second call keeps the split going: {out:?}"
        );
    }
}
