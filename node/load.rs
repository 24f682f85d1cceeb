//! Load generation, shared by `meshrpc bench` and by nodes asked to load one of their peers:
//! N calls in flight spread over one or more links, for a duration or a number of calls,
//! with latencies in an HDR histogram and errors counted by kind.
//!
//! Arguments given as JSON are encoded with bincode the way a typed Rust caller would encode
//! them (see [`RustArgs`]), so the load measures the binary path, not JSON.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;
use tokio::time::Instant;

use futures_util::StreamExt;

use crate::cpu;

use meshrpc::stream::StreamOptions;
use meshrpc::{CallOptions, Peer};

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// The method to call (`echo` when `payload` is set).
    pub method: String,
    /// Its arguments, a JSON positional array (ignored when `payload` is set).
    pub args: Value,
    /// Call `echo` with this many bytes instead.
    pub payload: Option<usize>,
    /// Calls in flight in total.
    pub concurrency: usize,
    /// Stop after this long (milliseconds)...
    pub duration_ms: Option<u64>,
    /// ...or after this many calls. With neither, 10 seconds.
    pub calls: Option<u64>,
    /// Load run first and not measured (milliseconds).
    pub warmup_ms: u64,
    /// Deadline of each call (milliseconds).
    pub timeout_ms: u64,
    /// Instead of calls: each of `concurrency` workers reads one server stream of
    /// `payload`-byte items (the demo's `payloads`); items count as calls, and latency is
    /// the gap between two items.
    #[serde(default)]
    pub stream: bool,
    /// Before the load, open on each link a stream of `payloads` that is never read, to
    /// measure what a stalled stream costs the calls beside it.
    #[serde(default)]
    pub stalled_stream: bool,
    /// Spread the calls over this many virtual-actor keys: `KEY-0` to `KEY-(n-1)` in turn,
    /// after the method's `/KEY`.
    #[serde(default)]
    pub keys: Option<usize>,
}

/// The demo's server stream of payloads: `payloads(size, count)`.
pub const STREAM_METHOD: &str = "payloads";

impl Default for LoadSpec {
    fn default() -> Self {
        LoadSpec {
            method: "add".to_owned(),
            args: serde_json::json!([2, 3]),
            payload: None,
            concurrency: 64,
            duration_ms: None,
            calls: None,
            warmup_ms: 0,
            timeout_ms: 10_000,
            stream: false,
            stalled_stream: false,
            keys: None,
        }
    }
}

/// What a run measured. Latencies are in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Calls that succeeded.
    pub calls: u64,
    /// Length of the measured run.
    pub secs: f64,
    /// Successful calls per second.
    pub calls_per_sec: f64,
    /// Payload megabytes (10^6 bytes) per second, one way; 0 without a payload.
    pub mb_per_sec: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Slowest call.
    pub max_us: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Standard deviation of the latency.
    #[serde(default)]
    pub stdev_us: f64,
    /// Failed calls by error kind.
    pub errors: BTreeMap<String, u64>,
    /// The message of one failed call, when any failed (`kind: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_error: Option<String>,
    /// The latency distribution, HdrHistogram's percentile iteration (5 ticks per half
    /// distance): what `--hgrm` writes and `--plot` draws.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percentiles: Vec<Percentile>,
    /// CPU (user + system) the loading process spent per successful call, in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_call: Option<f64>,
    /// CPU the target node spent per successful call, in µs, when it runs on this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cpu_us_per_call: Option<f64>,
    /// When the target went away (its link closed, for good): seconds into the run. The
    /// figures above cover the run up to then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost_after_secs: Option<f64>,
}

/// One step of the latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    /// The fraction of calls at or below `value_us` (0.5 is p50).
    pub quantile: f64,
    /// Latency, in microseconds.
    pub value_us: u64,
    /// Calls at or below it.
    pub count: u64,
}

/// The percentile iteration of `histogram` (as HdrHistogram prints it).
fn percentiles(histogram: &Histogram<u64>) -> Vec<Percentile> {
    let mut total = 0;
    histogram
        .iter_quantiles(5)
        .map(|step| {
            total += step.count_since_last_iteration();
            Percentile {
                quantile: step.quantile_iterated_to(),
                value_us: step.value_iterated_to(),
                count: total,
            }
        })
        .collect()
}

impl Report {
    /// Calls that failed.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Encodes a JSON positional array as a typed Rust caller's bincode arguments: `[]` as `()`,
/// `[x]` as `x`, `[x, y, ..]` as a tuple; integers as `i64` (or `u64` above `i64::MAX`),
/// other numbers as `f64`, nested arrays as sequences and objects as maps.
pub struct RustArgs<'a>(pub &'a Value);

impl Serialize for RustArgs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Array(items) if items.is_empty() => s.serialize_unit(),
            Value::Array(items) if items.len() == 1 => AsRust(&items[0]).serialize(s),
            Value::Array(items) => {
                let mut tuple = s.serialize_tuple(items.len())?;
                for item in items {
                    tuple.serialize_element(&AsRust(item))?;
                }
                tuple.end()
            }
            other => AsRust(other).serialize(s),
        }
    }
}

struct AsRust<'a>(&'a Value);

impl Serialize for AsRust<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => s.serialize_i64(i),
                (None, Some(u)) => s.serialize_u64(u),
                _ => s.serialize_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(text) => s.serialize_str(text),
            Value::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&AsRust(item))?;
                }
                seq.end()
            }
            Value::Object(fields) => {
                let mut map = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, &AsRust(v))?;
                }
                map.end()
            }
        }
    }
}

/// Runs `spec` over `peers` (calls spread evenly); `progress` counts successful calls as
/// they happen, for a live display. `node` is the target's process on this machine, if
/// known, whose CPU per call the report then carries.
pub async fn run(
    peers: &[Peer],
    spec: &LoadSpec,
    progress: Arc<AtomicU64>,
    node: Option<u32>,
) -> Report {
    // Held, unread, until the run ends: each fills its window and stalls.
    let _stalled: Vec<_> = if spec.stalled_stream {
        let size = spec.payload.unwrap_or(64 << 10) as u64;
        let options = StreamOptions::default().idle(None);
        peers
            .iter()
            .map(|peer| {
                peer.call_stream_with::<serde_bytes::ByteBuf>(
                    STREAM_METHOD,
                    (size, u64::MAX),
                    options,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    if spec.warmup_ms > 0 {
        let warmup = LoadSpec {
            duration_ms: Some(spec.warmup_ms),
            calls: None,
            ..spec.clone()
        };
        measure(peers, &warmup, Arc::new(AtomicU64::new(0))).await;
    }
    let cpu_before = (
        cpu::cpu_secs(None),
        node.and_then(|pid| cpu::cpu_secs(Some(pid))),
    );
    let mut report = measure(peers, spec, progress).await;
    let cpu_after = (
        cpu::cpu_secs(None),
        node.and_then(|pid| cpu::cpu_secs(Some(pid))),
    );
    let per_call = |before: Option<f64>, after: Option<f64>| match (before, after) {
        (Some(b), Some(a)) if report.calls > 0 => {
            Some((a - b).max(0.0) * 1e6 / report.calls as f64)
        }
        _ => None,
    };
    report.client_cpu_us_per_call = per_call(cpu_before.0, cpu_after.0);
    report.node_cpu_us_per_call = per_call(cpu_before.1, cpu_after.1);
    report
}

/// How long a worker waits after a failed call.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// The largest latency the histograms track: a call's deadline is bounded well below this.
const MAX_LATENCY_US: u64 = 3_600_000_000;

async fn measure(peers: &[Peer], spec: &LoadSpec, progress: Arc<AtomicU64>) -> Report {
    let deadline = match (spec.duration_ms, spec.calls) {
        (Some(ms), _) => Some(Instant::now() + Duration::from_millis(ms)),
        (None, Some(_)) => None,
        (None, None) => Some(Instant::now() + Duration::from_secs(10)),
    };
    // Calls not yet started; without a call limit the deadline ends the run.
    let budget = Arc::new(AtomicU64::new(spec.calls.unwrap_or(u64::MAX)));
    let payload = spec
        .payload
        .map(|n| serde_bytes::ByteBuf::from(vec![0xA5u8; n]));
    let methods: Arc<Vec<String>> = Arc::new(match (spec.keys, &spec.payload) {
        (_, Some(_)) => vec!["echo".to_owned()],
        (Some(n), None) => (0..n.max(1))
            .map(|k| format!("{}-{k}", spec.method))
            .collect(),
        (None, None) => vec![spec.method.clone()],
    });
    let turn = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..spec.concurrency.max(1))
        .filter_map(|i| peers.get(i % peers.len().max(1)).cloned())
        .map(|peer| {
            let (budget, progress, payload) = (budget.clone(), progress.clone(), payload.clone());
            let spec = spec.clone();
            let calls = Calls {
                methods: methods.clone(),
                turn: turn.clone(),
            };
            tokio::spawn(async move {
                worker(peer, spec, calls, payload, deadline, budget, progress).await
            })
        })
        .collect();
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::new();
    let mut sample_error = None;
    let mut lost: Option<Instant> = None;
    for worker in workers {
        let Ok(done) = worker.await else {
            continue;
        };
        let _ = latencies.add(&done.latencies); // same bounds: cannot fail
        for (kind, n) in done.errors {
            *errors.entry(kind).or_insert(0) += n;
        }
        sample_error = sample_error.or(done.sample_error);
        lost = match (lost, done.lost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    // A run whose target went away is measured up to then, not averaged over the rest.
    let ended = lost.unwrap_or_else(Instant::now);
    let secs = ended.duration_since(started).as_secs_f64().max(1e-9);
    let calls = latencies.len();
    let size = match spec.payload {
        None if spec.stream => 64 << 10,
        size => size.unwrap_or(0),
    };
    let bytes = size as f64 * calls as f64;
    Report {
        calls,
        secs,
        calls_per_sec: calls as f64 / secs,
        mb_per_sec: bytes / secs / 1e6,
        p50_us: latencies.value_at_quantile(0.50),
        p90_us: latencies.value_at_quantile(0.90),
        p99_us: latencies.value_at_quantile(0.99),
        p999_us: latencies.value_at_quantile(0.999),
        max_us: latencies.max(),
        mean_us: latencies.mean(),
        stdev_us: latencies.stdev(),
        errors,
        sample_error,
        percentiles: percentiles(&latencies),
        client_cpu_us_per_call: None,
        node_cpu_us_per_call: None,
        lost_after_secs: lost.map(|_| secs),
    }
}

/// What one worker measured.
struct Done {
    latencies: Histogram<u64>,
    errors: BTreeMap<String, u64>,
    sample_error: Option<String>,
    /// When its link closed for good, if it did: the worker stopped there.
    lost: Option<Instant>,
}

fn new_histogram() -> Histogram<u64> {
    // Valid bounds (low >= 1, high >= 2 * low, 3 significant figures): cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!())
}

/// The method names the workers call, in turn (one, or one per key).
struct Calls {
    methods: Arc<Vec<String>>,
    turn: Arc<AtomicU64>,
}

impl Calls {
    fn next(&self) -> &str {
        let at = match self.methods.len() {
            0 | 1 => 0,
            n => (self.turn.fetch_add(1, Ordering::Relaxed) % n as u64) as usize,
        };
        self.methods.get(at).map_or("add", String::as_str)
    }
}

async fn worker(
    peer: Peer,
    spec: LoadSpec,
    calls: Calls,
    payload: Option<serde_bytes::ByteBuf>,
    deadline: Option<Instant>,
    budget: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
) -> Done {
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::new();
    let mut sample_error = None;
    let options = CallOptions::timeout(Duration::from_millis(spec.timeout_ms));
    if spec.stream {
        return stream_worker(peer, &spec, deadline, budget, progress).await;
    }
    // Each reading of the clock ends one call and starts the next (the clock is a fifth of
    // a small call's CPU in this loop otherwise); the shared counters are touched only when
    // they must be: the budget when the run is a number of calls, the live count in steps.
    let limited = spec.calls.is_some();
    let mut unreported = 0u64;
    let mut now = Instant::now();
    let lost = loop {
        if deadline.is_some_and(|d| now >= d) {
            break None;
        }
        if limited
            && budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_err()
        {
            break None;
        }
        let method = calls.next();
        let start = now;
        let result = match &payload {
            Some(bytes) => peer.call_raw(method, bytes, options).await,
            None => peer.call_raw(method, RustArgs(&spec.args), options).await,
        };
        now = Instant::now();
        match result {
            Ok(_) => {
                let us = now
                    .duration_since(start)
                    .as_micros()
                    .clamp(1, u128::from(MAX_LATENCY_US)) as u64;
                latencies.saturating_record(us);
                unreported += 1;
                if unreported == PROGRESS_STEP {
                    progress.fetch_add(unreported, Ordering::Relaxed);
                    unreported = 0;
                }
            }
            Err(e) => {
                *errors.entry(e.kind().as_str().to_owned()).or_insert(0) += 1;
                sample_error.get_or_insert_with(|| format!("{}: {e}", e.kind()));
                // A peer's link does not come back: its target is gone, and the run with it.
                if !peer.is_connected() {
                    break Some(now);
                }
                // Refused (overloaded, say): pause, so the run measures attempts rather
                // than how fast an error can be returned.
                tokio::time::sleep(ERROR_PAUSE).await;
                now = Instant::now();
            }
        }
    };
    progress.fetch_add(unreported, Ordering::Relaxed);
    Done {
        latencies,
        errors,
        sample_error,
        lost,
    }
}

/// A worker adds its successful calls to the live count this many at a time.
const PROGRESS_STEP: u64 = 64;

/// One server stream read to the deadline (or the budget), recording the gap between
/// items; a stream that fails is reopened after a pause.
async fn stream_worker(
    peer: Peer,
    spec: &LoadSpec,
    deadline: Option<Instant>,
    budget: Arc<AtomicU64>,
    progress: Arc<AtomicU64>,
) -> Done {
    let mut latencies = new_histogram();
    let mut errors = BTreeMap::new();
    let mut sample_error = None;
    let mut lost = None;
    let size = spec.payload.unwrap_or(64 << 10) as u64;
    let idle = Duration::from_millis(spec.timeout_ms);
    let options = StreamOptions::default().idle(Some(idle));
    'open: loop {
        let mut items =
            peer.call_stream_with::<serde_bytes::ByteBuf>(STREAM_METHOD, (size, u64::MAX), options);
        let mut last = Instant::now();
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d)
                || budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
            {
                break 'open; // dropping the stream cancels it
            }
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d, items.next()).await {
                    Ok(next) => next,
                    Err(_) => break 'open,
                },
                None => items.next().await,
            };
            match next {
                Some(Ok(_)) => {
                    let now = Instant::now();
                    let us = now
                        .duration_since(last)
                        .as_micros()
                        .clamp(1, u128::from(MAX_LATENCY_US));
                    latencies.saturating_record(us as u64);
                    last = now;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    *errors.entry(e.kind().as_str().to_owned()).or_insert(0) += 1;
                    sample_error.get_or_insert_with(|| format!("{}: {e}", e.kind()));
                    if !peer.is_connected() {
                        lost = Some(Instant::now());
                        break 'open;
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                    continue 'open;
                }
                None => continue 'open,
            }
        }
    }
    Done {
        latencies,
        errors,
        sample_error,
        lost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bincode as the wire encodes arguments (the standard configuration, docs/PROTOCOL.md).
    fn bincode_of<T: Serialize>(value: &T) -> Vec<u8> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    #[test]
    fn json_args_encode_like_typed_rust_arguments() {
        assert_eq!(
            bincode_of(&RustArgs(&serde_json::json!([2, 3]))),
            bincode_of(&(2i64, 3i64))
        );
        assert_eq!(
            bincode_of(&RustArgs(&serde_json::json!([5]))),
            bincode_of(&5i64)
        );
        assert_eq!(
            bincode_of(&RustArgs(&serde_json::json!([]))),
            bincode_of(&())
        );
        assert_eq!(
            bincode_of(&RustArgs(&serde_json::json!(["add", [1, -2], true]))),
            bincode_of(&("add", vec![1i64, -2], true))
        );
    }
}
