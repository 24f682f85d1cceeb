//! Per-call metrics through the `metrics` facade: a counter by method and outcome and a
//! latency histogram, for calls this node made and calls it served. Recorded only when the
//! node serves `/metrics` (the HTTP layer installs the recorder); no state of its own.

use tokio::time::Instant;

/// Which end of a call a metric is about.
#[derive(Clone, Copy)]
pub(crate) enum Side {
    Served,
    Made,
}

/// Counts one finished call (served or made) and records its latency.
pub(crate) fn record_call(
    side: Side,
    method: metrics::SharedString,
    outcome: &'static str,
    started: Instant,
) {
    let (total, side) = match side {
        Side::Served => ("meshrpc_calls_served_total", "served"),
        Side::Made => ("meshrpc_calls_made_total", "made"),
    };
    metrics::counter!(total, "method" => method.clone(), "outcome" => outcome).increment(1);
    metrics::histogram!("meshrpc_call_seconds", "side" => side, "method" => method)
        .record(started.elapsed().as_secs_f64());
}

#[cfg(feature = "gateway")]
pub(crate) use dashboard::{CallStats, MethodFigures};

#[cfg(not(feature = "gateway"))]
pub(crate) use no_dashboard::CallStats;

/// The dashboard's per-method figures (with the `gateway` feature).
#[cfg(feature = "gateway")]
mod dashboard {
    use tokio::time::Instant;

    /// Calls served by one node, per method, for the dashboard: totals, errors and a latency
    /// histogram since the node started. Kept only when the node has a gateway.
    #[derive(Default)]
    pub(crate) struct CallStats {
        methods: dashmap::DashMap<metrics::SharedString, std::sync::Arc<MethodStats>>,
    }

    /// One method's served calls.
    pub(crate) struct MethodStats {
        pub(crate) calls: std::sync::atomic::AtomicU64,
        pub(crate) errors: std::sync::atomic::AtomicU64,
        latency: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    }

    /// A method's figures at one moment.
    #[derive(Debug, Clone, PartialEq, serde::Serialize)]
    pub(crate) struct MethodFigures {
        pub(crate) method: String,
        pub(crate) calls: u64,
        pub(crate) errors: u64,
        pub(crate) p50_us: u64,
        pub(crate) p99_us: u64,
    }

    impl CallStats {
        /// Counts one served call of `method` (a registered name, or `<unknown>`).
        pub(crate) fn record(&self, method: &metrics::SharedString, ok: bool, started: Instant) {
            use std::sync::atomic::Ordering::Relaxed;
            let stats = match self.methods.get(method) {
                Some(stats) => stats.clone(),
                None => self
                    .methods
                    .entry(method.clone())
                    .or_insert_with(|| std::sync::Arc::new(MethodStats::new()))
                    .clone(),
            };
            stats.calls.fetch_add(1, Relaxed);
            if !ok {
                stats.errors.fetch_add(1, Relaxed);
            }
            let us = started.elapsed().as_micros().clamp(1, 3_600_000_000) as u64;
            let mut latency = stats.latency.lock().unwrap_or_else(|e| e.into_inner());
            latency.saturating_record(us);
        }

        /// Every method served so far, sorted by name.
        pub(crate) fn figures(&self) -> Vec<MethodFigures> {
            use std::sync::atomic::Ordering::Relaxed;
            let mut all: Vec<MethodFigures> = self
                .methods
                .iter()
                .map(|entry| {
                    let latency = entry.latency.lock().unwrap_or_else(|e| e.into_inner());
                    MethodFigures {
                        method: entry.key().to_string(),
                        calls: entry.calls.load(Relaxed),
                        errors: entry.errors.load(Relaxed),
                        p50_us: latency.value_at_quantile(0.5),
                        p99_us: latency.value_at_quantile(0.99),
                    }
                })
                .collect();
            all.sort_by(|a, b| a.method.cmp(&b.method));
            all
        }
    }

    impl MethodStats {
        fn new() -> Self {
            // Valid bounds (low >= 1, high >= 2 * low, 3 significant figures): cannot fail.
            let histogram = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 2)
                .unwrap_or_else(|_| unreachable!());
            MethodStats {
                calls: Default::default(),
                errors: Default::default(),
                latency: std::sync::Mutex::new(histogram),
            }
        }
    }
}

/// Without the gateway nothing reads per-method figures: never made.
#[cfg(not(feature = "gateway"))]
mod no_dashboard {
    use tokio::time::Instant;

    pub(crate) enum CallStats {}

    impl CallStats {
        pub(crate) fn record(&self, _: &metrics::SharedString, _: bool, _: Instant) {
            match *self {}
        }
    }
}
