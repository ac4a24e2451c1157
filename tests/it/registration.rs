//! The Tigase registration commands through the component stream.

use crate::support::harness::{Harness, error_of, next_id, node_of, register_one_step};
use crate::support::{WAIT, apns_token, eventually};

fn command_of(reply: &xmpp_parsers::minidom::Element) -> &xmpp_parsers::minidom::Element {
    reply
        .get_child("command", "http://jabber.org/protocol/commands")
        .unwrap_or_else(|| panic!("no command in {}", String::from(reply)))
}

#[tokio::test]
async fn two_step_and_one_step_registration_give_the_same_stable_node() {
    let mut h = Harness::start().await;
    let token = apns_token(7);
    // Step 1: execute without a form.
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='alice@localhost/alice-378da2' to='push.localhost' xml:lang='en'><command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'/></iq>", next_id()))
        .await;
    let command = command_of(&reply);
    assert_eq!(command.attr("status"), Some("executing"));
    let session = command.attr("sessionid").expect("sessionid").to_owned();
    let form = command.get_child("x", "jabber:x:data").expect("form");
    assert_eq!(form.attr("type"), Some("form"));
    let provider = form
        .children()
        .find(|f| f.attr("var") == Some("provider"))
        .expect("provider field");
    assert_eq!(provider.attr("type"), Some("list-single"));
    let options: Vec<String> = provider
        .children()
        .filter(|o| o.name() == "option")
        .map(|o| o.children().map(|v| v.text()).collect())
        .collect();
    assert_eq!(options, ["apns", "fcm"]);
    // Step 2: complete with the form.
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='alice@localhost/alice-378da2' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='register-device' sessionid='{session}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>apns</value></field><field var='device-token'><value>{token}</value></field></x></command></iq>", next_id()))
        .await;
    assert_eq!(command_of(&reply).attr("sessionid"), Some(session.as_str()));
    let node = node_of(&reply).expect("completed with a node");
    assert!(
        node.len() >= 22,
        "node {node} is too short to be unguessable"
    );
    // One step, another resource of the same account, upper-case token: same node.
    let again = h
        .register("Alice@localhost/other", "apns", &token.to_uppercase())
        .await;
    assert_eq!(again, node);
    // Another token or another account: another node.
    assert_ne!(
        h.register("alice@localhost/x", "apns", &apns_token(8))
            .await,
        node
    );
    assert_ne!(h.register("bob@localhost/x", "apns", &token).await, node);
}

#[tokio::test]
async fn bad_forms_are_form_errors_with_a_message() {
    let mut h = Harness::start().await;
    let cases = [
        ("gcm", apns_token(1), "unknown provider"),
        ("apns", String::new(), "device-token is required"),
        ("apns", "not-hex".to_owned(), "hexadecimal"),
        ("fcm", "bad token with spaces".to_owned(), "FCM token"),
    ];
    for (provider, token, message) in cases {
        let reply = h
            .iq(&register_one_step(
                "alice@localhost/r",
                provider,
                &token,
                None,
            ))
            .await;
        assert_eq!(
            error_of(&reply),
            Some(("modify".to_owned(), "bad-request".to_owned())),
            "{}",
            String::from(&reply)
        );
        let text = String::from(&reply);
        assert!(text.contains(message), "{text} should say {message}");
        assert!(text.contains("bad-payload"), "{text}");
    }
    // A server (no user part) cannot register devices.
    let reply = h
        .iq(&register_one_step(
            "localhost",
            "apns",
            &apns_token(1),
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("auth".to_owned(), "forbidden".to_owned()))
    );
}

#[tokio::test]
async fn unregister_command_removes_the_registration() {
    let mut h = Harness::start().await;
    let token = "fcm-token:APA91b_abc-DEF";
    let node = h.register("alice@localhost/r", "fcm", token).await;
    let reply = h
        .iq(&format!("<iq type='set' id='{}' from='alice@localhost/other' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='unregister-device' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='provider'><value>fcm</value></field><field var='device-token'><value>{token}</value></field></x></command></iq>", next_id()))
        .await;
    assert_eq!(command_of(&reply).attr("status"), Some("completed"));
    assert!(String::from(&reply).contains("Device unregistered"));
    let reply = h.publish_prosody(&node, "localhost", "hi", None).await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".to_owned(), "item-not-found".to_owned()))
    );
}

/// 10,000 made-up command nodes (from as many accounts, so no rate limit
/// refuses them first) leave `/metrics` as it was: one `unknown` series.
#[tokio::test]
async fn command_nodes_a_client_makes_up_do_not_become_metric_labels() {
    let mut h = Harness::start().await;
    let (_, before) = h.gateway.get("/metrics").await;
    for chunk in 0..100 {
        for i in 0..100 {
            let n = chunk * 100 + i;
            h.conn
                .write(&format!("<iq type='set' id='m{n}' from='mallory{n}@localhost/r' to='push.localhost'><command xmlns='http://jabber.org/protocol/commands' node='made-up-{n}' action='execute'/></iq>"))
                .await;
        }
        let reply = h.iq(&crate::support::harness::ping()).await;
        assert_eq!(reply.attr("type"), Some("result"));
    }
    let series = "pushgate_registration_commands_total{command=\"unknown\",outcome=\"refused\"}";
    let gateway = &h.gateway;
    assert!(
        eventually(WAIT, || async { gateway.metric(series).await == 10_000.0 }).await,
        "{}",
        gateway.metric(series).await
    );
    let (_, after) = h.gateway.get("/metrics").await;
    assert!(!after.contains("made-up"));
    let lines = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    assert_eq!(
        lines(&after),
        lines(&before) + 1,
        "one series more: {after}"
    );
}

/// `[registrations]`: the per-account cap holds at N+1, the command rate
/// is per account, and only the allowed domains may register.
#[tokio::test]
async fn accounts_are_capped_rate_limited_and_domains_allowed() {
    let mut h = Harness::start_with(|mut c| {
        c.extra.push_str(
            "\n[registrations]\nmax_per_account = 3\ncommands_per_minute = 6\nallowed_domains = [\"localhost\"]\n",
        );
        c
    })
    .await;
    for n in 1..=3 {
        h.register("erin@localhost/r", "apns", &apns_token(n)).await;
    }
    let reply = h
        .iq(&register_one_step(
            "erin@localhost/r",
            "apns",
            &apns_token(4),
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".to_owned(), "not-allowed".to_owned())),
        "{}",
        String::from(&reply)
    );
    assert!(String::from(&reply).contains("already has 3 devices"));
    // Renewing a device held is no new registration.
    assert!(
        node_of(
            &h.iq(&register_one_step(
                "erin@localhost/r",
                "apns",
                &apns_token(2),
                None
            ))
            .await
        )
        .is_some()
    );
    // Five commands so far: the sixth is the last of the minute.
    h.iq(&register_one_step(
        "erin@localhost/r",
        "apns",
        &apns_token(3),
        None,
    ))
    .await;
    let reply = h
        .iq(&register_one_step(
            "erin@localhost/r",
            "apns",
            &apns_token(3),
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("wait".to_owned(), "resource-constraint".to_owned()))
    );
    // Another account has its own budget.
    h.register("frank@localhost/r", "apns", &apns_token(9))
        .await;
    let reply = h
        .iq(&register_one_step(
            "mallory@elsewhere.example/r",
            "apns",
            &apns_token(5),
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".to_owned(), "forbidden".to_owned()))
    );
    for (outcome, count) in [
        ("account-full", 1.0),
        ("rate-limited", 1.0),
        ("forbidden", 1.0),
    ] {
        let series = format!(
            "pushgate_registration_commands_total{{command=\"register-device\",outcome=\"{outcome}\"}}"
        );
        assert_eq!(h.gateway.metric(&series).await, count, "{series}");
    }
}

/// A registration never published to expires; one published to stays.
#[tokio::test]
async fn registrations_never_published_to_expire() {
    let mut h = Harness::start_with(|mut c| {
        // 1.8 s, looked at every second.
        c.extra
            .push_str("\n[registrations]\nunpublished_expiry_hours = 0.0005\n");
        c
    })
    .await;
    let quiet = h
        .register("ivy@localhost/r", "apns", &apns_token(0x21))
        .await;
    let used = h
        .register("ivy@localhost/r", "apns", &apns_token(0x22))
        .await;
    let reply = h
        .iq(&crate::support::harness::prosody_publish(
            &used,
            "localhost",
            "hi",
            None,
        ))
        .await;
    assert_eq!(error_of(&reply), None);
    let series =
        "pushgate_registration_commands_total{command=\"unpublished-expiry\",outcome=\"removed\"}";
    let gateway = &h.gateway;
    assert!(
        eventually(WAIT, || async { gateway.metric(series).await >= 1.0 }).await,
        "nothing expired"
    );
    let reply = h
        .iq(&crate::support::harness::prosody_publish(
            &quiet,
            "localhost",
            "hi",
            None,
        ))
        .await;
    assert_eq!(
        error_of(&reply),
        Some(("cancel".to_owned(), "item-not-found".to_owned()))
    );
    let reply = h
        .iq(&crate::support::harness::prosody_publish(
            &used,
            "localhost",
            "hi",
            None,
        ))
        .await;
    assert_eq!(error_of(&reply), None, "the one published to stays");
    assert_eq!(h.gateway.metric(series).await, 1.0);
}

/// A flood of registration commands from one account does not hold up
/// another account's publishes: past the account's budget the commands are
/// refused without a store write. Prints the publish latencies seen.
#[tokio::test]
async fn a_registration_flood_from_one_account_leaves_others_publishing() {
    let mut h = Harness::start().await;
    let node = h
        .register("alice@localhost/r", "apns", &apns_token(0x11))
        .await;
    let publish = async |h: &mut Harness| {
        let started = std::time::Instant::now();
        let reply = h
            .iq(&crate::support::harness::prosody_publish(
                &node,
                "localhost",
                "hi",
                None,
            ))
            .await;
        assert_eq!(error_of(&reply), None, "{}", String::from(&reply));
        started.elapsed()
    };
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(publish(&mut h).await);
    }
    let mut flooded = Vec::new();
    for chunk in 0..30u32 {
        for i in 0..100u32 {
            let token = format!("{:064x}", chunk * 100 + i);
            h.conn
                .write(&register_one_step(
                    "mallory@localhost/r",
                    "apns",
                    &token,
                    None,
                ))
                .await;
        }
        flooded.push(publish(&mut h).await);
    }
    quiet.sort();
    flooded.sort();
    let median = |v: &[std::time::Duration]| v.get(v.len() / 2).copied().unwrap_or_default();
    let worst = |v: &[std::time::Duration]| v.last().copied().unwrap_or_default();
    eprintln!(
        "publish latency: quiet median {:?} worst {:?}; during a 3,000-command flood median {:?} worst {:?}",
        median(&quiet),
        worst(&quiet),
        median(&flooded),
        worst(&flooded)
    );
    assert!(
        worst(&flooded) < std::time::Duration::from_secs(2),
        "a publish waited {:?} behind the flood",
        worst(&flooded)
    );
    // The account's minute budget was spent, the rest refused; its cap held.
    let count = |outcome: &'static str| {
        let g = &h.gateway;
        async move {
            g.metric(&format!(
                "pushgate_registration_commands_total{{command=\"register-device\",outcome=\"{outcome}\"}}"
            ))
            .await
        }
    };
    let all_answered = eventually(WAIT, || async {
        count("ok").await + count("rate-limited").await + count("account-full").await == 3001.0
    })
    .await;
    let (ok, limited, full) = (
        count("ok").await,
        count("rate-limited").await,
        count("account-full").await,
    );
    assert!(all_answered, "{ok} ok, {limited} limited, {full} full");
    assert!(
        ok <= 21.0 && limited >= 2970.0,
        "{ok} ok, {limited} limited, {full} full"
    );
}
