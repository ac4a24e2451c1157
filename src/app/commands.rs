//! The Tigase ad-hoc commands `register-device` and `unregister-device`
//! (`PROTOCOL.md` §2), one-step and two-step.
//!
//! The two-step flow is stateless: the blank form carries a session id, and the
//! submitted form carries everything needed, so a reconnect between the steps (or a
//! second gateway node) changes nothing.

use super::forms::{FieldSpec, Form, build};
use super::replies::StanzaFault;
use super::{AppContext, ns};
use crate::config::ProviderKind;
use rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

/// The Tigase register command node.
pub const REGISTER_DEVICE: &str = "register-device";
/// The Tigase unregister command node.
pub const UNREGISTER_DEVICE: &str = "unregister-device";
/// Every command this component offers, with its human name.
pub const COMMANDS: &[(&str, &str)] = &[
    (REGISTER_DEVICE, "Register device"),
    (UNREGISTER_DEVICE, "Unregister device"),
];

/// A `<command/>` as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// The command node.
    pub node: String,
    /// `execute` (default), `complete`, `next`, `prev` or `cancel`.
    pub action: String,
    /// The session id of a two-step flow.
    pub session_id: Option<String>,
    /// The submitted form, if any.
    pub form: Option<Form>,
}

/// Reads a `<command xmlns='http://jabber.org/protocol/commands'/>`.
pub fn parse_command(command: &Element) -> Result<CommandRequest, StanzaFault> {
    let node = command
        .attr("node")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| StanzaFault::bad_request("command without a node"))?;
    Ok(CommandRequest {
        node: node.to_owned(),
        action: command.attr("action").unwrap_or("execute").to_owned(),
        session_id: command.attr("sessionid").map(str::to_owned),
        form: Form::child_of(command),
    })
}

/// The device named by a submitted form, validated against the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFields {
    /// A configured provider id.
    pub provider: String,
    /// The device token, normalized (APNs tokens lowercased).
    pub token: String,
    /// PushKit VoIP token, if given.
    pub voip_token: Option<String>,
}

/// What to do for a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandPlan {
    /// Answer with this `<command/>` right away (blank form, cancel).
    Reply(Element),
    /// Register the device, then answer with [`completed_register`].
    Register(DeviceFields),
    /// Unregister the device, then answer with [`completed_unregister`].
    Unregister(DeviceFields),
}

/// Decides what `cmd` asks for. `new_session_id` is called when a session starts.
pub fn plan(
    cmd: &CommandRequest,
    ctx: &AppContext,
    new_session_id: impl FnOnce() -> String,
) -> Result<CommandPlan, StanzaFault> {
    if !COMMANDS.iter().any(|(node, _)| *node == cmd.node) {
        return Err(StanzaFault::new(
            "cancel",
            "item-not-found",
            format!("no command {:?}", cmd.node),
        ));
    }
    let session_id = cmd.session_id.clone().unwrap_or_else(new_session_id);
    if cmd.action == "cancel" {
        return Ok(CommandPlan::Reply(command_element(
            &cmd.node,
            &session_id,
            "canceled",
        )));
    }
    let submitted = cmd.form.as_ref().filter(|f| f.kind == "submit");
    let Some(form) = submitted else {
        return Ok(CommandPlan::Reply(blank_form(&cmd.node, &session_id, ctx)));
    };
    let device = read_device(form, ctx, cmd.node == REGISTER_DEVICE)?;
    Ok(if cmd.node == REGISTER_DEVICE {
        CommandPlan::Register(device)
    } else {
        CommandPlan::Unregister(device)
    })
}

fn read_device(
    form: &Form,
    ctx: &AppContext,
    allow_voip: bool,
) -> Result<DeviceFields, StanzaFault> {
    let provider = form
        .non_empty("provider")
        .ok_or_else(|| StanzaFault::bad_payload("field provider is required"))?;
    let kind = ctx
        .providers
        .iter()
        .find(|(id, _)| id == provider)
        .map(|(_, kind)| *kind)
        .ok_or_else(|| {
            let known: Vec<&str> = ctx.providers.iter().map(|(id, _)| id.as_str()).collect();
            StanzaFault::bad_payload(format!(
                "unknown provider {provider:?}; this gateway offers: {}",
                known.join(", ")
            ))
        })?;
    let token = form
        .non_empty("device-token")
        .ok_or_else(|| StanzaFault::bad_payload("field device-token is required"))?;
    let token = normalize_token(kind, token)
        .map_err(|why| StanzaFault::bad_payload(format!("device-token: {why}")))?;
    let voip_token = match form.non_empty("device-second-token").filter(|_| allow_voip) {
        None => None,
        Some(t) => Some(
            normalize_token(ProviderKind::Apns, t)
                .map_err(|why| StanzaFault::bad_payload(format!("device-second-token: {why}")))?,
        ),
    };
    Ok(DeviceFields {
        provider: provider.to_owned(),
        token,
        voip_token,
    })
}

/// Checks a token's shape for the provider kind and normalizes it.
pub fn normalize_token(kind: ProviderKind, token: &str) -> Result<String, String> {
    match kind {
        ProviderKind::Apns => {
            let ok_len = (64..=200).contains(&token.len()) && token.len().is_multiple_of(2);
            if ok_len && token.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(token.to_ascii_lowercase())
            } else {
                Err("an APNs token is 64-200 hexadecimal digits".to_owned())
            }
        }
        ProviderKind::Fcm => {
            let ok_chars = token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
            if token.len() <= 4096 && ok_chars {
                Ok(token.to_owned())
            } else {
                Err("an FCM token is up to 4096 characters of A-Z a-z 0-9 - _ : .".to_owned())
            }
        }
    }
}

fn command_element(node: &str, session_id: &str, status: &str) -> Element {
    Element::builder("command", ns::COMMANDS)
        .attr(xml_ncname!("node").into(), node)
        .attr(xml_ncname!("sessionid").into(), session_id)
        .attr(xml_ncname!("status").into(), status)
        .build()
}

fn blank_form(node: &str, session_id: &str, ctx: &AppContext) -> Element {
    let mut command = command_element(node, session_id, "executing");
    command.append_child(
        Element::builder("actions", ns::COMMANDS)
            .attr(xml_ncname!("execute").into(), "complete")
            .append(Element::bare("complete", ns::COMMANDS))
            .build(),
    );
    let providers: Vec<String> = ctx.providers.iter().map(|(id, _)| id.clone()).collect();
    let mut fields = vec![
        FieldSpec {
            var: "provider",
            kind: "list-single",
            label: Some("Push service"),
            values: providers.first().cloned().into_iter().collect(),
            options: providers,
            required: true,
        },
        FieldSpec {
            var: "device-token",
            kind: "text-single",
            label: Some("Device token"),
            required: true,
            ..FieldSpec::default()
        },
    ];
    let title = if node == REGISTER_DEVICE {
        fields.push(FieldSpec {
            var: "device-second-token",
            kind: "text-single",
            label: Some("VoIP device token"),
            ..FieldSpec::default()
        });
        "Register device"
    } else {
        "Unregister device"
    };
    command.append_child(build("form", Some(title), &fields));
    command
}

/// The completed answer to `register-device`: a result form with the node.
pub fn completed_register(cmd: &CommandRequest, session_id: &str, node: &str) -> Element {
    let mut command = command_element(&cmd.node, session_id, "completed");
    command.append_child(build(
        "result",
        None,
        &[FieldSpec {
            var: "node",
            kind: "text-single",
            values: vec![node.to_owned()],
            ..FieldSpec::default()
        }],
    ));
    command
}

/// The completed answer to `unregister-device`, with a note saying what happened.
pub fn completed_unregister(cmd: &CommandRequest, session_id: &str, removed: bool) -> Element {
    let mut command = command_element(&cmd.node, session_id, "completed");
    let text = if removed {
        "Device unregistered"
    } else {
        "No such device was registered"
    };
    command.append_child(
        Element::builder("note", ns::COMMANDS)
            .attr(xml_ncname!("type").into(), "info")
            .append(text)
            .build(),
    );
    command
}

#[cfg(test)]
mod tests;
