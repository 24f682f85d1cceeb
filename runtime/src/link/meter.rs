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
