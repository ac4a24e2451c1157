//! The stream reader (validating parser, raw splitter) and the stanza
//! classifier (every command dialect's forms, every publish shape) fed
//! arbitrary bytes after a valid header: no panic, bounded work.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::app::{classify, fast};
use pushgate::xmpp::{StreamEvent, StreamReader};

const HEADER: &[u8] = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
    xmlns='jabber:component:accept' id='s1' from='localhost'>";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let mut reader = StreamReader::new(64 * 1024);
    let mut events = Vec::new();
    if mode & 1 == 0 {
        // The header too is the peer's.
        let _ = reader.feed(HEADER, &mut events);
    }
    if mode & 2 == 0 {
        reader.split_raw();
    }
    // In pieces, as a socket delivers them.
    let step = usize::from(mode >> 2).max(1);
    for chunk in data.chunks(step) {
        if reader.feed(chunk, &mut events).is_err() {
            break;
        }
        for event in events.drain(..) {
            match event {
                StreamEvent::Stanza(element) => {
                    let _ = classify(&element);
                }
                StreamEvent::Raw(raw) => {
                    if fast::publish_or_command(&raw).is_none()
                        && let Ok(element) = reader.parse_stanza(&raw)
                    {
                        let _ = classify(&element);
                    }
                }
                StreamEvent::Header { .. } | StreamEvent::End => {}
            }
        }
        if mode & 2 == 0 {
            reader.split_raw();
        }
    }
});
