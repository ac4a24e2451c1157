//! The Grafana dashboard (`deploy/grafana/pushgate.json`) and the alert
//! rules (`deploy/prometheus/pushgate-rules.yaml`), proven against the real
//! metrics: their shape, `promtool check rules` on the rules and on every
//! panel query rewritten as a recording rule, and a live run — a real
//! Prometheus scraping a three-node cluster under `pushgate-bench --preset
//! smoke` — where `promtool check metrics` passes on a scrape, every panel
//! query returns data, every alert expression evaluates, and every metric
//! they name is on the gateways' `/metrics`.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool`), which
//! `tests/run.sh` installs.

use crate::support::gateway::free_port;
use crate::support::redis::RedisServer;
use crate::support::{children_of, signal};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/pushgate.json"))
        .expect("deploy/grafana/pushgate.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// The alert rules: `(alert name, expression)`. Read by line (the file's
/// own layout: `- alert:` then `expr:`, inline or as a `|` block) rather
/// than with a YAML crate for one test; `promtool check rules` reads it as
/// YAML, and the chart check compares it with the PrometheusRule it renders.
fn alerts() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("deploy/prometheus/pushgate-rules.yaml"))
        .expect("deploy/prometheus/pushgate-rules.yaml");
    let mut alerts = Vec::new();
    let mut lines = text.lines().peekable();
    let mut name = None;
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if let Some(alert) = trimmed.strip_prefix("- alert: ") {
            name = Some(alert.trim().to_owned());
        } else if let Some(expr) = trimmed.strip_prefix("expr: ") {
            let indent = line.len() - trimmed.len();
            let expr = if expr.trim() == "|" {
                let mut block = Vec::new();
                while let Some(next) = lines.peek() {
                    if next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    block.push(next.trim());
                    lines.next();
                }
                block.join(" ")
            } else {
                expr.trim().to_owned()
            };
            alerts.push((name.take().expect("expr before alert"), expr));
        }
    }
    assert!(alerts.len() >= 8, "{alerts:?}");
    alerts
}

/// Every panel query: `(panel title, expression)`.
fn panel_queries(board: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in board["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                panel["title"].as_str().unwrap_or_default().to_owned(),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    queries
}

/// A dashboard query as Prometheus takes it: Grafana's variables replaced
/// (`$__rate_interval` by `window`, the label filters by "all").
fn concrete(expr: &str, window: &str) -> String {
    expr.replace("$__rate_interval", window)
        .replace("\"$job\"", "\".*\"")
        .replace("\"$namespace\"", "\".*\"")
        .replace("\"$pod\"", "\".*\"")
}

/// The metric names an expression selects: the project's own prefixes
/// (label names never start with them), histogram suffixes removed, and
/// Prometheus' own `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &expr[i..];
        if start_ok
            && ["pushgate_", "process_", "http_client_", "up{", "up "]
                .iter()
                .any(|p| rest.starts_with(p))
        {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|_| name.contains("seconds")))
                .unwrap_or(name);
            names.insert(base.to_owned());
            i += len;
        } else {
            i += 1;
        }
    }
    names
}

/// Families that a clean smoke run never has, each with why; everything
/// else a query or an alert names must be on a live `/metrics`. (Each is
/// still checked to be in the README's metric catalogue, which a unit test
/// pins to the instruments.)
const NOT_IN_A_CLEAN_RUN: &[(&str, &str)] = &[
    (
        "pushgate_retries_total",
        "nothing is retried in a clean run",
    ),
    (
        "pushgate_coalesced_total",
        "smoke publishes to each device once a second: nothing merges",
    ),
    (
        "pushgate_provider_certificate_expiry_seconds",
        "the bench's APNs provider uses token auth, not a certificate",
    ),
];

/// Panels whose queries are empty in a clean run, and why.
const EMPTY_IN_A_CLEAN_RUN: &[(&str, &str)] = &[
    ("Retries by reason", "nothing is retried"),
    ("Provider errors by reason", "no request fails"),
    ("Coalesced publishes", "nothing merges"),
    ("Certificate expiry", "token auth"),
];

#[test]
fn the_dashboard_has_a_fixed_uid_variables_units_and_unique_panel_ids() {
    let board = dashboard();
    assert_eq!(board["uid"], "pushgate-overview");
    assert!(board["id"].is_null(), "id must be null for provisioning");
    let variables: Vec<&str> = board["templating"]["list"]
        .as_array()
        .expect("variables")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["datasource", "job", "namespace", "pod"]);
    assert_eq!(board["templating"]["list"][0]["type"], "datasource");
    assert_eq!(board["templating"]["list"][0]["query"], "prometheus");
    let mut ids = BTreeSet::new();
    let mut graphs = 0;
    for panel in board["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().expect("id")),
            "{title}: id again"
        );
        if panel["type"] == "row" {
            continue;
        }
        graphs += 1;
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let unit = panel["fieldConfig"]["defaults"]["unit"].as_str();
        assert!(unit.is_some_and(|u| !u.is_empty()), "{title}: no unit");
        assert!(
            !panel["description"].as_str().unwrap_or_default().is_empty(),
            "{title}: no description"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for filter in [
                "job=~\"$job\"",
                "namespace=~\"$namespace\"",
                "pod=~\"$pod\"",
            ] {
                assert!(expr.contains(filter), "{title}: {expr} lacks {filter}");
            }
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
            }
        }
    }
    assert!(graphs >= 20, "{graphs} panels");
    // The chart ships the same file (the chart check compares them too).
    assert_eq!(
        std::fs::read(root().join("helm/pushgate/files/dashboard.json")).expect("chart copy"),
        std::fs::read(root().join("deploy/grafana/pushgate.json")).expect("dashboard"),
    );
}

fn need(tool: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{tool} is missing: install Debian's prometheus package \
         (apt-get install prometheus; tests/run.sh does)"
    );
    path
}

#[test]
fn promtool_accepts_the_alert_rules_and_every_dashboard_query() {
    let promtool = need("promtool");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in panel_queries(&dashboard()).iter().enumerate() {
        let expr = serde_json::to_string(&concrete(expr, "1m")).expect("quoted");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {expr}\n"
        ));
    }
    let recorded = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&recorded, rules).expect("write");
    let output = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(root().join("deploy/prometheus/pushgate-rules.yaml"))
        .arg(&recorded)
        .output()
        .expect("run promtool");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A process killed when dropped, its children first: the bench's gateway
/// processes would outlive a bench killed alone (nothing runs its cleanup).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        for child in children_of(self.0.id()) {
            signal(child, "KILL");
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Three free consecutive ports.
fn three_ports() -> u16 {
    loop {
        let first = free_port();
        if free_port() == first + 1 && free_port() == first + 2 {
            return first;
        }
    }
}

/// Prometheus on loopback scraping `targets` every second.
fn start_prometheus(dir: &Path, port: u16, targets: &[String]) -> Running {
    let config = dir.join("prometheus.yml");
    let targets = serde_json::to_string(targets).expect("targets");
    let rules = root().join("deploy/prometheus/pushgate-rules.yaml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: pushgate\n    static_configs:\n      - targets: {targets}\n",
            rules.display()
        ),
    )
    .expect("prometheus.yml");
    let child = Command::new(need("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .spawn()
        .expect("start prometheus");
    Running(child)
}

/// An instant query's result series.
async fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let url =
        reqwest::Url::parse_with_params(&format!("{prometheus}/api/v1/query"), &[("query", expr)])
            .map_err(|e| e.to_string())?;
    let reply = crate::support::gateway::client()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let body: Value = reply.json().await.map_err(|e| e.to_string())?;
    if body["status"] != "success" {
        return Err(body.to_string());
    }
    Ok(body["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alerts_work_on_a_live_scrape_of_a_cluster_under_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = RedisServer::start(dir.path());
    let http = three_ports();
    let targets: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", http + i)).collect();
    let prometheus_port = free_port();
    let _prometheus = start_prometheus(dir.path(), prometheus_port, &targets);
    let prometheus = format!("http://127.0.0.1:{prometheus_port}");
    let bench = Running(
        Command::new(env!("CARGO_BIN_EXE_pushgate-bench"))
            .args(["--preset", "smoke", "--json", "--quiet", "--nodes", "3"])
            .args(["--duration", "25", "--http-port", &http.to_string()])
            .args(["--gateway", env!("CARGO_BIN_EXE_pushgate")])
            .args(["--store", "redis", "--redis-url", &redis.url()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run pushgate-bench"),
    );
    // Under load: deliveries flowing on every node for a few scrapes.
    let started = Instant::now();
    let loaded = loop {
        let flowing = query(
            &prometheus,
            "count(rate(pushgate_deliveries_total[5s]) > 0) >= 1",
        )
        .await
        .is_ok_and(|r| !r.is_empty());
        if flowing || started.elapsed() > Duration::from_secs(90) {
            break flowing;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        loaded,
        "no deliveries seen by Prometheus: {}",
        std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;

    // The scrapes: lint, and the names they hold.
    let mut scraped = BTreeSet::new();
    for target in &targets {
        let text = crate::support::gateway::client()
            .get(format!("http://{target}/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("text");
        let mut lint = Command::new(need("promtool"))
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        if let Some(mut stdin) = lint.stdin.take() {
            std::io::Write::write_all(&mut stdin, text.as_bytes()).expect("to promtool");
        }
        let linted = lint.wait_with_output().expect("promtool");
        assert!(
            linted.status.success(),
            "promtool check metrics on {target}: {}{}",
            String::from_utf8_lossy(&linted.stdout),
            String::from_utf8_lossy(&linted.stderr)
        );
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            if let Some(name) = line.split_whitespace().nth(2) {
                scraped.insert(name.to_owned());
            }
        }
    }
    scraped.insert("up".to_owned());

    // Every panel query has data, but for the reasons listed.
    let board = dashboard();
    let mut empty = Vec::new();
    for (title, expr) in panel_queries(&board) {
        let result = query(&prometheus, &concrete(&expr, "5s")).await;
        match result {
            Ok(series) if !series.is_empty() => {}
            Ok(_) if EMPTY_IN_A_CLEAN_RUN.iter().any(|(t, _)| *t == title) => {}
            Ok(_) => empty.push(format!("{title}: {expr}")),
            Err(e) => panic!("{title}: {expr}: {e}"),
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    // Every alert evaluates (most are quiet: a healthy run).
    for (alert, expr) in alerts() {
        if let Err(e) = query(&prometheus, &expr).await {
            panic!("{alert}: {e}");
        }
    }
    // Every metric named is exported, or known and absent for a stated reason.
    let catalogue = std::fs::read_to_string(root().join("README.md")).expect("README");
    let named: BTreeSet<String> = panel_queries(&board)
        .iter()
        .chain(alerts().iter())
        .flat_map(|(_, expr)| metric_names(expr))
        .collect();
    for name in &named {
        if scraped.contains(name) {
            continue;
        }
        assert!(
            NOT_IN_A_CLEAN_RUN.iter().any(|(n, _)| n == name),
            "{name} is named by the dashboard or an alert but not on /metrics: {scraped:?}"
        );
        assert!(
            catalogue.contains(&format!("`{name}`")),
            "{name} is not in the catalogue"
        );
    }
    drop(bench);
}

#[test]
fn metric_names_are_found_in_queries() {
    let names = metric_names(
        "histogram_quantile(0.99, sum by (le) (rate(http_client_request_duration_seconds_bucket{job=~\"$job\",http_request_method=\"POST\"}[1m]))) / up{job=\"x\"} + pushgate_outbox_entries",
    );
    let want: BTreeSet<String> = [
        "http_client_request_duration_seconds",
        "up",
        "pushgate_outbox_entries",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(names, want);
}
