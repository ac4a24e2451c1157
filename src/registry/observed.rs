//! How long store operations take and how often they fail, per operation
//! and backend (`pushgate.store.operation.duration`, `pushgate.store.errors`):
//! the first thing to look at when publishes are answered `wait`.

use super::{Registry, RegistryError};
use crate::telemetry::{CounterVec, HistogramVec, Metrics, spec};
use std::future::Future;

/// The store's instruments, on the gateway's meter provider.
pub(crate) struct StoreInstruments {
    duration: HistogramVec,
    errors: CounterVec,
}

/// What is timed: a registration read from the store (not a cache hit), a
/// registration write, an outbox group commit, an outbox load.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Operation {
    Read,
    Write,
    OutboxWrite,
    OutboxLoad,
}

impl Operation {
    fn label(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::Write => "write",
            Operation::OutboxWrite => "outbox-write",
            Operation::OutboxLoad => "outbox-load",
        }
    }
}

impl Registry {
    /// Counts this registry's operations into `metrics` from now on (once;
    /// later calls do nothing).
    pub fn observe(&self, metrics: &Metrics) {
        let meter = metrics.meter();
        let labels: &'static [&'static str] = &["operation", "backend"];
        let errors = CounterVec::new(
            meter,
            spec(
                "pushgate.store.errors",
                "Store operations that failed, by operation and backend.",
                "",
                labels,
            ),
        );
        // Every series at 0 from the start: a dashboard shows "none" rather
        // than "no data", and a rate over a first error sees it.
        for operation in [
            Operation::Read,
            Operation::Write,
            Operation::OutboxWrite,
            Operation::OutboxLoad,
        ] {
            errors.add(&[operation.label(), self.label()], 0);
        }
        let _ = self.inner.instruments.set(StoreInstruments {
            duration: HistogramVec::new(
                meter,
                spec(
                    "pushgate.store.operation.duration",
                    "Store operations (registration reads and writes, outbox commits and loads), by operation and backend.",
                    "s",
                    labels,
                ),
            ),
            errors,
        });
    }

    /// Runs `operation`, recording its duration and, if it fails, the error.
    pub(crate) async fn timed<T>(
        &self,
        what: Operation,
        operation: impl Future<Output = Result<T, RegistryError>>,
    ) -> Result<T, RegistryError> {
        let Some(instruments) = self.inner.instruments.get() else {
            return operation.await;
        };
        let started = crate::clock::now();
        let result = operation.await;
        let labels = [what.label(), self.label()];
        instruments
            .duration
            .observe(&labels, (crate::clock::now() - started).as_secs_f64());
        // Ownership moving is not the store failing.
        if let Err(e) = &result
            && !matches!(
                e,
                RegistryError::NotOwner { .. } | RegistryError::Fenced { .. }
            )
        {
            instruments.errors.inc(&labels);
        }
        result
    }
}
