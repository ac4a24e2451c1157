//! Secrets read from files: `component.secret_file` and
//! `store.password_file` stand for `component.secret` and `store.password`,
//! so a Kubernetes Secret or Docker secret can be mounted as a file instead
//! of passing through an environment variable (which `/proc` and crash
//! reports show). Resolved on the parsed table, before it becomes a
//! [`super::Config`], so the rest of the gateway sees one value either way.

use super::ConfigIssue;
use toml::{Table, Value};

/// (section, key, its `_file` variant).
const FROM_FILES: &[(&str, &str, &str)] = &[
    ("component", "secret", "secret_file"),
    ("store", "password", "password_file"),
];

/// Replaces every `*_file` of [`FROM_FILES`] in `table` with the file's
/// content (one trailing newline dropped). The content never appears in an
/// issue.
pub(super) fn read_secret_files(table: &mut Table) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    for &(section, key, file_key) in FROM_FILES {
        let Some(Value::Table(t)) = table.get_mut(section) else {
            continue;
        };
        let Some(path) = t.remove(file_key) else {
            continue;
        };
        let at = format!("{section}.{file_key}");
        let Value::String(path) = path else {
            issues.push(ConfigIssue::new(at, "must be a file path (a string)"));
            continue;
        };
        if t.contains_key(key) {
            issues.push(ConfigIssue::new(
                at,
                format!("{section}.{key} and {section}.{file_key}: one or the other"),
            ));
            continue;
        }
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let value = text
                    .strip_suffix('\n')
                    .map(|s| s.strip_suffix('\r').unwrap_or(s))
                    .unwrap_or(&text);
                t.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            Err(e) => issues.push(ConfigIssue::new(at, format!("cannot read {path}: {e}"))),
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("toml")
    }

    #[test]
    fn a_secret_file_becomes_the_secret_without_its_newline() {
        let dir = tempfile::tempdir().expect("dir");
        let secret = dir.path().join("secret");
        let password = dir.path().join("password");
        std::fs::write(&secret, "s3cr3t\n").expect("write");
        std::fs::write(&password, "007\r\n").expect("write");
        let mut t = table(&format!(
            "[component]\nsecret_file = {:?}\n[store]\npassword_file = {:?}\n",
            secret.display().to_string(),
            password.display().to_string()
        ));
        assert!(read_secret_files(&mut t).is_empty());
        assert_eq!(t["component"]["secret"].as_str(), Some("s3cr3t"));
        assert_eq!(t["store"]["password"].as_str(), Some("007"));
        assert!(t["component"].get("secret_file").is_none());
    }

    #[test]
    fn both_forms_or_an_unreadable_file_are_issues_naming_the_key() {
        let mut t = table("[component]\nsecret = 'a'\nsecret_file = '/x'\n");
        let issues = read_secret_files(&mut t);
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "component.secret_file");
        let mut t = table("[store]\npassword_file = '/nonexistent/pushgate-password'\n");
        let issues = read_secret_files(&mut t);
        assert_eq!(issues[0].key, "store.password_file");
        assert!(
            issues[0].message.contains("cannot read"),
            "{}",
            issues[0].message
        );
    }
}
