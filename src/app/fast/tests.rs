//! The fast path must read every publish and command exactly as the
//! validating path does, and leave everything else (and anything doubtful)
//! to it.

use super::*;
use crate::app::classify;
use crate::app::publish::tests::{
    EJABBERD, EJABBERD_EMPTY, PROSODY, PROSODY_NO_BODY, TIGASE, TIGASE_ACCOUNT_REMOVED,
    TIGASE_ENCRYPTED_CALL,
};
use crate::xmpp::{StreamEvent, StreamReader};

const HEADER: &str = "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' \
    xmlns='jabber:component:accept' id='s1' from='localhost'>";

/// What the validating path makes of `stanza` on a component stream.
fn validating(stanza: &str) -> Request {
    let mut reader = StreamReader::new(1 << 20);
    let mut events = Vec::new();
    reader.feed(HEADER.as_bytes(), &mut events).expect("header");
    events.clear();
    reader
        .feed(stanza.as_bytes(), &mut events)
        .expect("test stanza is well-formed");
    match events.as_slice() {
        [StreamEvent::Stanza(el)] => classify(el),
        other => panic!("expected one stanza, got {other:?}"),
    }
}

/// Captured publishes, plus variants that exercise the XML corners a server
/// may produce (prefixes, double quotes, references, line ends, whitespace).
fn publishes() -> Vec<String> {
    let mut all: Vec<String> = [
        PROSODY,
        PROSODY_NO_BODY,
        EJABBERD,
        EJABBERD_EMPTY,
        TIGASE,
        TIGASE_ENCRYPTED_CALL,
        TIGASE_ACCOUNT_REMOVED,
    ]
    .map(str::to_owned)
    .to_vec();
    all.push(PROSODY.replace(
        "New Message!",
        "a &lt;b&gt; &amp; &apos;c&apos; &quot;d&quot; &#233;&#x1F600;",
    ));
    all.push(PROSODY.replace("New Message!", "line one\r\nline two\rthree"));
    all.push(PROSODY.replace('\'', "\""));
    all.push(PROSODY.replace("><", ">\n  <"));
    all.push(
        PROSODY
            .replace(
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'>",
                "<ps:pubsub xmlns:ps='http://jabber.org/protocol/pubsub'>",
            )
            .replace("</pubsub>", "</ps:pubsub>")
            .replace("<publish ", "<ps:publish ")
            .replace("</publish>", "</ps:publish>")
            .replace("<item>", "<ps:item>")
            .replace("</item>", "</ps:item>")
            .replace("<publish-options>", "<ps:publish-options>")
            .replace("</publish-options>", "</ps:publish-options>"),
    );
    // Elements in other namespaces are not the ones asked for.
    all.push(PROSODY.replace("<item>", "<item xmlns='urn:example:other'>"));
    all.push(PROSODY.replace(" xmlns='jabber:component:accept'", ""));
    all.push(PROSODY.replace("from='localhost'", "from='LocalHost'"));
    all.push(PROSODY.replace("node='test-node-0001'", "node='  spaced  '"));
    all.push(PROSODY.replace("<value>1</value>", "<value>1</value><value>2</value>"));
    all.push(EJABBERD.replace("type='set'", "type='set' xml:lang='en'"));
    all
}

#[test]
fn reads_every_publish_as_the_validating_path_does() {
    for stanza in publishes() {
        let expected = validating(&stanza);
        assert!(
            matches!(expected, Request::Publish { .. }),
            "test publish is one: {stanza}"
        );
        assert_eq!(publish(stanza.as_bytes()), Some(expected), "{stanza}");
    }
}

#[test]
fn leaves_everything_else_to_the_validating_path() {
    let cases = [
        // Not publishes.
        "<iq type='get' id='1' from='a@b/c'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>".to_owned(),
        "<iq type='result' id='2'/>".to_owned(),
        "<message from='a@b'><body>x</body></message>".to_owned(),
        // Publishes the validating path refuses, with its own error.
        PROSODY.replace(" id='c5d92cfd9161b3274ed2facadae09a9494ccc21640169f0d727495f89894c352'", ""),
        PROSODY.replace(" from='localhost'", ""),
        PROSODY.replace("from='localhost'", "from='@@'"),
        PROSODY.replace(" node='test-node-0001'", ""),
        PROSODY.replace("<publish-options>", "<extra/><publish-options>").replace("</pubsub></iq>", "</pubsub><second/></iq>"),
        PROSODY.replace("xmlns='jabber:component:accept'", "xmlns='jabber:client'"),
        PROSODY.replace("xmlns='jabber:component:accept'", "xmlns=''"),
        PROSODY.replace("<item>", "<item xmlns:empty=''>"),
        PROSODY.replace("<item>", "<item xmlns='http://www.w3.org/XML/1998/namespace'>"),
        PROSODY.replace("<item>", "<item xmlns:p='http://www.w3.org/2000/xmlns/'>"),
        PROSODY.replace("<item>", "<item xmlns:xml='http://www.w3.org/XML/1998/namespace'>"),
        PROSODY.replace("<item>", "<item xmlns:xmlfoo='urn:x'>"),
        PROSODY.replace("<item>", "<item xmlns:XMLfoo='urn:x'>"),
        // Doubtful XML.
        PROSODY.replace("New Message!", "<!-- note -->x"),
        PROSODY.replace("New Message!", "<![CDATA[x]]>"),
        PROSODY.replace("New Message!", "&unknown;"),
        PROSODY.replace("New Message!", "&#1;"),
        PROSODY.replace("New Message!", "bell\u{7}"),
        // Not XML characters, which the validating parser refuses.
        PROSODY.replace("New Message!", "x\u{FFFE}"),
        PROSODY.replace("New Message!", "x\u{FFFF}"),
        PROSODY.replace("New Message!", "&#xFFFE;"),
        PROSODY.replace("id='c5d9", "id='&amp;c5d9"),
        PROSODY.replace("<pubsub xmlns=", "<ps:pubsub xmlns="),
        PROSODY.replace("</iq>", "</iq><iq/>"),
        PROSODY.replace("</item>", "</itme>"),
        PROSODY.replace("type='set'", "type='set' type='set'"),
        // Attribute syntax quick-xml forgives and XML does not (fuzz finds).
        PROSODY.replace("type='text-single' var='pending", "type='text-single'#var='pending"),
        PROSODY.replace("type='text-single' var='pending", "type='text-single'var='pending"),
        PROSODY.replace("<item>", "<item #='x'>"),
        PROSODY.replace("<item>", "<item a=x>"),
        PROSODY.replace("<item>", "<item a>"),
        PROSODY.replace("<pubsub xmlns=", "<pubsub xmlns:="),
        PROSODY.replace("<item>", "<item :a='x'>"),
        PROSODY.replace("<item>", "<item a:b:c='x'>"),
        PROSODY.replace("<publish ", "<publish undeclared:a='x' "),
        PROSODY.replace("<value>1</value>", "<value>1</value><xml:d/>"),
        PROSODY.replace("New Message!", "a]]>b"),
        PROSODY.replace("<publish-options>", "<publish-options><x//>"),
        PROSODY.replace("New Message!", "&#000000065;"),
        PROSODY.replace("New Message!", "&#x000000041;"),
        PROSODY.replace("<publish-options>", "<publish-options><x a='b'//>"),
        // An attribute value the validating parser finds too long (8 KiB).
        PROSODY.replace("to='push.localhost'", &format!("to='{}'", "p".repeat(9000))),
        PROSODY.replace("New Message!", &format!("{}{}", "<a>".repeat(20), "</a>".repeat(20))),
    ];
    for stanza in cases {
        assert_eq!(publish(stanza.as_bytes()), None, "{stanza}");
    }
}

#[test]
fn the_validating_parser_refuses_what_the_fast_path_leaves_as_not_xml() {
    for bad in ["x\u{FFFE}", "x\u{FFFF}", "&#xFFFE;", "bell\u{7}"] {
        let stanza = PROSODY.replace("New Message!", bad);
        let mut reader = StreamReader::new(1 << 20);
        let mut events = Vec::new();
        reader.feed(HEADER.as_bytes(), &mut events).expect("header");
        assert!(
            reader.feed(stanza.as_bytes(), &mut events).is_err(),
            "{bad:?} accepted"
        );
    }
    // Characters just inside the ranges are fine on both paths.
    let fine = PROSODY.replace("New Message!", "\u{FFFD}\u{E000}\u{10FFFF}\u{D7FF}");
    assert!(matches!(
        publish(fine.as_bytes()),
        Some(Request::Publish { .. })
    ));
    assert_eq!(publish(fine.as_bytes()), Some(validating(&fine)));
}

#[test]
fn the_empty_result_is_the_reply_the_validating_path_builds() {
    let header = IqHeader {
        id: "a'b&c".to_owned(),
        from: Some("localhost".to_owned()),
        to: Some("push.localhost".to_owned()),
    };
    let built: xmpp_parsers::minidom::Element = header
        .empty_result()
        .parse()
        .expect("the empty result is XML");
    assert_eq!(built, header.result(None));
}

/// The differential fuzz target's corpus (`fuzz/seeds/differential`: the
/// captured publishes, the tricky shapes and every input the fuzzer found
/// disagreeing), replayed on the stable toolchain: what the fast path
/// accepts, the validating path reads the same.
#[test]
fn the_fuzz_corpus_reads_the_same_on_both_paths() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/differential");
    let mut accepted = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/seeds/differential") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("seed");
        let Some(quick) = publish_or_command(&data) else {
            continue;
        };
        accepted += 1;
        let mut reader = StreamReader::new(1 << 20);
        let mut events = Vec::new();
        reader.feed(HEADER.as_bytes(), &mut events).expect("header");
        events.clear();
        let fed = reader.feed(&data, &mut events);
        match (fed, events.as_slice()) {
            (Ok(()), [StreamEvent::Stanza(el)]) => {
                assert_eq!(quick, classify(el), "{}", path.display());
            }
            (fed, events) => panic!(
                "{}: the fast path accepted what the validating path does not: {fed:?} {events:?}",
                path.display()
            ),
        }
    }
    assert!(
        accepted >= 11,
        "the captured publishes and commands are in the corpus"
    );
}

/// Registration commands of the three dialects, one-step and two-step, as
/// clients send them (and in the XML corners a client library may produce).
fn commands() -> Vec<String> {
    const TIGASE_REGISTER: &str = "<iq type='set' id='r1' from='User1@Localhost/bench' to='push.localhost' xml:lang='en'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>fcm</value></field><field var='device-token'><value>tok-1</value></field><field var='device-name'><value>bench</value></field></x></command></iq>";
    let mut all: Vec<String> = [
        TIGASE_REGISTER,
        "<iq type='set' id='p2' from='juliet@capulet.lit/balcony' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='register-push-apns'><x xmlns='jabber:x:data' type='submit'><field var='token'><value>AABBCC</value></field><field var='device-id'><value>dev &amp; 1</value></field></x></command></iq>",
        "<iq type='set' id='a3' from='romeo@montague.lit' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='v1-register-push' action='complete' sessionid='abc'><x xmlns='jabber:x:data' type='submit'><field var='type'><value>fcm</value></field><field var='node'><value>n1</value></field><field var='token'><value>t1</value></field></x></command></iq>",
        "<iq type='set' id='b4' from='u@d' to='push.localhost'><command xmlns=\"http://jabber.org/protocol/commands\" node=\"unregister-device\"/></iq>",
        "<iq type='set' id='c5' from='u@d/r'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='cancel' sessionid='s'/></iq>",
    ]
    .map(str::to_owned)
    .to_vec();
    all.push(TIGASE_REGISTER.replace("><", ">\n  <"));
    all.push(TIGASE_REGISTER.replace("<value>bench</value>", "<value>a</value><value>b</value>"));
    all.push(TIGASE_REGISTER.replace("<value>bench</value>", ""));
    all.push(
        TIGASE_REGISTER
            .replace("<x xmlns='jabber:x:data'", "<d:x xmlns:d='jabber:x:data'")
            .replace("</x>", "</d:x>")
            .replace("<field ", "<d:field ")
            .replace("</field>", "</d:field>")
            .replace("<value>", "<d:value>")
            .replace("</value>", "</d:value>"),
    );
    // Not a form of the right namespace: read as none, on both paths.
    all.push(TIGASE_REGISTER.replace("jabber:x:data", "urn:example:other"));
    all
}

#[test]
fn reads_every_command_as_the_validating_path_does() {
    for stanza in commands() {
        let expected = validating(&stanza);
        assert!(
            matches!(expected, Request::Command { .. }),
            "test command is one: {stanza}"
        );
        assert_eq!(
            publish_or_command(stanza.as_bytes()),
            Some(expected),
            "{stanza}"
        );
        // Where commands must keep their stanza (a cluster), they are not read.
        assert_eq!(publish(stanza.as_bytes()), None, "{stanza}");
    }
    for stanza in publishes() {
        assert_eq!(
            publish_or_command(stanza.as_bytes()),
            Some(validating(&stanza)),
            "{stanza}"
        );
    }
}

#[test]
fn leaves_commands_the_validating_path_refuses_to_it() {
    let register = &commands()[0];
    let cases = [
        // From a server, without a from, without a node: each its own error.
        register.replace("from='User1@Localhost/bench'", "from='localhost'"),
        register.replace(" from='User1@Localhost/bench'", ""),
        register.replace(" node='register-device'", ""),
        register.replace("node='register-device'", "node=''"),
        register.replace("type='set'", "type='get'"),
        register.replace("</command>", "</command><second/>"),
    ];
    for stanza in cases {
        assert!(
            !matches!(validating(&stanza), Request::Command { .. }),
            "{stanza}"
        );
        assert_eq!(publish_or_command(stanza.as_bytes()), None, "{stanza}");
    }
    // Doubtful XML (the validating parser refuses comments outright).
    let comment = register.replace("<value>tok-1</value>", "<value>tok<!-- -->1</value>");
    assert_eq!(publish_or_command(comment.as_bytes()), None);
}

/// The block-at-a-time scan finds what the byte-by-byte one finds, wherever
/// a doubtful sequence falls, across block boundaries included.
#[test]
fn the_character_scan_finds_doubtful_bytes_at_every_offset() {
    let cases: [(&[u8], bool); 9] = [
        (b"]]>", false),
        (b"]]", true),
        ("\u{FFFE}".as_bytes(), false),
        ("\u{FFFD}".as_bytes(), true),
        (b"\x01", false),
        (b"\t\r\n", true),
        (b"&#00000065;", false),
        (b"&#0000065;", true),
        (b"&amp;", true),
    ];
    for (sequence, allowed) in cases {
        for at in 0..80 {
            let mut bytes = vec![b'a'; 100];
            bytes.splice(at..at + sequence.len(), sequence.iter().copied());
            assert_eq!(
                super::only_xml_chars(&bytes),
                allowed,
                "{sequence:?} at {at}"
            );
            assert_eq!(
                super::xml_chars_from(&bytes, 0, bytes.len()),
                allowed,
                "{sequence:?} at {at}, byte by byte"
            );
        }
    }
}
