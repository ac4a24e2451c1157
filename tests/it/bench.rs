//! `pushgate-bench --preset smoke` against the gateway under test: what CI runs
//! of the load generator. It asserts correctness only (nothing lost, duplicated
//! or refused), never speed. The bench's ledger (how lost and duplicated are
//! decided) is compiled in here too, so its unit tests run with the suite.

#[allow(dead_code)]
#[path = "../../src/bin/pushgate-bench/ledger.rs"]
mod ledger;

use serde_json::Value;
use std::process::Command;

/// Runs the smoke preset with `extra` arguments; returns its one phase.
fn smoke(extra: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate-bench"))
        .args(["--preset", "smoke", "--json", "--quiet"])
        .args(["--gateway", env!("CARGO_BIN_EXE_pushgate")])
        .args(extra)
        .output()
        .expect("run pushgate-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pushgate-bench failed ({}):\n{stderr}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("bench output is not one JSON line ({e}):\n{stdout}\n{stderr}"));
    assert_eq!(report["gateway_stopped_cleanly"], true, "{stderr}");
    let phase = report["phases"][0].clone();
    let sent = phase["sent"].as_u64().unwrap_or(0);
    assert_eq!(sent, 3000, "smoke sends 1000/s for 3 s:\n{stderr}");
    // 1000 devices, each published to once a second: nothing merges, so every
    // publish is accepted and delivered exactly once.
    assert_eq!(phase["accepted"].as_u64(), Some(sent), "{stderr}");
    assert_eq!(phase["deliveries"].as_u64(), Some(sent), "{stderr}");
    for zero in [
        "lost",
        "duplicates",
        "misrouted",
        "unknown_deliveries",
        "unanswered",
    ] {
        assert_eq!(phase[zero].as_u64(), Some(0), "{zero}:\n{stderr}");
    }
    assert_eq!(phase["delivery_latency"]["count"].as_u64(), Some(sent));
    phase
}

#[test]
fn smoke_preset_on_the_embedded_store_loses_nothing() {
    let phase = smoke(&[]);
    assert_eq!(phase["registered"].as_u64(), Some(1000));
}

#[test]
fn smoke_preset_on_redis_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = super::support::redis::RedisServer::start(dir.path());
    smoke(&["--store", "redis", "--redis-url", &redis.url()]);
}

/// `--store redis-cluster`: the bench starts a three-master Redis Cluster
/// itself, and counts the Redis commands per publish from its servers.
#[test]
fn smoke_preset_on_a_redis_cluster_the_bench_starts_loses_nothing() {
    let phase = smoke(&["--store", "redis-cluster"]);
    let commands = phase["redis_commands_per_publish"].as_f64().unwrap_or(0.0);
    // At least the outbox write and its removal; a cached registration is
    // not read again.
    assert!(commands >= 2.0, "{commands} Redis commands per publish");
}

/// `--nodes 3`: three gateway processes as one cluster on the run's Redis,
/// the bench spreading its publishes over their streams; still nothing lost
/// or duplicated, and the report says how much was forwarded.
#[test]
fn smoke_preset_on_a_three_node_cluster_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = super::support::redis::RedisServer::start(dir.path());
    let output = Command::new(env!("CARGO_BIN_EXE_pushgate-bench"))
        .args(["--preset", "smoke", "--json", "--quiet", "--nodes", "3"])
        .args(["--gateway", env!("CARGO_BIN_EXE_pushgate")])
        .args(["--store", "redis", "--redis-url", &redis.url()])
        .output()
        .expect("run pushgate-bench");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pushgate-bench failed:\n{stderr}");
    let report: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim())
        .expect("one JSON line");
    assert_eq!(report["nodes"], 3);
    assert_eq!(report["gateway_stopped_cleanly"], true, "{stderr}");
    let phase = &report["phases"][0];
    for zero in ["lost", "duplicates", "misrouted", "unanswered"] {
        assert_eq!(phase[zero].as_u64(), Some(0), "{zero}:\n{stderr}");
    }
    // Three owners: about two thirds of the publishes arrive at a node that
    // does not own their shard.
    let share = phase["forwarded_share"].as_f64().unwrap_or(0.0);
    assert!(
        (0.4..0.9).contains(&share),
        "forwarded share {share}:\n{stderr}"
    );
    // The cluster threads are found by name and their CPU counted: what
    // BENCHMARKS.md reports per forwarded publish.
    let cluster_cpu = phase["cluster_cpu_us_per_forwarded"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        cluster_cpu > 0.0,
        "cluster threads CPU {cluster_cpu}:\n{stderr}"
    );
}

/// A bench stopped by SIGTERM (a CI timeout, `kill`) stops what it started:
/// its gateway processes and the Redis it runs are gone when it exits,
/// instead of running on as orphans.
#[test]
fn a_bench_stopped_by_sigterm_leaves_no_process_behind() {
    use std::io::{BufRead, BufReader};
    let mut bench = Command::new(env!("CARGO_BIN_EXE_pushgate-bench"))
        .args(["--preset", "smoke", "--duration", "600", "--nodes", "2"])
        .args(["--gateway", env!("CARGO_BIN_EXE_pushgate")])
        .args(["--store", "redis"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run pushgate-bench");
    let stderr = bench.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The first progress line comes once the gateways and Redis are up.
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.expect("bench stderr");
        seen.push(line.clone());
        if line.contains("registering devices") {
            break;
        }
    }
    if !seen
        .last()
        .is_some_and(|l| l.contains("registering devices"))
    {
        let status = bench.wait().expect("wait for the bench");
        panic!(
            "the bench ended ({status}) before it started:\n{}",
            seen.join("\n")
        );
    }
    let children = super::support::children_of(bench.id());
    assert!(super::support::signal(bench.id(), "TERM"));
    let said: Vec<String> = lines.map_while(Result::ok).collect();
    let status = bench.wait().expect("wait for the bench");
    // Whatever outlived the bench is killed before anything is asserted.
    let started = children.len();
    let left: Vec<u32> = children
        .into_iter()
        .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
        .collect();
    for &pid in &left {
        super::support::signal(pid, "KILL");
    }
    let said = said.join("\n");
    // Redis and two gateways.
    assert!(
        started >= 3,
        "{started} children; bench said:\n{}",
        seen.join("\n")
    );
    assert_eq!(status.code(), Some(1), "bench said:\n{said}");
    assert!(said.contains("stopped by SIGTERM"), "bench said:\n{said}");
    assert!(left.is_empty(), "still running after the bench: {left:?}");
}
