//! The named scenarios (`--preset`), and the flags that adjust them.

use crate::load::{Pace, Shape};
use crate::sink::SinkBehaviour;
use std::time::Duration;

/// How a phase paces its publishes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PaceSpec {
    /// A fixed pace.
    Fixed(Pace),
    /// Open loop at half the delivery rate the previous phase sustained.
    HalfOfPrevious,
}

/// One measured stretch: grow the registry to `devices`, then publish.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Shown in the report.
    pub name: String,
    /// Devices registered before the phase publishes (to all of them).
    pub devices: u32,
    /// The pace.
    pub pace: PaceSpec,
    /// How long publishes are sent.
    pub duration: Duration,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Preset {
    /// Its name.
    pub name: &'static str,
    /// Component connections the gateway opens.
    pub connections: usize,
    /// The phases, in order, on one gateway.
    pub phases: Vec<Phase>,
    /// How the mock providers answer.
    pub sink: SinkBehaviour,
    /// Publish shape.
    pub shape: Shape,
    /// `[delivery] coalesce_window_ms` of the gateway.
    pub coalesce_ms: u64,
    /// Each provider's `max_in_flight`.
    pub max_in_flight: u32,
    /// How long to wait, after sending, for replies and deliveries.
    pub drain: Duration,
    /// Fail the run unless nothing was lost, duplicated, misrouted or refused.
    pub strict: bool,
}

/// Names accepted by `--preset`.
pub const NAMES: &[&str] = &[
    "smoke",
    "throughput",
    "latency",
    "devices",
    "faults",
    "soak",
    "overload",
];

fn phase(name: &str, devices: u32, pace: PaceSpec, seconds: u64) -> Phase {
    Phase {
        name: name.to_owned(),
        devices,
        pace,
        duration: Duration::from_secs(seconds),
    }
}

/// The preset called `name`.
pub fn preset(name: &str) -> Option<Preset> {
    let window = PaceSpec::Fixed(Pace::Window(2048));
    let base = Preset {
        name: "smoke",
        connections: 4,
        phases: Vec::new(),
        sink: SinkBehaviour {
            latency_ms: 1,
            ..SinkBehaviour::default()
        },
        shape: Shape::Mixed,
        coalesce_ms: 0,
        max_in_flight: 1000,
        drain: Duration::from_secs(30),
        strict: false,
    };
    Some(match name {
        "smoke" => Preset {
            name: "smoke",
            connections: 2,
            phases: vec![phase("smoke", 1000, PaceSpec::Fixed(Pace::Rate(1000)), 3)],
            strict: true,
            ..base
        },
        "throughput" => Preset {
            name: "throughput",
            phases: vec![phase("max", 10_000, window, 20)],
            ..base
        },
        "latency" => Preset {
            name: "latency",
            phases: vec![
                phase("probe-max", 10_000, window, 10),
                phase("half-max", 10_000, PaceSpec::HalfOfPrevious, 20),
            ],
            ..base
        },
        "devices" => Preset {
            name: "devices",
            phases: vec![
                phase("1k", 1_000, window, 10),
                phase("100k", 100_000, window, 10),
                phase("1M", 1_000_000, window, 10),
            ],
            ..base
        },
        // Half the sustainable rate for 30 minutes: RSS, descriptors and
        // what awaits delivery should stay flat (the progress lines show
        // them every second).
        "soak" => Preset {
            name: "soak",
            phases: vec![phase(
                "soak",
                10_000,
                PaceSpec::Fixed(Pace::Rate(10_000)),
                1800,
            )],
            ..base
        },
        // Twice the sustainable rate for a minute, to five times more
        // devices than a provider's queue holds (10,000 by default), between
        // a steady phase and a closed-loop one: memory stays bounded, what is
        // refused is refused with `wait`, and the rate comes back.
        "overload" => Preset {
            name: "overload",
            phases: vec![
                phase("steady", 50_000, PaceSpec::Fixed(Pace::Rate(10_000)), 20),
                phase("overload", 50_000, PaceSpec::Fixed(Pace::Rate(40_000)), 60),
                phase("recovery", 50_000, window, 20),
            ],
            ..base
        },
        "faults" => Preset {
            name: "faults",
            phases: vec![phase(
                "faults",
                10_000,
                PaceSpec::Fixed(Pace::Rate(5000)),
                10,
            )],
            sink: SinkBehaviour {
                latency_ms: 1,
                unavailable_rate: 0.10,
                dead_rate: 0.01,
            },
            drain: Duration::from_secs(60),
            ..base
        },
        _ => return None,
    })
}
