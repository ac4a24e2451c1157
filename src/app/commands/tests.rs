use super::*;
use crate::config::CommandsConfig;

const APNS_TOKEN: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

fn ctx() -> AppContext {
    let config = CommandsConfig {
        tigase: true,
        p2_fcm: Some("fcm".into()),
        p2_apns: Some("apns".into()),
        appserver: [
            ("apns".to_owned(), "apns".to_owned()),
            ("fcm".to_owned(), "fcm".to_owned()),
        ]
        .into_iter()
        .collect(),
    };
    AppContext {
        component_jid: "push.example.com".into(),
        providers: vec![
            ("apns".into(), ProviderKind::Apns),
            ("fcm".into(), ProviderKind::Fcm),
        ],
        commands: command_specs(&config),
        appserver_types: vec![("apns".into(), "apns".into()), ("fcm".into(), "fcm".into())],
    }
}

/// [`super::plan`] without the spec it found, which these tests do not look at.
fn plan(
    cmd: &CommandRequest,
    ctx: &AppContext,
    session_id: &str,
) -> Result<CommandPlan, StanzaFault> {
    super::plan(cmd, ctx, session_id).map(|(_, plan)| plan)
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
    let CommandPlan::Reply(reply) = plan(&cmd, &ctx(), "new-session").expect("plan") else {
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
            "register-device",
            action,
            &[
                ("provider", "apns"),
                ("device-token", &APNS_TOKEN.to_uppercase()),
            ],
        );
        let plan = plan(&cmd, &ctx(), "s1").expect("plan");
        assert_eq!(
            plan,
            CommandPlan::Register(DeviceFields {
                provider: "apns".into(),
                token: Some(APNS_TOKEN.into()),
                voip_token: None,
                device_id: None,
                with_secret: false,
            })
        );
    }
    let ctx = ctx();
    let spec = ctx.command("register-device").expect("spec");
    let done = completed_register(spec, &ctx, "s1", "NODE", None);
    assert_eq!(done.attr("status"), Some("completed"));
    let form = Form::child_of(&done).expect("result form");
    assert_eq!(
        (form.kind.as_str(), form.value("node")),
        ("result", Some("NODE"))
    );
    assert_eq!(form.value("secret"), None);
}

#[test]
fn form_errors_say_what_is_wrong() {
    type Fields<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&str, Fields, &str)] = &[
        (
            "register-device",
            &[("device-token", APNS_TOKEN)],
            "provider is required",
        ),
        (
            "register-device",
            &[("provider", "gcm"), ("device-token", "x")],
            "unknown provider",
        ),
        (
            "register-device",
            &[("provider", "apns")],
            "device-token is required",
        ),
        (
            "register-device",
            &[("provider", "apns"), ("device-token", "   ")],
            "device-token is required",
        ),
        (
            "register-device",
            &[("provider", "apns"), ("device-token", "xyz")],
            "hexadecimal",
        ),
        (
            "register-device",
            &[("provider", "fcm"), ("device-token", "a b;c")],
            "FCM token",
        ),
        (
            "register-device",
            &[
                ("provider", "apns"),
                ("device-token", APNS_TOKEN),
                ("device-second-token", "nothex"),
            ],
            "device-second-token",
        ),
        (
            "register-push-fcm",
            &[("token", "abc")],
            "device-id is required",
        ),
        (
            "register-push-apns",
            &[("device-id", "d1"), ("token", "nothex")],
            "token:",
        ),
        (
            "v1-register-push",
            &[("type", "mpns"), ("node", "d1"), ("token", "t")],
            "unknown type",
        ),
        (
            "v1-register-push",
            &[("type", "fcm"), ("token", "t")],
            "node is required",
        ),
    ];
    for (node, fields, expected) in cases {
        let fault = plan(&submit(node, "complete", fields), &ctx(), "s").expect_err("must fail");
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
fn p2_and_appserver_name_devices_by_id_and_hand_out_secrets() {
    let ctx = ctx();
    let p2 = plan(
        &submit(
            "register-push-fcm",
            "execute",
            &[("token", "tok:1"), ("device-id", "d1")],
        ),
        &ctx,
        "s",
    )
    .expect("p2");
    let CommandPlan::Register(p2) = p2 else {
        panic!("{p2:?}")
    };
    assert_eq!(
        (p2.provider.as_str(), p2.token.as_deref()),
        ("fcm", Some("tok:1"))
    );
    assert_eq!(p2.identity(), "p2:d1");
    assert!(p2.with_secret);
    // android-id is the older name of device-id.
    let old = plan(
        &submit(
            "register-push-fcm",
            "execute",
            &[("token", "t2"), ("android-id", "d1")],
        ),
        &ctx,
        "s",
    );
    assert!(matches!(old, Ok(CommandPlan::Register(d)) if d.identity() == "p2:d1"));
    let unreg = plan(
        &submit("unregister-push-fcm", "execute", &[("device-id", "d1")]),
        &ctx,
        "s",
    );
    assert!(
        matches!(unreg, Ok(CommandPlan::Unregister(d)) if d.identity() == "p2:d1" && d.token.is_none())
    );

    let app = plan(
        &submit(
            "v1-register-push",
            "execute",
            &[("type", "apns"), ("node", "dev-7"), ("token", APNS_TOKEN)],
        ),
        &ctx,
        "s",
    );
    assert!(
        matches!(app, Ok(CommandPlan::Register(d)) if d.provider == "apns" && d.identity() == "appserver:dev-7")
    );

    let spec = ctx.command("register-push-fcm").expect("spec");
    let done = completed_register(spec, &ctx, "s", "NODE", Some("SECRET"));
    let form = Form::child_of(&done).expect("form");
    assert_eq!(form.value("jid"), Some("push.example.com"));
    assert_eq!(form.value("node"), Some("NODE"));
    assert_eq!(form.value("secret"), Some("SECRET"));
}

#[test]
fn dialects_are_offered_only_when_configured() {
    let nodes = |config: &CommandsConfig| -> Vec<String> {
        command_specs(config).into_iter().map(|s| s.node).collect()
    };
    assert_eq!(
        nodes(&CommandsConfig::default()),
        ["register-device", "unregister-device"]
    );
    let all: Vec<String> = ctx().commands.into_iter().map(|s| s.node).collect();
    assert_eq!(
        all,
        [
            "register-device",
            "unregister-device",
            "register-push-fcm",
            "unregister-push-fcm",
            "register-push-apns",
            "unregister-push-apns",
            "v1-register-push",
            "v1-unregister-push",
        ]
    );
}

#[test]
fn cancel_unknown_and_unregister() {
    let cancel = command(
        "<command xmlns='http://jabber.org/protocol/commands' node='register-device' action='cancel' sessionid='s9'/>",
    );
    match plan(&cancel, &ctx(), "s9").expect("plan") {
        CommandPlan::Reply(r) => assert_eq!(r.attr("status"), Some("canceled")),
        other => panic!("{other:?}"),
    }
    let unknown = command("<command xmlns='http://jabber.org/protocol/commands' node='nope'/>");
    assert_eq!(
        plan(&unknown, &ctx(), "s").expect_err("unknown").condition,
        "item-not-found"
    );
    let unregister = submit(
        "unregister-device",
        "execute",
        &[("provider", "fcm"), ("device-token", "abc:DEF_1-2")],
    );
    assert!(
        matches!(plan(&unregister, &ctx(), "s"), Ok(CommandPlan::Unregister(d)) if d.identity() == "abc:DEF_1-2")
    );
}
