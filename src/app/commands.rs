//! Registration commands (XEP-0050) in the three dialects clients use
//! (`docs/protocol.md` §2): Tigase `register-device`/`unregister-device`, p2's
//! `register-push-{fcm,apns}`/`unregister-push-*`, and mod_push_appserver's
//! `v1-register-push`/`v1-unregister-push`. Each works one-step (form submitted
//! with `execute`) and two-step (blank form, then `complete`).
//!
//! The two-step flow is stateless: the blank form carries a session id, and the
//! submitted form carries everything needed, so a reconnect between the steps (or a
//! second gateway node) changes nothing.

mod dialects;

pub(crate) use dialects::command_specs;
pub use dialects::{CommandKind, CommandSpec, Dialect};

use super::forms::{FieldSpec, Form, build};
use super::node::XmlNode;
use super::replies::StanzaFault;
use super::{AppContext, ns};
use crate::config::ProviderKind;
use crate::registry::IdentityKind;
use rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

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
pub(crate) fn parse_command<N: XmlNode>(command: &N) -> Result<CommandRequest, StanzaFault> {
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
    /// The device token, normalized (APNs tokens lowercased). `None` when an
    /// unregister names the device by its id instead.
    pub token: Option<String>,
    /// PushKit VoIP token, if given.
    pub voip_token: Option<String>,
    /// The client's own device id (p2 `device-id`, mod_push_appserver `node`):
    /// when present, the node is derived from it rather than from the token, so a
    /// new token for the same device keeps its node.
    pub device_id: Option<String>,
    /// Whether the dialect hands out a publish secret.
    pub with_secret: bool,
}

impl DeviceFields {
    /// What the node is derived from: the device id if any, else the token.
    pub fn identity(&self) -> &str {
        self.device_id
            .as_deref()
            .or(self.token.as_deref())
            .unwrap_or_default()
    }

    /// Which namespace [`Self::identity`] is in.
    pub fn identity_kind(&self) -> IdentityKind {
        if self.device_id.is_some() {
            IdentityKind::DeviceId
        } else {
            IdentityKind::Token
        }
    }
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

/// Decides what `cmd` asks for, in session `session_id`; also returns the
/// offered command it names, which the completed answer needs.
pub fn plan<'c>(
    cmd: &CommandRequest,
    ctx: &'c AppContext,
    session_id: &str,
) -> Result<(&'c CommandSpec, CommandPlan), StanzaFault> {
    let spec = ctx.command(&cmd.node).ok_or_else(|| {
        StanzaFault::new(
            "cancel",
            "item-not-found",
            format!("no command {:?}", cmd.node),
        )
    })?;
    if cmd.action == "cancel" {
        let canceled = command_element(&cmd.node, session_id, "canceled");
        return Ok((spec, CommandPlan::Reply(canceled)));
    }
    let submitted = cmd.form.as_ref().filter(|f| f.kind == "submit");
    let Some(form) = submitted else {
        return Ok((spec, CommandPlan::Reply(blank_form(spec, session_id, ctx))));
    };
    let device = dialects::read_device(spec, form, ctx)?;
    let plan = match spec.kind {
        CommandKind::Register => CommandPlan::Register(device),
        CommandKind::Unregister => CommandPlan::Unregister(device),
    };
    Ok((spec, plan))
}

/// Looks a provider id up, with a form error that lists the offered ones.
pub fn provider_kind(ctx: &AppContext, provider: &str) -> Result<ProviderKind, StanzaFault> {
    ctx.provider_kind(provider).ok_or_else(|| {
        let known: Vec<&str> = ctx.providers.iter().map(|(id, _)| id.as_str()).collect();
        StanzaFault::bad_payload(format!(
            "unknown provider {provider:?}; this gateway offers: {}",
            known.join(", ")
        ))
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

fn blank_form(spec: &CommandSpec, session_id: &str, ctx: &AppContext) -> Element {
    let mut command = command_element(&spec.node, session_id, "executing");
    command.append_child(
        Element::builder("actions", ns::COMMANDS)
            .attr(xml_ncname!("execute").into(), "complete")
            .append(Element::bare("complete", ns::COMMANDS))
            .build(),
    );
    let fields = dialects::form_fields(spec, ctx);
    command.append_child(build("form", Some(&spec.name), &fields));
    command
}

/// The completed answer to a register command: a result form with the node (and,
/// for the p2 and mod_push_appserver dialects, the component JID and the secret).
pub(crate) fn completed_register(
    spec: &CommandSpec,
    ctx: &AppContext,
    session_id: &str,
    node: &str,
    secret: Option<&str>,
) -> Element {
    let mut command = command_element(&spec.node, session_id, "completed");
    let text = |var: &'static str, value: &str| FieldSpec {
        var,
        kind: "text-single",
        values: vec![value.to_owned()],
        ..FieldSpec::default()
    };
    let mut fields = Vec::new();
    if spec.dialect != Dialect::Tigase {
        fields.push(FieldSpec {
            kind: "jid-single",
            ..text("jid", &ctx.component_jid)
        });
    }
    fields.push(text("node", node));
    if let Some(secret) = secret {
        fields.push(text("secret", secret));
    }
    command.append_child(build("result", None, &fields));
    command
}

/// The completed answer to an unregister command, with a note saying what happened.
pub(crate) fn completed_unregister(spec: &CommandSpec, session_id: &str, removed: bool) -> Element {
    let mut command = command_element(&spec.node, session_id, "completed");
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
