//! The process's own CPU time and resident memory, read from `/proc` when
//! collected (OpenTelemetry's `process.cpu.time` and
//! `process.memory.usage`): what a dashboard divides by deliveries, and
//! what says whether memory stays bounded under overload. Elsewhere than
//! Linux they report nothing.

use opentelemetry::metrics::{Meter, ObservableCounter, ObservableGauge};

/// Clock ticks per second of `/proc/<pid>/stat`'s times: `USER_HZ`, 100 on
/// every Linux architecture the gateway builds for.
const TICKS_PER_SECOND: f64 = 100.0;

/// Keeps the two instruments registered.
pub(crate) struct ProcessMetrics {
    _cpu: ObservableCounter<f64>,
    _memory: ObservableGauge<i64>,
}

impl ProcessMetrics {
    pub(crate) fn new(meter: &Meter) -> Self {
        Self {
            _cpu: meter
                .f64_observable_counter("process.cpu.time")
                .with_description("CPU time of the gateway process, user and system.")
                .with_unit("s")
                .with_callback(|o| {
                    if let Some(seconds) = cpu_seconds() {
                        o.observe(seconds, &[]);
                    }
                })
                .build(),
            _memory: meter
                .i64_observable_gauge("process.memory.usage")
                .with_description("Resident memory of the gateway process.")
                .with_unit("By")
                .with_callback(|o| {
                    if let Some(bytes) = resident_bytes() {
                        o.observe(bytes, &[]);
                    }
                })
                .build(),
        }
    }
}

/// utime + stime of `/proc/self/stat`, in seconds.
fn cpu_seconds() -> Option<f64> {
    cpu_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Fields 14 and 15 of a `stat` line; the command name (field 2) may hold
/// spaces and parentheses, so counting starts after its last `)`.
fn cpu_of(stat: &str) -> Option<f64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// `VmRSS` of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<i64> {
    rss_of(&std::fs::read_to_string("/proc/self/status").ok()?)
}

fn rss_of(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_documented() {
        let stat = "4242 (push gate (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(cpu_of(stat), Some(3.25));
        assert_eq!(cpu_of("garbage"), None);
        let status = "Name:\tpushgate\nVmPeak:\t  100 kB\nVmRSS:\t   2048 kB\n";
        assert_eq!(rss_of(status), Some(2048 * 1024));
        assert_eq!(rss_of("Name: x\n"), None);
        #[cfg(target_os = "linux")]
        {
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
            assert!(resident_bytes().is_some_and(|b| b > 0));
        }
    }
}
