//! Virtual actors, measured: a call through `actor_ref` to an active virtual actor against a
//! call to a plain actor on the same callee node, in the same run and interleaved (the
//! ratio is what counts on a noisy machine); activations per second in process; and the
//! memory of a million idle activations. docs/PERFORMANCE.md has the table.
//!
//! `cargo bench --bench actors [-- --secs 3 --idle 1000000 --persist 1]`: with `--persist
//! 1` the million keys belong to a type whose state persists (a SQLite file in a temporary
//! folder), each written once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshrpc::{Node, NodeConfig};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

async fn node(name: &str, seed: Option<&Node>, vcounter: bool) -> Node {
    node_with(name, seed, vcounter, None).await
}

/// A node; with `state`, its `vcounter` persists there.
async fn node_with(name: &str, seed: Option<&Node>, vcounter: bool, state: Option<String>) -> Node {
    let persist = state.is_some();
    let node = Node::start(NodeConfig {
        name: name.to_owned(),
        seeds: seed.map(|s| s.addr().to_string()).into_iter().collect(),
        mailbox: 64,
        state,
        ..NodeConfig::default()
    })
    .await
    .expect("node");
    node.actor("counter", || 0i64)
        .method("incr", |n: &mut i64, by: i64| {
            *n += by;
            *n
        })
        .start();
    if vcounter {
        let mut builder = node.virtual_actor("vcounter", |_: &str| 0i64);
        if persist {
            builder = builder.persist();
        }
        builder
            .method("incr", |n: &mut i64, by: i64| {
                *n += by;
                *n
            })
            .start()
            .await
            .expect("vcounter");
    }
    node
}

/// Calls per second with `workers` concurrent callers for `secs`.
async fn rate<F, Fut>(secs: f64, workers: usize, call: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (call, done) = (call.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < until {
                    call(w).await;
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    done.load(std::sync::atomic::Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let secs = arg("--secs", 3) as f64;
    let idle = arg("--idle", 1_000_000);
    let persist = arg("--persist", 0) == 1;

    // Calls: the caller `a` hosts no virtual actors; `b` hosts both kinds.
    let b = node("b", None, true).await;
    let a = node("a", Some(&b), false).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.actor_ref("vcounter", "k0").owner().as_deref() != Some("b") {
        assert!(
            Instant::now() < deadline,
            "a never learned that b hosts vcounter"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("| calls from a to b | workers | plain actor (calls/s) | virtual actor via actor_ref (calls/s) | ratio |");
    println!("|---|---|---|---|---|");
    for workers in [1usize, 32] {
        let mut plain = Vec::new();
        let mut virt = Vec::new();
        for _round in 0..3 {
            let (a1, to) = (a.clone(), b.addr());
            plain.push(
                rate(secs, workers, move |_| {
                    let a1 = a1.clone();
                    async move {
                        let _: i64 = a1.call(to, "counter.incr", 1i64).await.expect("plain");
                    }
                })
                .await,
            );
            // One key for all workers, as one plain actor serves them all.
            let counter = a.actor_ref("vcounter", "k");
            virt.push(
                rate(secs, workers, move |_| {
                    let counter = counter.clone();
                    async move {
                        let _: i64 = counter.call("incr", 1i64).await.expect("virtual");
                    }
                })
                .await,
            );
        }
        plain.sort_by(f64::total_cmp);
        virt.sort_by(f64::total_cmp);
        let (p, v) = (plain[1], virt[1]);
        println!(
            "| median of 3 × {secs} s | {workers} | {p:.0} | {v:.0} | {:.2} |",
            v / p
        );
    }
    a.shutdown().await;
    b.shutdown().await;

    // Activations: one node, every call a new key, over its in-memory link to itself.
    let folder = std::env::temp_dir().join(format!("meshrpc-bench-actors-{}", std::process::id()));
    let state = persist.then(|| {
        std::fs::create_dir_all(&folder).expect("a temporary folder");
        format!("sqlite:{}", folder.join("state.db").display())
    });
    let solo = node_with("solo", None, true, state).await;
    let before = rss_mib();
    let started = Instant::now();
    let workers = 64u64;
    let per = idle.div_ceil(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let solo = solo.clone();
            tokio::spawn(async move {
                for i in 0..per {
                    let key = format!("key-{}", w * per + i);
                    let _: i64 = solo
                        .actor_ref("vcounter", &key)
                        .call("incr", 1i64)
                        .await
                        .expect("activation");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("worker");
    }
    let took = started.elapsed().as_secs_f64();
    let after = rss_mib();
    let active = solo.activations().len();
    println!();
    println!("| activations in process | count | activations/s | RSS before | RSS with all idle | per activation |");
    println!("|---|---|---|---|---|---|");
    let what = if persist { "persistent" } else { "volatile" };
    println!(
        "| new keys, 64 callers, {what} | {active} | {:.0} | {before:.0} MiB | {after:.0} MiB | {:.0} bytes |",
        active as f64 / took,
        (after - before) * 1024.0 * 1024.0 / active.max(1) as f64
    );
    solo.shutdown().await;
    let _ = std::fs::remove_dir_all(&folder);
}
