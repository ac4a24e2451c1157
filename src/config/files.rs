//! Secrets read from files: `component.secret_file` and
//! `store.password_file` stand for `component.secret` and `store.password`,
//! so a Kubernetes Secret or Docker secret can be mounted as a file instead
//! of passing through an environment variable (which `/proc` and crash
//! reports show). Resolved on the parsed table, before it becomes a
//! [`super::Config`], so the rest of the gateway sees one value either way.

use super::{Config, ConfigIssue};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// (section, key, its `_file` variant).
const FROM_FILES: &[(&str, &str, &str)] = &[
    ("component", "secret", "secret_file"),
    ("store", "password", "password_file"),
];

/// Replaces every `*_file` of [`FROM_FILES`] in `table` with the file's
/// content (one trailing newline dropped). The content never appears in an
/// issue.
pub(super) fn read_secret_files(table: &mut Table) -> (Vec<ConfigIssue>, Vec<(String, PathBuf)>) {
    let mut issues = Vec::new();
    let mut read = Vec::new();
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
                read.push((at, PathBuf::from(path)));
            }
            Err(e) => issues.push(ConfigIssue::new(at, format!("cannot read {path}: {e}"))),
        }
    }
    (issues, read)
}

/// The files holding secrets that `config` names: private keys, the
/// service account, `.p12` bundles and the `*_file` secrets.
fn secret_paths(config: &Config) -> Vec<(String, PathBuf)> {
    let mut paths = config.secret_files.clone();
    let mut add = |key: String, path: Option<&PathBuf>| {
        if let Some(path) = path {
            paths.push((key, path.clone()));
        }
    };
    add(
        "http.tls_key_file".into(),
        config.http.tls_key_file.as_ref(),
    );
    add(
        "store.tls_key_file".into(),
        config.store.tls_key_file.as_ref(),
    );
    if let Some(cluster) = &config.cluster {
        add("cluster.key_file".into(), cluster.key_file.as_ref());
        add("cluster.secret_file".into(), cluster.secret_file.as_ref());
    }
    for p in &config.providers {
        let key = |k: &str| format!("providers[{}].{k}", p.id);
        add(key("key_file"), p.key_file.as_ref());
        add(key("cert_key_file"), p.cert_key_file.as_ref());
        add(key("p12_file"), p.p12_file.as_ref());
        add(key("p12_password_file"), p.p12_password_file.as_ref());
        add(key("service_account_file"), p.service_account_file.as_ref());
    }
    paths
}

/// One warning per secret file any user of the machine may read (mode
/// `o+r`): such a key is as good as published on a shared host. Not an
/// error, so a deployment that knows better still starts.
pub fn exposed(config: &Config) -> Vec<String> {
    secret_paths(config)
        .into_iter()
        .filter_map(|(key, path)| {
            let mode = readable_by_others(&path)?;
            Some(format!(
                "{key}: {} can be read by any user (mode {mode:o}); make it 0600 or 0400 (in Kubernetes, defaultMode 0440 with fsGroup)",
                path.display()
            ))
        })
        .collect()
}

#[cfg(unix)]
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then_some(mode)
}

#[cfg(not(unix))]
fn readable_by_others(_: &Path) -> Option<u32> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn secret_files_others_may_read_are_named() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let (open_key, closed_key) = (dir.path().join("open.p8"), dir.path().join("closed.p8"));
        for (path, mode) in [(&open_key, 0o644), (&closed_key, 0o600)] {
            std::fs::write(path, "k").expect("write");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret").expect("write");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let text = format!(
            "[component]\njid = 'push.localhost'\nsecret_file = {secret:?}\n[[component.servers]]\nhost = '127.0.0.1'\n[http]\ntls_cert_file = {closed_key:?}\ntls_key_file = {closed_key:?}\n[[providers]]\nid = 'apns'\nkind = 'apns'\ntopic = 't'\nteam_id = 'TEAM123456'\nkey_id = 'KEY1234567'\nkey_file = {open_key:?}\n"
        );
        let config = crate::config::load_from_str(&text, "test", Vec::new()).expect("valid");
        let warnings = exposed(&config);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("component.secret_file: ") && warnings[0].contains("mode 604")
        );
        assert!(
            warnings[1].starts_with("providers[apns].key_file: ")
                && warnings[1].contains("open.p8")
        );
        assert!(!warnings.iter().any(|w| w.contains("s3cret")));
    }

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
        assert!(read_secret_files(&mut t).0.is_empty());
        assert_eq!(t["component"]["secret"].as_str(), Some("s3cr3t"));
        assert_eq!(t["store"]["password"].as_str(), Some("007"));
        assert!(t["component"].get("secret_file").is_none());
    }

    #[test]
    fn both_forms_or_an_unreadable_file_are_issues_naming_the_key() {
        let mut t = table("[component]\nsecret = 'a'\nsecret_file = '/x'\n");
        let issues = read_secret_files(&mut t).0;
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].key, "component.secret_file");
        let mut t = table("[store]\npassword_file = '/nonexistent/pushgate-password'\n");
        let issues = read_secret_files(&mut t).0;
        assert_eq!(issues[0].key, "store.password_file");
        assert!(
            issues[0].message.contains("cannot read"),
            "{}",
            issues[0].message
        );
    }
}
