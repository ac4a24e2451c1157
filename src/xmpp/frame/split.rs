//! Finding where each top-level stanza ends without parsing it, so that a
//! stanza the application can read on its own fast path never goes through
//! the validating parser and tree builder (BENCHMARKS.md: they were the top
//! cost per notification).
//!
//! The scan tracks only what decides element boundaries: tags, quoted
//! attribute values and nesting depth. Whatever it does not model (comments,
//! processing instructions, CDATA sections, a DOCTYPE, text between stanzas,
//! the stream's end tag) hands the rest of the stream back to the validating
//! parser for good, so every such input is treated exactly as before.

use super::FrameError;

/// Where the scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between stanzas: only whitespace expected.
    Between,
    /// Saw `<` between stanzas.
    OpenAtTop,
    /// Inside a start tag; `quote` is the open attribute quote, `slash`
    /// whether the last byte outside quotes was `/`.
    StartTag { quote: Option<u8>, slash: bool },
    /// In element content.
    Content,
    /// Saw `<` in content.
    OpenInContent,
    /// Inside an end tag.
    EndTag,
}

/// What [`Splitter::split`] asks of its caller next.
#[derive(Debug)]
pub(super) enum Split {
    /// All input consumed; complete stanzas were appended.
    NeedMore,
    /// Something the scan does not model: parse these bytes (the unfinished
    /// stanza and the rest of the input) and everything after with the
    /// validating parser.
    Strict(Vec<u8>),
}

/// Splits a stream body (after the header) into top-level elements.
#[derive(Debug)]
pub(super) struct Splitter {
    state: State,
    depth: usize,
    /// The bytes of the unfinished stanza.
    stanza: Vec<u8>,
}

impl Splitter {
    pub(super) fn new() -> Self {
        Self {
            state: State::Between,
            depth: 0,
            stanza: Vec::new(),
        }
    }

    /// Scans `data`, appending each complete stanza to `out`.
    pub(super) fn split(
        &mut self,
        data: &[u8],
        max_stanza_bytes: usize,
        out: &mut Vec<Vec<u8>>,
    ) -> Result<Split, FrameError> {
        // Start of the unfinished stanza within `data`, if it began here.
        let mut start = (self.state != State::Between).then_some(0);
        let mut i = 0;
        while let Some(rest) = data.get(i..).filter(|rest| !rest.is_empty()) {
            // Where nothing but one byte can change the state, jump to it.
            let skip = match self.state {
                State::Content => memchr::memchr(b'<', rest),
                State::StartTag { quote: Some(q), .. } => memchr::memchr(q, rest),
                State::EndTag => memchr::memchr(b'>', rest),
                _ => Some(0),
            };
            let Some(skip) = skip else { break };
            i += skip;
            let Some(&byte) = data.get(i) else { break };
            let next = match self.state {
                State::Between if byte.is_ascii_whitespace() => State::Between,
                State::Between if byte == b'<' => {
                    start = Some(i);
                    State::OpenAtTop
                }
                State::Between => return Ok(self.strict(data, i)),
                State::OpenAtTop | State::OpenInContent
                    if matches!(byte, b'!' | b'?') || (byte == b'/' && self.depth == 0) =>
                {
                    return Ok(self.strict(data, start.unwrap_or(0)));
                }
                State::OpenAtTop | State::OpenInContent if byte == b'/' => State::EndTag,
                State::OpenAtTop | State::OpenInContent => {
                    self.depth += 1;
                    State::StartTag {
                        quote: None,
                        slash: false,
                    }
                }
                State::StartTag {
                    quote: Some(q),
                    slash,
                } => State::StartTag {
                    quote: (byte != q).then_some(q),
                    slash: slash && byte != q,
                },
                State::StartTag { quote: None, slash } => match byte {
                    b'\'' | b'"' => State::StartTag {
                        quote: Some(byte),
                        slash: false,
                    },
                    b'>' if slash => self.close_element(),
                    b'>' => State::Content,
                    _ => State::StartTag {
                        quote: None,
                        slash: byte == b'/',
                    },
                },
                State::Content if byte == b'<' => State::OpenInContent,
                State::Content => State::Content,
                State::EndTag if byte == b'>' => self.close_element(),
                State::EndTag => State::EndTag,
            };
            let completed = next == State::Between && self.state != State::Between;
            self.state = next;
            if completed {
                if let Some(s) = start.take() {
                    self.stanza
                        .extend_from_slice(data.get(s..=i).unwrap_or_default());
                }
                if self.stanza.len() > max_stanza_bytes {
                    return Err(FrameError::TooLarge(max_stanza_bytes));
                }
                out.push(std::mem::take(&mut self.stanza));
            }
            i += 1;
        }
        if let Some(s) = start {
            self.stanza
                .extend_from_slice(data.get(s..).unwrap_or_default());
        }
        if self.stanza.len() > max_stanza_bytes {
            return Err(FrameError::TooLarge(max_stanza_bytes));
        }
        Ok(Split::NeedMore)
    }

    /// One element closed; back between stanzas when it was the top one.
    fn close_element(&mut self) -> State {
        self.depth = self.depth.saturating_sub(1);
        if self.depth == 0 {
            State::Between
        } else {
            State::Content
        }
    }

    /// Gives up: the unfinished stanza and `data[from..]`, for the parser.
    fn strict(&mut self, data: &[u8], from: usize) -> Split {
        let mut rest = std::mem::take(&mut self.stanza);
        rest.extend_from_slice(data.get(from..).unwrap_or_default());
        Split::Strict(rest)
    }
}
