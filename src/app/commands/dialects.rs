//! The three command dialects: which commands exist, which fields their forms
//! have, and how a submitted form becomes [`DeviceFields`].

use super::{DeviceFields, normalize_token, provider_kind};
use crate::app::AppContext;
use crate::app::forms::{FieldSpec, Form};
use crate::app::replies::StanzaFault;
use crate::config::{CommandsConfig, ProviderKind};

/// A client dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Tigase Push Component: `provider`, `device-token`, `device-second-token`.
    Tigase,
    /// p2, Conversations' app server: `token`, `device-id`; one command per provider.
    P2,
    /// mod_push_appserver (older Monal): `type`, `node`, `token`.
    AppServer,
}

/// Register or unregister.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    /// Adds (or refreshes) a registration.
    Register,
    /// Removes one.
    Unregister,
}

/// One offered command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The XEP-0050 node.
    pub node: String,
    /// Its human name (disco, form title).
    pub name: String,
    /// Its dialect.
    pub dialect: Dialect,
    /// Register or unregister.
    pub kind: CommandKind,
    /// The provider the command is bound to (p2: one command per provider).
    pub provider: Option<String>,
}

fn spec(
    node: &str,
    name: &str,
    dialect: Dialect,
    kind: CommandKind,
    provider: Option<&str>,
) -> CommandSpec {
    CommandSpec {
        node: node.to_owned(),
        name: name.to_owned(),
        dialect,
        kind,
        provider: provider.map(str::to_owned),
    }
}

/// The commands the configuration enables, in disco order.
pub(crate) fn command_specs(config: &CommandsConfig) -> Vec<CommandSpec> {
    use CommandKind::{Register, Unregister};
    let mut specs = Vec::new();
    if config.tigase {
        specs.push(spec(
            "register-device",
            "Register device",
            Dialect::Tigase,
            Register,
            None,
        ));
        specs.push(spec(
            "unregister-device",
            "Unregister device",
            Dialect::Tigase,
            Unregister,
            None,
        ));
    }
    for (suffix, provider) in [("fcm", &config.p2_fcm), ("apns", &config.p2_apns)] {
        if let Some(provider) = provider {
            let p = Some(provider.as_str());
            specs.push(spec(
                &format!("register-push-{suffix}"),
                &format!("Register for {} push", suffix.to_uppercase()),
                Dialect::P2,
                Register,
                p,
            ));
            specs.push(spec(
                &format!("unregister-push-{suffix}"),
                &format!("Unregister from {} push", suffix.to_uppercase()),
                Dialect::P2,
                Unregister,
                p,
            ));
        }
    }
    if !config.appserver.is_empty() {
        specs.push(spec(
            "v1-register-push",
            "Register push device",
            Dialect::AppServer,
            Register,
            None,
        ));
        specs.push(spec(
            "v1-unregister-push",
            "Unregister push device",
            Dialect::AppServer,
            Unregister,
            None,
        ));
    }
    specs
}

fn field<'a>(var: &'a str, kind: &'a str, label: &'a str, required: bool) -> FieldSpec<'a> {
    FieldSpec {
        var,
        kind,
        label: Some(label),
        required,
        ..FieldSpec::default()
    }
}

fn list<'a>(var: &'a str, label: &'a str, options: Vec<String>) -> FieldSpec<'a> {
    FieldSpec {
        values: options.first().cloned().into_iter().collect(),
        options,
        ..field(var, "list-single", label, true)
    }
}

/// The fields of the blank form for `spec`.
pub(super) fn form_fields<'a>(spec: &'a CommandSpec, ctx: &'a AppContext) -> Vec<FieldSpec<'a>> {
    let register = spec.kind == CommandKind::Register;
    match spec.dialect {
        Dialect::Tigase => {
            let providers = ctx.providers.iter().map(|(id, _)| id.clone()).collect();
            let mut fields = vec![
                list("provider", "Push service", providers),
                field("device-token", "text-single", "Device token", true),
            ];
            if register {
                fields.push(field(
                    "device-second-token",
                    "text-single",
                    "VoIP device token",
                    false,
                ));
            }
            fields
        }
        Dialect::P2 => {
            let mut fields = Vec::new();
            if register {
                fields.push(field("token", "text-single", "Push token", true));
            }
            fields.push(field("device-id", "text-single", "Device id", true));
            fields
        }
        Dialect::AppServer => {
            let types = ctx.appserver_types.iter().map(|(t, _)| t.clone()).collect();
            let mut fields = vec![
                list("type", "Push service", types),
                field("node", "text-single", "Device id", true),
            ];
            if register {
                fields.push(field("token", "text-single", "Push token", true));
            }
            fields
        }
    }
}

fn required<'f>(form: &'f Form, var: &str) -> Result<&'f str, StanzaFault> {
    form.non_empty(var)
        .ok_or_else(|| StanzaFault::bad_payload(format!("field {var} is required")))
}

fn token(form: &Form, var: &str, kind: ProviderKind) -> Result<String, StanzaFault> {
    normalize_token(kind, required(form, var)?)
        .map_err(|why| StanzaFault::bad_payload(format!("{var}: {why}")))
}

/// Reads and validates a submitted form of `spec`.
pub(super) fn read_device(
    spec: &CommandSpec,
    form: &Form,
    ctx: &AppContext,
) -> Result<DeviceFields, StanzaFault> {
    let register = spec.kind == CommandKind::Register;
    match spec.dialect {
        Dialect::Tigase => {
            let provider = required(form, "provider")?;
            let kind = provider_kind(ctx, provider)?;
            let voip_token = match form.non_empty("device-second-token").filter(|_| register) {
                None => None,
                Some(_) => Some(token(form, "device-second-token", ProviderKind::Apns)?),
            };
            Ok(DeviceFields {
                provider: provider.to_owned(),
                token: Some(token(form, "device-token", kind)?),
                voip_token,
                device_id: None,
                with_secret: false,
            })
        }
        Dialect::P2 => {
            let provider = spec.provider.clone().unwrap_or_default();
            let kind = provider_kind(ctx, &provider)?;
            let id = form
                .non_empty("device-id")
                .or_else(|| form.non_empty("android-id"))
                .ok_or_else(|| StanzaFault::bad_payload("field device-id is required"))?;
            // p2 keeps a node per (device, MUC): a MUC registration gets its own.
            let id = match form.non_empty("muc") {
                Some(muc) => format!("p2:{id}\u{0}muc:{muc}"),
                None => format!("p2:{id}"),
            };
            named_device(form, register, provider, kind, id)
        }
        Dialect::AppServer => {
            let kind_name = required(form, "type")?;
            let provider = ctx
                .appserver_types
                .iter()
                .find(|(t, _)| t == kind_name)
                .map(|(_, p)| p.clone())
                .ok_or_else(|| {
                    let known: Vec<&str> = ctx
                        .appserver_types
                        .iter()
                        .map(|(t, _)| t.as_str())
                        .collect();
                    StanzaFault::bad_payload(format!(
                        "unknown type {kind_name:?}; this gateway offers: {}",
                        known.join(", ")
                    ))
                })?;
            let kind = provider_kind(ctx, &provider)?;
            let id = format!("appserver:{}", required(form, "node")?);
            named_device(form, register, provider, kind, id)
        }
    }
}

/// A device of a dialect that names devices by id (p2, mod_push_appserver): the
/// token only when registering, and a publish secret.
fn named_device(
    form: &Form,
    register: bool,
    provider: String,
    kind: ProviderKind,
    id: String,
) -> Result<DeviceFields, StanzaFault> {
    if id.len() > 256 {
        return Err(StanzaFault::bad_payload(
            "the device id is longer than 256 characters",
        ));
    }
    Ok(DeviceFields {
        provider,
        token: if register {
            Some(token(form, "token", kind)?)
        } else {
            None
        },
        voip_token: None,
        device_id: Some(id),
        with_secret: true,
    })
}
