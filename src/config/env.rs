//! `PUSHGATE_…` environment overrides, applied to the parsed TOML before it is
//! turned into [`super::Config`], so every key can be set either way.

use super::ConfigError;
use toml::{Table, Value};

const PREFIX: &str = "PUSHGATE_";
/// Variables of the command line itself (the configuration file's path),
/// not overrides: the container image and the Helm chart set them.
const RESERVED: &[&str] = &["PUSHGATE_CONFIG"];

/// Applies every `PUSHGATE_A__B__C=value` in `vars` to `table` at path `a.b.c`.
/// Array segments are an index or, for arrays of tables, the `id` of an element.
pub(super) fn apply_overrides(
    table: &mut Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX) && name.len() > PREFIX.len())
        .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        set_path(table, &path, &value).map_err(|message| ConfigError::Env {
            var: name.clone(),
            message,
        })?;
    }
    Ok(())
}

fn set_path(table: &mut Table, path: &[String], raw: &str) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        return Err("empty key".to_owned());
    };
    if first.is_empty() {
        return Err("empty path segment".to_owned());
    }
    if rest.is_empty() {
        let value = if is_secret(first) {
            // A password made of digits is still a password (and a failed
            // conversion would print it).
            Value::String(raw.to_owned())
        } else {
            typed_like(table.get(first.as_str()), raw)
        };
        table.insert(first.clone(), value);
        return Ok(());
    }
    let entry = table
        .entry(first.clone())
        .or_insert_with(|| Value::Table(Table::new()));
    set_in_value(entry, rest, raw)
}

fn set_in_value(value: &mut Value, path: &[String], raw: &str) -> Result<(), String> {
    match value {
        Value::Table(t) => set_path(t, path, raw),
        Value::Array(items) => {
            let Some((segment, rest)) = path.split_first() else {
                return Err("cannot replace a whole array".to_owned());
            };
            let index = match segment.parse::<usize>() {
                Ok(i) => i,
                Err(_) => items
                    .iter()
                    .position(|item| {
                        item.get("id")
                            .and_then(Value::as_str)
                            .is_some_and(|id| id.eq_ignore_ascii_case(segment))
                    })
                    .ok_or_else(|| format!("no element with id `{segment}`"))?,
            };
            let item = items
                .get_mut(index)
                .ok_or_else(|| format!("no element at index {index}"))?;
            if rest.is_empty() {
                *item = typed_like(Some(item), raw);
                Ok(())
            } else {
                set_in_value(item, rest, raw)
            }
        }
        _ => Err("a scalar has no sub-keys".to_owned()),
    }
}

/// Keys whose values are secrets, always strings.
fn is_secret(key: &str) -> bool {
    key.ends_with("secret") || key.ends_with("password")
}

/// Converts `raw` to the type of the value it replaces, or guesses for a new key.
fn typed_like(existing: Option<&Value>, raw: &str) -> Value {
    match existing {
        Some(Value::String(_)) => Value::String(raw.to_owned()),
        Some(Value::Integer(_)) | None => match raw.parse::<i64>() {
            Ok(i) => Value::Integer(i),
            Err(_) => bool_or_string(raw),
        },
        Some(Value::Boolean(_)) => bool_or_string(raw),
        Some(_) => Value::String(raw.to_owned()),
    }
}

fn bool_or_string(raw: &str) -> Value {
    match raw {
        "true" => Value::Boolean(true),
        "false" => Value::Boolean(false),
        _ => Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str, vars: &[(&str, &str)]) -> Table {
        let mut t: Table = toml::from_str(text).expect("test toml");
        apply_overrides(
            &mut t,
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
        .expect("overrides apply");
        t
    }

    #[test]
    fn overrides_nested_keys_and_keeps_types() {
        let t = apply(
            "[component]\nsecret='a'\n[http]\nlisten='x'\n[[component.servers]]\nhost='h'\nport=1\n",
            &[
                ("PUSHGATE_COMPONENT__SECRET", "b"),
                ("PUSHGATE_COMPONENT__SERVERS__0__PORT", "5347"),
                ("PUSHGATE_STORE__PATH", "/var/lib/pushgate"),
                ("OTHER", "ignored"),
            ],
        );
        assert_eq!(t["component"]["secret"].as_str(), Some("b"));
        assert_eq!(
            t["component"]["servers"][0]["port"].as_integer(),
            Some(5347)
        );
        assert_eq!(t["store"]["path"].as_str(), Some("/var/lib/pushgate"));
    }

    #[test]
    fn the_config_path_variable_is_not_an_override() {
        let t = apply(
            "[component]\nsecret='a'\n",
            &[("PUSHGATE_CONFIG", "/etc/pushgate/pushgate.toml")],
        );
        assert!(t.get("config").is_none(), "{t:?}");
    }

    #[test]
    fn a_secret_made_of_digits_stays_a_string() {
        let t = apply(
            "[component]\nsecret='a'\n[store]\nbackend='redis'\n[[providers]]\nid='apns'\n",
            &[
                ("PUSHGATE_COMPONENT__SECRET", "123456"),
                ("PUSHGATE_STORE__PASSWORD", "654321"),
                ("PUSHGATE_PROVIDERS__APNS__P12_PASSWORD", "007"),
                ("PUSHGATE_STORE__SHARDS", "64"),
            ],
        );
        assert_eq!(t["component"]["secret"].as_str(), Some("123456"));
        assert_eq!(t["store"]["password"].as_str(), Some("654321"));
        assert_eq!(t["providers"][0]["p12_password"].as_str(), Some("007"));
        assert_eq!(
            t["store"]["shards"].as_integer(),
            Some(64),
            "numbers stay numbers"
        );
    }

    #[test]
    fn addresses_providers_by_id() {
        let t = apply(
            "[[providers]]\nid='apns'\nkind='apns'\n[[providers]]\nid='fcm'\nkind='fcm'\n",
            &[("PUSHGATE_PROVIDERS__FCM__SERVICE_ACCOUNT_FILE", "/s.json")],
        );
        assert_eq!(
            t["providers"][1]["service_account_file"].as_str(),
            Some("/s.json")
        );
    }

    #[test]
    fn unknown_provider_id_is_an_error_naming_the_variable() {
        let mut t: Table = toml::from_str("[[providers]]\nid='apns'\n").expect("toml");
        let err = apply_overrides(
            &mut t,
            [("PUSHGATE_PROVIDERS__NOPE__TOPIC".to_owned(), "x".to_owned())],
        )
        .expect_err("must fail");
        assert!(err.to_string().contains("PUSHGATE_PROVIDERS__NOPE__TOPIC"));
    }
}
