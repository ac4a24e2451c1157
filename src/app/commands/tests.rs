use super::*;

const APNS_TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn ctx() -> AppContext {
    AppContext {
        component_jid: "push.example.com".into(),
        providers: vec![
            ("apns".into(), ProviderKind::Apns),
            ("fcm".into(), ProviderKind::Fcm),
        ],
    }
}

fn command(xml: &str) -> CommandRequest {
    let el: Element = xml.parse().expect("xml");
    parse_command(&el).expect("command")
}

fn submit(node: &str, action: &str, fields: &[(&str, &str)]) -> CommandRequest {
    let fields: String = fields
        .iter()
        .map(|(k, v)| format!("<field var='{k}'><value>{v}</value></field>"))
        .collect();
    command(&format!(
        "<command xmlns='http://jabber.org/protocol/commands' node='{node}' action='{action}' sessionid='s1'><x xmlns='jabber:x:data' type='submit'>{fields}</x></command>"
    ))
}

#[test]
fn execute_without_form_returns_a_blank_form_with_a_session() {
    let cmd = command(
        "<command xmlns='http://jabber.org/protocol/commands' node='register-device' action='execute'/>",
    );
    let CommandPlan::Reply(reply) = plan(&cmd, &ctx(), || "new-session".into()).expect("plan")
    else {
        panic!("expected a form");
    };
    assert_eq!(reply.attr("status"), Some("executing"));
    assert_eq!(reply.attr("sessionid"), Some("new-session"));
    let form = Form::child_of(&reply).expect("form");
    assert_eq!(form.kind, "form");
    assert!(form.fields.iter().any(|(v, _)| v == "device-token"));
    let x = reply.get_child("x", ns::DATA).expect("x");
    let provider = x
        .children()
        .find(|f| f.attr("var") == Some("provider"))
        .expect("provider");
    assert_eq!(provider.attr("type"), Some("list-single"));
    assert_eq!(
        provider.children().filter(|c| c.name() == "option").count(),
        2
    );
}

#[test]
fn one_and_two_step_submissions_register() {
    for action in ["execute", "complete"] {
        let cmd = submit(
            REGISTER_DEVICE,
            action,
            &[
                ("provider", "apns"),
                ("device-token", &APNS_TOKEN.to_uppercase()),
            ],
        );
        let plan = plan(&cmd, &ctx(), || unreachable!("has a session")).expect("plan");
        assert_eq!(
            plan,
            CommandPlan::Register(DeviceFields {
                provider: "apns".into(),
                token: APNS_TOKEN.into(),
                voip_token: None,
            })
        );
    }
    let done = completed_register(&submit(REGISTER_DEVICE, "complete", &[]), "s1", "NODE");
    assert_eq!(done.attr("status"), Some("completed"));
    let form = Form::child_of(&done).expect("result form");
    assert_eq!(
        (form.kind.as_str(), form.value("node")),
        ("result", Some("NODE"))
    );
}

#[test]
fn form_errors_say_what_is_wrong() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("device-token", APNS_TOKEN)], "provider is required"),
        (
            &[("provider", "gcm"), ("device-token", "x")],
            "unknown provider",
        ),
        (&[("provider", "apns")], "device-token is required"),
        (
            &[("provider", "apns"), ("device-token", "   ")],
            "device-token is required",
        ),
        (
            &[("provider", "apns"), ("device-token", "xyz")],
            "hexadecimal",
        ),
        (
            &[("provider", "fcm"), ("device-token", "a b;c")],
            "FCM token",
        ),
        (
            &[
                ("provider", "apns"),
                ("device-token", APNS_TOKEN),
                ("device-second-token", "nothex"),
            ],
            "device-second-token",
        ),
    ];
    for (fields, expected) in cases {
        let fault = plan(
            &submit(REGISTER_DEVICE, "complete", fields),
            &ctx(),
            String::new,
        )
        .expect_err("must fail");
        assert_eq!(fault.condition, "bad-request");
        assert_eq!(fault.app_condition, Some(("bad-payload", ns::COMMANDS)));
        assert!(
            fault.text.contains(expected),
            "{} does not contain {expected}",
            fault.text
        );
    }
}

#[test]
fn cancel_unknown_and_unregister() {
    let cancel = command(
        "<command xmlns='http://jabber.org/protocol/commands' node='register-device' action='cancel' sessionid='s9'/>",
    );
    match plan(&cancel, &ctx(), String::new).expect("plan") {
        CommandPlan::Reply(r) => assert_eq!(r.attr("status"), Some("canceled")),
        other => panic!("{other:?}"),
    }
    let unknown = command("<command xmlns='http://jabber.org/protocol/commands' node='nope'/>");
    assert_eq!(
        plan(&unknown, &ctx(), String::new)
            .expect_err("unknown")
            .condition,
        "item-not-found"
    );
    let unregister = submit(
        UNREGISTER_DEVICE,
        "execute",
        &[("provider", "fcm"), ("device-token", "abc:DEF_1-2")],
    );
    assert!(
        matches!(plan(&unregister, &ctx(), String::new), Ok(CommandPlan::Unregister(d)) if d.token == "abc:DEF_1-2")
    );
}
