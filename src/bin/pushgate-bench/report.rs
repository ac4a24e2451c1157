//! The human-readable table of a run.

use crate::ledger::Percentiles;
use crate::run::RunReport;
use std::fmt::Write as _;

/// The report as a table, one column per phase.
pub fn table(report: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pushgate-bench: preset {} · store {} · {} node(s) · {} connections · shape {:?} · coalesce {} ms · mock latency {} ms, 503 {:.0}%, dead {:.0}%",
        report.preset,
        report.store,
        report.nodes,
        report.connections,
        report.shape,
        report.coalesce_ms,
        report.sink.latency_ms,
        report.sink.unavailable_rate * 100.0,
        report.sink.dead_rate * 100.0,
    );
    let _ = writeln!(
        out,
        "machine: {} cores, {}",
        report.machine.cores, report.machine.cpu_model
    );
    let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
    let mut row = |label: &'static str, cell: &dyn Fn(&crate::run::PhaseReport) -> String| {
        rows.push((label, report.phases.iter().map(cell).collect()));
    };
    row("phase", &|p| p.name.clone());
    row("devices", &|p| p.devices.to_string());
    row("registered (new)", &|p| {
        if p.registered == 0 {
            "-".to_owned()
        } else {
            format!(
                "{} in {:.1} s ({:.0}/s)",
                p.registered,
                p.registration_s,
                f64::from(p.registered) / p.registration_s.max(1e-9)
            )
        }
    });
    row("pace", &|p| match p.pace {
        crate::load::Pace::Rate(r) => format!("open loop {r}/s"),
        crate::load::Pace::Window(w) => format!("closed loop, window {w}"),
    });
    row("sent", &|p| {
        format!("{} ({:.0}/s)", p.totals.sent, p.sent_per_s)
    });
    row("accepted", &|p| p.totals.accepted.to_string());
    row("errors", &|p| {
        if p.totals.errors.is_empty() {
            "0".to_owned()
        } else {
            p.totals
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    });
    row("deliveries", &|p| p.totals.deliveries.to_string());
    row("deliveries/s (steady)", &|p| {
        format!("{:.0}", p.steady_deliveries_per_s)
    });
    row("lost", &|p| p.totals.lost.to_string());
    row("duplicates", &|p| p.totals.duplicates.to_string());
    row("misrouted / unknown", &|p| {
        format!("{} / {}", p.totals.misrouted, p.totals.unknown_deliveries)
    });
    row("unanswered", &|p| p.totals.unanswered.to_string());
    row("provider 503s / dead devices", &|p| {
        format!("{} / {}", p.totals.provider_errors, p.totals.dead_devices)
    });
    row("publish→reply µs", &|p| {
        percentiles(&p.totals.reply_latency)
    });
    row("publish→delivery µs", &|p| {
        percentiles(&p.totals.delivery_latency)
    });
    row("drain", &|p| format!("{:.1} s", p.drain_s));
    row("gateway CPU", &|p| {
        format!(
            "{:.2} s ({:.1} µs/delivery)",
            p.gateway_cpu_s, p.gateway_cpu_us_per_delivery
        )
    });
    row("bench CPU", &|p| format!("{:.2} s", p.bench_cpu_s));
    if report.nodes > 1 {
        row("forwarded to owner", &|p| {
            format!("{:.0}%", p.forwarded_share.unwrap_or(0.0) * 100.0)
        });
        row("forward p99 (bucket)", &|p| {
            p.forward_p99_ms
                .map_or("-".to_owned(), |ms| format!("<= {ms} ms"))
        });
        row("cluster threads CPU", &|p| {
            p.cluster_cpu_us_per_forwarded.map_or("-".to_owned(), |us| {
                format!("{us:.1} µs per forwarded publish")
            })
        });
    }
    if report
        .phases
        .iter()
        .any(|p| p.redis_commands_per_publish.is_some())
    {
        row("Redis commands per publish", &|p| {
            p.redis_commands_per_publish
                .map_or("-".to_owned(), |c| format!("{c:.2}"))
        });
    }
    row("gateway RSS now / peak", &|p| {
        format!(
            "{:.1} / {:.1} MiB",
            p.gateway_rss_mib, p.gateway_peak_rss_mib
        )
    });
    let label_width = rows
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let cell_width = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(|c| c.chars().count()))
        .max()
        .unwrap_or(0);
    for (label, cells) in rows {
        let _ = write!(out, "{label:<label_width$} ");
        for cell in cells {
            let _ = write!(out, "│ {cell:<cell_width$} ");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "gateway peak RSS {:.1} MiB; stopped cleanly on SIGTERM: {}",
        report.gateway_peak_rss_mib, report.gateway_stopped_cleanly
    );
    out
}

fn percentiles(p: &Percentiles) -> String {
    if p.count == 0 {
        return "-".to_owned();
    }
    format!(
        "p50 {} p90 {} p99 {} p999 {} max {}",
        p.p50, p.p90, p.p99, p.p999, p.max
    )
}

/// "Try later" refusals (type `wait`) whose condition would make a Tigase
/// server delete the registration: never acceptable, strict run or not.
pub fn tigase_unsafe_refusals(report: &RunReport) -> Vec<String> {
    let mut found = Vec::new();
    for p in &report.phases {
        for (key, count) in p.totals.tigase_deletes_on() {
            found.push(format!(
                "{}: {count} replies {key}, after which Tigase deletes the registration",
                p.name
            ));
        }
    }
    found
}

/// Why a strict run failed, if it did: any count that must be zero and is not.
pub fn violations(report: &RunReport) -> Vec<String> {
    let mut found = Vec::new();
    for p in &report.phases {
        let t = &p.totals;
        if t.sent == 0 {
            found.push(format!("{}: nothing was sent", p.name));
        }
        let errors: u64 = t.errors.values().sum();
        let must_be_zero = [
            (t.lost, "accepted publishes never delivered"),
            (t.duplicates, "duplicate deliveries"),
            (t.misrouted, "pushes to the wrong device"),
            (t.unknown_deliveries, "pushes naming no publish"),
            (t.unanswered, "publishes unanswered"),
            (errors, "error replies"),
            (p.registration_errors, "registrations failed"),
        ];
        for (count, what) in must_be_zero {
            if count > 0 {
                found.push(format!("{}: {count} {what}", p.name));
            }
        }
        if !t.errors.is_empty() {
            found.push(format!(
                "{}: error replies by condition: {:?}",
                p.name, t.errors
            ));
        }
    }
    if !report.gateway_stopped_cleanly {
        found.push("the gateway did not stop cleanly on SIGTERM".into());
    }
    found
}
