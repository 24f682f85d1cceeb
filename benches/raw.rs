//! The baseline of `baseline/` (a minimal pipelined framed echo on meshrpc's stack) as two
//! processes, so that `meshrpc bench` against a `meshrpc node` can be read as a ratio to it,
//! between processes and in one run: `scripts/bench_raw.py` starts both sides of each and
//! prints the table of docs/PERFORMANCE.md.
//!
//! ```text
//! raw server ADDR
//! raw client ADDR CONNECTIONS IN_FLIGHT BODY_BYTES WARMUP_SECS SECS
//! ```
//!
//! The server prints `ready` once it listens; the client prints `{"calls_per_sec": N}`.
//! Without arguments (as `cargo bench` runs every bench) it says what it is for and exits.

mod baseline;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baseline::Baseline;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    match args.first().map(String::as_str) {
        Some("server") if args.len() == 2 => runtime.block_on(async {
            Baseline::server(&args[1]).await;
            println!("ready");
            std::future::pending::<()>().await; // until killed
        }),
        Some("client") if args.len() == 7 => {
            let number = |i: usize| args[i].parse::<f64>().expect("a number");
            let rate = runtime.block_on(client(
                &args[1],
                number(2) as usize,
                number(3) as usize,
                number(4) as usize,
                Duration::from_secs_f64(number(5)),
                Duration::from_secs_f64(number(6)),
            ));
            println!("{{\"calls_per_sec\": {rate:.0}}}");
        }
        _ => eprintln!(
            "raw: the baseline as processes, for scripts/bench_raw.py \
             (raw server ADDR | raw client ADDR CONNECTIONS IN_FLIGHT BODY_BYTES WARMUP_SECS SECS)"
        ),
    }
}

/// `in_flight` callers spread over `connections` links, each calling in a loop; returns the
/// calls per second completed in the `secs` after `warmup`.
async fn client(
    addr: &str,
    connections: usize,
    in_flight: usize,
    body: usize,
    warmup: Duration,
    secs: Duration,
) -> f64 {
    let addr = addr.parse().expect("ADDR is HOST:PORT");
    let mut links = Vec::new();
    for _ in 0..connections.max(1) {
        links.push(Baseline::connect(addr).await);
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = Arc::new(vec![0xA5u8; body]);
    let callers: Vec<_> = (0..in_flight.max(1))
        .map(|i| {
            let (link, done, stop, body) = (
                links[i % links.len()].clone(),
                done.clone(),
                stop.clone(),
                body.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let reply = link.call(&body).await;
                    assert_eq!(reply.len(), body.len(), "an echo of another size");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(warmup).await;
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(secs).await;
    let calls = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        let _ = caller.await;
    }
    calls as f64 / elapsed.as_secs_f64()
}
