//! Captured publishes from `docs/protocol.md` §4 and malformed variants.

use super::*;
use crate::app::{Request, classify};
use xmpp_parsers::minidom::Element;

pub(crate) const PROSODY: &str = "<iq xmlns='jabber:component:accept' type='set' from='localhost' to='push.localhost' id='c5d92cfd9161b3274ed2facadae09a9494ccc21640169f0d727495f89894c352'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='test-node-0001'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'><value>New Message!</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>push-secret-0001</value></field></x></publish-options></pubsub></iq>";

pub(crate) const PROSODY_NO_BODY: &str = "<iq xmlns='jabber:component:accept' type='set' from='localhost' to='push.localhost' id='p2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='test-node-0001'><item><notification xmlns='urn:xmpp:push:0'><x type='form' xmlns='jabber:x:data'><field type='hidden' var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field type='text-single' var='message-count'><value>1</value></field><field type='text-single' var='pending-subscription-count'/><field type='jid-single' var='last-message-sender'/><field type='text-single' var='last-message-body'/></x></notification></item></publish></pubsub></iq>";

pub(crate) const EJABBERD: &str = "<iq xmlns='jabber:component:accept' to='push.localhost' from='localhost' type='set' id='rr-1795315965746-13344124416284165710-1XXKvKS/UHJxmZ0XdYyMGV7Z25I=-129145796'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='test-node-0001'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:push:summary</value></field><field var='last-message-body' type='text-single' label='The body text of the last received message'><value>New message</value></field></x></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>push-secret-0001</value></field></x></publish-options></pubsub></iq>";

pub(crate) const EJABBERD_EMPTY: &str = "<iq xmlns='jabber:component:accept' to='push.localhost' from='localhost' type='set' id='e2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='test-node-0001'><item><notification xmlns='urn:xmpp:push:0'/></item></publish></pubsub></iq>";

pub(crate) const TIGASE: &str = "<iq xmlns='jabber:component:accept' type='set' from='example.com' to='push.example.com' id='t1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>0</value></field><field var='last-message-sender'><value>bob@example.com/phone</value></field></x><priority xmlns='tigase:push:priority:0'>high</priority><groupchat xmlns='http://tigase.org/protocol/muc#offline'><nickname>bobby</nickname></groupchat></notification></item></publish></pubsub></iq>";

pub(crate) const TIGASE_ENCRYPTED_CALL: &str = "<iq xmlns='jabber:component:accept' type='set' from='example.com' to='push.example.com' id='t2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><encrypted xmlns='tigase:push:encrypt:0' iv='aXYxMjM0NTY3ODkw' type='voip'>Y2lwaGVy+/=</encrypted><jingle xmlns='tigase:push:jingle:0' action='propose' sid='call-1'><media>audio</media></jingle></notification></item></publish></pubsub></iq>";

/// What Tigase publishes when an account is deleted: the summary form without
/// a sender or body, and the account event (`docs/protocol.md` §4).
pub(crate) const TIGASE_ACCOUNT_REMOVED: &str = "<iq xmlns='jabber:component:accept' type='set' from='example.com' to='push.example.com' id='t3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x xmlns='jabber:x:data'><field var='FORM_TYPE'><value>urn:xmpp:push:summary</value></field><field var='message-count'><value>0</value></field></x><event xmlns='http://tigase.org/protocol/account#event' name='account-removed'/></notification></item></publish><publish-options><x type='submit' xmlns='jabber:x:data'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>s</value></field></x></publish-options></pubsub></iq>";

fn publish(xml: &str) -> Result<PublishRequest, StanzaFault> {
    let el: Element = xml.parse().expect("test stanza parses");
    match classify(&el) {
        Request::Publish { request, .. } => Ok(request),
        Request::Invalid { fault, .. } => Err(fault),
        other => panic!("not a publish: {other:?}"),
    }
}

#[test]
fn captured_publishes_become_notifications() {
    struct Case {
        name: &'static str,
        xml: &'static str,
        count: Option<u32>,
        body: Option<&'static str>,
        sender: Option<&'static str>,
        secret: Option<&'static str>,
        priority: Priority,
    }
    let cases = [
        Case {
            name: "prosody",
            xml: PROSODY,
            count: Some(1),
            body: Some("New Message!"),
            sender: None,
            secret: Some("push-secret-0001"),
            priority: Priority::High,
        },
        Case {
            name: "prosody without body",
            xml: PROSODY_NO_BODY,
            count: Some(1),
            body: None,
            sender: None,
            secret: None,
            priority: Priority::Low,
        },
        Case {
            name: "ejabberd",
            xml: EJABBERD,
            count: None,
            body: Some("New message"),
            sender: None,
            secret: Some("push-secret-0001"),
            priority: Priority::High,
        },
        Case {
            name: "ejabberd empty",
            xml: EJABBERD_EMPTY,
            count: None,
            body: None,
            sender: None,
            secret: None,
            priority: Priority::Low,
        },
        Case {
            name: "tigase",
            xml: TIGASE,
            count: Some(0),
            body: None,
            sender: Some("bob@example.com/phone"),
            secret: None,
            priority: Priority::High,
        },
    ];
    for c in cases {
        let p = publish(c.xml).unwrap_or_else(|e| panic!("{}: {e:?}", c.name));
        assert_eq!(
            p.node,
            if c.name == "tigase" {
                "n"
            } else {
                "test-node-0001"
            },
            "{}",
            c.name
        );
        assert_eq!(p.notification.message_count, c.count, "{}", c.name);
        assert_eq!(p.notification.body.as_deref(), c.body, "{}", c.name);
        assert_eq!(p.notification.sender.as_deref(), c.sender, "{}", c.name);
        assert_eq!(p.secret.as_deref(), c.secret, "{}", c.name);
        assert_eq!(p.notification.priority(), c.priority, "{}", c.name);
    }
}

#[test]
fn tigase_extensions_are_read_and_encrypted_is_kept_verbatim() {
    let p = publish(TIGASE).expect("tigase");
    assert_eq!(p.notification.nickname.as_deref(), Some("bobby"));
    let p = publish(TIGASE_ENCRYPTED_CALL).expect("encrypted");
    let e = p.notification.encrypted.as_ref().expect("encrypted");
    assert_eq!(e.payload, "Y2lwaGVy+/=");
    assert_eq!(e.iv, "aXYxMjM0NTY3ODkw");
    assert_eq!(p.notification.jingle_sid.as_deref(), Some("call-1"));
    assert!(p.notification.is_call());
    assert_eq!(p.notification.priority(), Priority::High, "a call rings");
}

#[test]
fn tigase_account_removed_is_read_and_nothing_else_is_taken_for_it() {
    let p = publish(TIGASE_ACCOUNT_REMOVED).expect("account removed");
    assert!(p.notification.account_removed);
    assert_eq!(p.secret.as_deref(), Some("s"));
    for xml in [
        PROSODY,
        EJABBERD,
        EJABBERD_EMPTY,
        TIGASE,
        TIGASE_ENCRYPTED_CALL,
    ] {
        assert!(
            !publish(xml).expect(xml).notification.account_removed,
            "{xml}"
        );
    }
    for other in [
        "<event xmlns='http://tigase.org/protocol/account#event' name='account-created'/>",
        "<event xmlns='http://tigase.org/protocol/account#event'/>",
        "<event xmlns='urn:example:other' name='account-removed'/>",
    ] {
        let xml = TIGASE_ACCOUNT_REMOVED.replace(
            "<event xmlns='http://tigase.org/protocol/account#event' name='account-removed'/>",
            other,
        );
        assert!(
            !publish(&xml).expect(other).notification.account_removed,
            "{other}"
        );
    }
}

#[test]
fn malformed_publishes_are_bad_requests_not_panics() {
    let cases = [
        "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='m1'><pubsub xmlns='http://jabber.org/protocol/pubsub'/></iq>",
        "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='m2'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish/></pubsub></iq>",
        "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='m3'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='  '/></pubsub></iq>",
    ];
    for xml in cases {
        let fault = publish(xml).expect_err(xml);
        assert_eq!(
            (fault.kind, fault.condition),
            ("modify", "bad-request"),
            "{xml}"
        );
    }
}

#[test]
fn odd_values_are_dropped_not_fatal() {
    let xml = "<iq xmlns='jabber:component:accept' type='set' from='localhost' id='o1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='n'><item><notification xmlns='urn:xmpp:push:0'><x type='submit' xmlns='jabber:x:data'><field var='message-count'><value>lots</value></field><field var='last-message-body'><value>   </value></field></x><priority xmlns='tigase:push:priority:0'>urgent</priority></notification></item></publish></pubsub></iq>";
    let p = publish(xml).expect("lenient");
    assert_eq!(p.notification.message_count, None);
    assert_eq!(p.notification.body, None);
    assert_eq!(p.notification.explicit_priority, None);
}

#[test]
fn a_publish_from_a_user_jid_is_forbidden_on_both_paths() {
    for from in ["mallory@localhost/phone", "mallory@localhost"] {
        let xml = PROSODY.replace("from='localhost'", &format!("from='{from}'"));
        let fault = publish(&xml).expect_err(from);
        assert_eq!(
            (fault.kind, fault.condition),
            ("auth", "forbidden"),
            "{from}"
        );
        // The fast path leaves it to the validating one, or refuses it alike.
        match crate::app::fast::publish(xml.as_bytes()) {
            None => {}
            Some(Request::Invalid { fault, .. }) => {
                assert_eq!(
                    (fault.kind, fault.condition),
                    ("auth", "forbidden"),
                    "{from}"
                );
            }
            other => panic!("{from}: {other:?}"),
        }
    }
    assert!(publish(&PROSODY.replace("from='localhost'", "from='localhost/server'")).is_ok());
}
