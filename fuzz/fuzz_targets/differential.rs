//! Differential: any stanza the fast reader accepts (a publish or a
//! command) must give exactly the request the validating reader gives for
//! it on a component stream (node, secret, notification, publisher,
//! account, command form, addressing), and the replies built for it must
//! serialize and parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushgate::app::{Request, StanzaFault, classify, fast, replies};
use pushgate::xmpp::{FrameError, StreamEvent, StreamReader};

const HEADER: &[u8] = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
    xmlns='jabber:component:accept' id='s1' from='localhost'>";

fuzz_target!(|data: &[u8]| {
    let Some(quick) = fast::publish_or_command(data) else {
        return;
    };
    let (fed, events) = on_stream(data);
    let validated = match (&fed, events.as_slice()) {
        (Ok(()), [StreamEvent::Stanza(element)]) => classify(element),
        _ => panic!(
            "the fast path accepted what the validating reader does not: {fed:?} {events:?}\n{}",
            String::from_utf8_lossy(data)
        ),
    };
    assert_eq!(quick, validated, "{}", String::from_utf8_lossy(data));
    let (Request::Publish { header, .. } | Request::Command { header, .. }) = &quick else {
        panic!("the fast path returned something other than a publish or a command");
    };
    // As the server reads them: one stanza each, on a component stream.
    for reply in [
        header.result(None),
        header.error(&StanzaFault::new(
            "cancel",
            "item-not-found",
            "no such node",
        )),
    ] {
        let (fed, events) = on_stream(replies::serialize(&reply).as_bytes());
        fed.expect("a reply is well-formed");
        match events.as_slice() {
            [StreamEvent::Stanza(back)] => assert_eq!(back, &reply),
            other => panic!("a reply is not one stanza: {other:?}"),
        }
    }
});

/// What the validating reader makes of `data` after a component stream's header.
fn on_stream(data: &[u8]) -> (Result<(), FrameError>, Vec<StreamEvent>) {
    let mut reader = StreamReader::new(1 << 20);
    let mut events = Vec::new();
    reader
        .feed(HEADER, &mut events)
        .expect("the header is valid");
    events.clear();
    let fed = reader.feed(data, &mut events);
    (fed, events)
}
