//! Registration commands of every dialect, as a client could send them on
//! a component stream: each one is planned without a panic; a form error,
//! a blank form or a cancel, written by the reply writer, reads back as the
//! same stanza; a device to register or unregister names a configured
//! provider, a token in its normal form, and an identity of the right kind.
#![no_main]

mod context;

use libfuzzer_sys::fuzz_target;
use pushgate::app::commands::{CommandPlan, normalize_token, plan, provider_kind};
use pushgate::app::{Request, classify, replies};
use pushgate::registry::IdentityKind;
use pushgate::xmpp::{StreamEvent, StreamReader};

const HEADER: &[u8] = b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
    xmlns='jabber:component:accept' id='s1' from='localhost'>";

fuzz_target!(|data: &[u8]| {
    let ctx = context::context();
    for event in events(data) {
        let StreamEvent::Stanza(stanza) = event else {
            continue;
        };
        let Request::Command { header, command, .. } = classify(&stanza) else {
            continue;
        };
        let reply = match plan(&command, ctx, "session-1") {
            Ok((_, CommandPlan::Reply(payload))) => header.result(Some(payload)),
            Ok((_, CommandPlan::Register(device) | CommandPlan::Unregister(device))) => {
                let kind = provider_kind(ctx, &device.provider).expect("a configured provider");
                if let Some(token) = &device.token {
                    assert_eq!(normalize_token(kind, token).as_ref(), Ok(token), "normal form");
                }
                match device.identity_kind() {
                    IdentityKind::Token => assert_eq!(device.token.as_deref(), Some(device.identity())),
                    IdentityKind::DeviceId => assert!(
                        device.identity().starts_with("p2:") || device.identity().starts_with("appserver:"),
                        "{device:?}"
                    ),
                }
                continue;
            }
            Err(fault) => header.error(&fault),
        };
        // Written as the gateway writes it, read back as a server reads it.
        let text = replies::serialize(&reply);
        let back = events(text.as_bytes());
        assert!(
            matches!(back.as_slice(), [StreamEvent::Stanza(read)] if *read == reply),
            "a reply is the same stanza read back: {text}"
        );
    }
});

/// What the validating reader makes of `data` on a component stream.
fn events(data: &[u8]) -> Vec<StreamEvent> {
    let mut reader = StreamReader::new(1 << 20);
    let mut events = Vec::new();
    reader.feed(HEADER, &mut events).expect("the header is valid");
    events.clear();
    let _ = reader.feed(data, &mut events);
    events
}
