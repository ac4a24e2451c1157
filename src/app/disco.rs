//! XEP-0030 answers: who we are (a `pubsub/push` service offering commands and the
//! configured providers) and which commands there are.

use super::replies::StanzaFault;
use super::{AppContext, ns};
use rxml::xml_ncname;
use xmpp_parsers::minidom::Element;

fn identity(category: &str, kind: &str, name: &str) -> Element {
    Element::builder("identity", ns::DISCO_INFO)
        .attr(xml_ncname!("category").into(), category)
        .attr(xml_ncname!("type").into(), kind)
        .attr(xml_ncname!("name").into(), name)
        .build()
}

fn feature(var: &str) -> Element {
    Element::builder("feature", ns::DISCO_INFO)
        .attr(xml_ncname!("var").into(), var)
        .build()
}

/// The disco#info payload for `node` (none = the component itself).
pub fn info(ctx: &AppContext, node: Option<&str>) -> Result<Element, StanzaFault> {
    let mut query = Element::bare("query", ns::DISCO_INFO);
    match node {
        None => {
            query.append_child(identity("pubsub", "push", "pushgate"));
            query.append_child(identity("component", "generic", "pushgate"));
            for var in [
                ns::DISCO_INFO,
                ns::DISCO_ITEMS,
                ns::PUSH,
                ns::COMMANDS,
                ns::PING,
            ] {
                query.append_child(feature(var));
            }
            for (id, _) in &ctx.providers {
                query.append_child(feature(id));
            }
        }
        Some(n) if n == ns::COMMANDS => {
            set_node(&mut query, n);
            query.append_child(identity("automation", "command-list", "Commands"));
            query.append_child(feature(ns::COMMANDS));
        }
        Some(n) => {
            let Some(name) = ctx.command(n).map(|c| c.name.as_str()) else {
                return Err(unknown_node(n));
            };
            set_node(&mut query, n);
            query.append_child(identity("automation", "command-node", name));
            query.append_child(feature(ns::COMMANDS));
            query.append_child(feature(ns::DATA));
        }
    }
    Ok(query)
}

/// The disco#items payload for `node`: the commands on the commands node, nothing
/// at the root.
pub fn items(ctx: &AppContext, node: Option<&str>) -> Result<Element, StanzaFault> {
    let mut query = Element::bare("query", ns::DISCO_ITEMS);
    match node {
        None => {}
        Some(n) if n == ns::COMMANDS => {
            set_node(&mut query, n);
            for command in &ctx.commands {
                query.append_child(
                    Element::builder("item", ns::DISCO_ITEMS)
                        .attr(xml_ncname!("jid").into(), ctx.component_jid.as_str())
                        .attr(xml_ncname!("node").into(), command.node.as_str())
                        .attr(xml_ncname!("name").into(), command.name.as_str())
                        .build(),
                );
            }
        }
        Some(n) if ctx.command(n).is_some() => {
            set_node(&mut query, n);
        }
        Some(n) => return Err(unknown_node(n)),
    }
    Ok(query)
}

fn set_node(query: &mut Element, node: &str) {
    query.set_attr(rxml::Namespace::NONE, xml_ncname!("node").into(), node);
}

fn unknown_node(node: &str) -> StanzaFault {
    StanzaFault::new(
        "cancel",
        "item-not-found",
        format!("no disco node {node:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProviderKind;

    fn ctx() -> AppContext {
        AppContext {
            component_jid: "push.example.com".into(),
            providers: vec![("tigase:messenger:apns:1".into(), ProviderKind::Apns)],
            commands: crate::app::commands::command_specs(&Default::default()),
            appserver_types: Vec::new(),
        }
    }

    #[test]
    fn info_has_push_identity_commands_and_providers() {
        let q = info(&ctx(), None).expect("info");
        let text = String::from(&q);
        assert!(text.contains("category='pubsub'"), "{text}");
        assert!(text.contains("type='push'"), "{text}");
        let features: Vec<&str> = q
            .children()
            .filter(|c| c.name() == "feature")
            .filter_map(|f| f.attr("var"))
            .collect();
        for f in [ns::PUSH, ns::COMMANDS, "tigase:messenger:apns:1"] {
            assert!(features.contains(&f), "missing {f}");
        }
    }

    #[test]
    fn items_on_the_commands_node_list_both_commands() {
        let q = items(&ctx(), Some(ns::COMMANDS)).expect("items");
        let nodes: Vec<&str> = q.children().filter_map(|i| i.attr("node")).collect();
        assert_eq!(nodes, ["register-device", "unregister-device"]);
        assert!(
            q.children()
                .all(|i| i.attr("jid") == Some("push.example.com"))
        );
        assert_eq!(
            items(&ctx(), Some("nope")).expect_err("unknown").condition,
            "item-not-found"
        );
    }
}
