//! Untrusted input never panics: thousands of mutated stanzas (bytes flipped,
//! cut, duplicated, inserted) go through the stream framing and the app's
//! classification. Deterministic (seeded), so a failure reproduces.

use crate::support::harness::{
    ejabberd_empty_publish, ejabberd_publish, prosody_publish, register_one_step,
};
use pushgate::app::{Request, classify};
use pushgate::xmpp::{StreamEvent, StreamReader};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const HEADER: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='x' from='push.localhost'>";

fn corpus() -> Vec<String> {
    let token = crate::support::apns_token(1);
    vec![
        prosody_publish("node-1", "localhost", "hello", Some("secret")),
        ejabberd_publish("node-1", "localhost"),
        ejabberd_empty_publish("node-1", "localhost"),
        register_one_step("alice@localhost/r", "apns", &token, Some(&token)),
        "<iq type='set' id='c1' from='a@b/c'><command xmlns='http://jabber.org/protocol/commands' node='register-device' sessionid='s' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>fcm</value></field></x></command></iq>".into(),
        "<iq type='get' id='d1' from='a@b/c'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>".into(),
        "<iq type='set' from='b' id='t2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0' iv='aXY=' type='voip'>Y2k=</encrypted><jingle xmlns='tigase:push:jingle:0' sid='c'/><priority xmlns='tigase:push:priority:0'>high</priority><groupchat xmlns='http://tigase.org/protocol/muc#offline'><nickname>n</nickname></groupchat></notification></item></publish></pubsub></iq>".into(),
    ]
}

fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut bytes = input.to_vec();
    for _ in 0..rng.random_range(1..6) {
        if bytes.is_empty() {
            break;
        }
        let at = rng.random_range(0..bytes.len());
        match rng.random_range(0..5) {
            0 => bytes[at] = rng.random(),
            1 => bytes.truncate(at),
            2 => {
                let noise = b"<>'\"&=/ :x";
                bytes.insert(at, noise[rng.random_range(0..noise.len())]);
            }
            3 => {
                let end = rng
                    .random_range(at..bytes.len().min(at + 40) + 1)
                    .min(bytes.len());
                let chunk = bytes[at..end].to_vec();
                bytes.splice(at..at, chunk);
            }
            _ => {
                bytes.remove(at);
            }
        }
    }
    bytes
}

#[test]
fn mutated_stanzas_never_panic_the_framing_or_the_app() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let corpus = corpus();
    let (mut stanzas, mut rejected_streams) = (0, 0);
    for round in 0..20_000 {
        let base = &corpus[round % corpus.len()];
        let input = mutate(&mut rng, base.as_bytes());
        let mut reader = StreamReader::new(64 * 1024);
        let mut events = Vec::new();
        reader
            .feed(HEADER.as_bytes(), &mut events)
            .expect("the header is fine");
        // Feed in random chunk sizes, like a socket would.
        let mut rest = input.as_slice();
        let mut failed = false;
        while !rest.is_empty() && !failed {
            let n = rng.random_range(1..=rest.len().min(64));
            let (chunk, tail) = rest.split_at(n);
            failed = reader.feed(chunk, &mut events).is_err();
            rest = tail;
        }
        rejected_streams += usize::from(failed);
        for event in events {
            if let StreamEvent::Stanza(el) = event {
                stanzas += 1;
                if let Request::Invalid { header, fault } = classify(&el) {
                    // Every refusal is answerable.
                    let _ = String::from(&header.error(&fault));
                }
            }
        }
    }
    // The mutations exercised both paths.
    assert!(stanzas > 1_000, "{stanzas} stanzas parsed");
    assert!(
        rejected_streams > 1_000,
        "{rejected_streams} streams rejected"
    );
}
