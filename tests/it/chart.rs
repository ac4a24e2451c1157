//! The Helm chart (`helm/pushgate`), checked offline by `tests/chart/check.py`:
//! lint, rendering of the defaults and of every `ci/*-values.yaml`,
//! Kubernetes schema validation (oldest and newest supported versions),
//! yamllint, the values the schema must refuse, and each rendered
//! configuration passed to this build's `pushgate check-config` with the
//! pod's secrets as files and variables, so chart and binary cannot drift.

use std::path::Path;
use std::process::Command;

#[test]
fn the_helm_chart_renders_validates_and_its_configuration_passes_check_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("tests/chart/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: tests/run.sh installs helm-python-sdk, kubernetes-validate \
         and yamllint there (pinned in tests/chart/requirements.txt)",
        python.display()
    );
    let output = Command::new(&python)
        .arg(root.join("tests/chart/check.py"))
        .args(["--pushgate", env!("CARGO_BIN_EXE_pushgate")])
        .output()
        .expect("run tests/chart/check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{text}");
    // Every values file was rendered and checked, not skipped.
    let files = std::fs::read_dir(root.join("helm/pushgate/ci"))
        .expect("helm/pushgate/ci")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with("-values.yaml"))
        })
        .count();
    let checked = text.matches(": check-config: ").count();
    assert_eq!(checked, files + 1, "{text}");
}
