//! Round trips between two in-process meshrpc nodes, against the baseline (a minimal
//! pipelined framed echo, see `baseline/`) measured in the same run. Read meshrpc's numbers
//! as a ratio to the baseline's: docs/PERFORMANCE.md has the table and how to reproduce it.
//!
//! `cargo bench --bench rpc`

mod baseline;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use meshrpc::{Client, Node, Peer};
use serde_bytes::ByteBuf;

use baseline::Baseline;

const ADD: &str = "add";
const ECHO: &str = "echo";
const INCR: &str = "counter.incr";

/// Runs `iters` calls with `in_flight` workers, each making its own share of them in turn;
/// `call(w)` makes one call for worker `w`. Returns the wall time.
async fn drive<F, Fut>(iters: u64, in_flight: u64, call: F) -> Duration
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let workers = in_flight.min(iters).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let share = iters / workers + u64::from(w < iters % workers);
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..share {
                    call(w).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench worker");
    }
    start.elapsed()
}

struct Setup {
    _server: Node,
    _client: Node,
    /// The client node's link to the server node.
    peer: Peer,
    /// Four more connections to the server, from plain clients.
    clients: Vec<Client>,
    baseline: Baseline,
    baselines: Vec<Baseline>,
}

async fn setup() -> Setup {
    let server = Node::builder("server").start().await.expect("server");
    server.register(ADD, |(a, b): (i64, i64)| a + b);
    server.register(ECHO, |bytes: ByteBuf| bytes);
    server
        .actor("counter", || 0i64)
        .method("incr", |n: &mut i64, by: i64| {
            *n = n.wrapping_add(by);
            *n
        })
        .start();
    let client = Node::builder("client").start().await.expect("client");
    let peer = client.peer(server.addr()).await.expect("link");
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(
            Client::connect(&server.addr().to_string())
                .await
                .expect("client"),
        );
    }
    let echo = Baseline::server("127.0.0.1:0").await;
    let baseline = Baseline::connect(echo).await;
    let mut baselines = Vec::new();
    for _ in 0..4 {
        baselines.push(Baseline::connect(echo).await);
    }
    Setup {
        _server: server,
        _client: client,
        peer,
        clients,
        baseline,
        baselines,
    }
}

fn round_trips(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let s = rt.block_on(setup());
    let small =
        bincode::serde::encode_to_vec((2i64, 3i64), bincode::config::standard()).expect("encode");

    let mut group = c.benchmark_group("add");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for in_flight in [1u64, 64] {
        let peer = s.peer.clone();
        group.bench_function(BenchmarkId::new("meshrpc", in_flight), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let peer = peer.clone();
                drive(iters, in_flight, move |_| {
                    let peer = peer.clone();
                    async move { assert_eq!(peer.call::<i64>(ADD, (2, 3)).await.expect("add"), 5) }
                })
            })
        });
        let (base, small) = (s.baseline.clone(), small.clone());
        group.bench_function(BenchmarkId::new("baseline", in_flight), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (base, small) = (base.clone(), small.clone());
                drive(iters, in_flight, move |_| {
                    let (base, small) = (base.clone(), small.clone());
                    async move {
                        base.call(&small).await;
                    }
                })
            })
        });
    }
    group.finish();

    // Four connections, 256 calls in flight spread over them.
    let mut group = c.benchmark_group("add_4_connections");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let peers: Vec<Peer> = s.clients.iter().map(|c| c.peer().clone()).collect();
    group.bench_function(BenchmarkId::new("meshrpc", 256), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let peers = peers.clone();
            drive(iters, 256, move |w| {
                let peer = peers[w as usize % peers.len()].clone();
                async move { assert_eq!(peer.call::<i64>(ADD, (2, 3)).await.expect("add"), 5) }
            })
        })
    });
    let (bases, small4) = (s.baselines.clone(), small.clone());
    group.bench_function(BenchmarkId::new("baseline", 256), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (bases, small) = (bases.clone(), small4.clone());
            drive(iters, 256, move |w| {
                let base = bases[w as usize % bases.len()].clone();
                let small = small.clone();
                async move {
                    base.call(&small).await;
                }
            })
        })
    });
    group.finish();

    let payload = ByteBuf::from(vec![0xA5u8; 64 << 10]);
    let mut group = c.benchmark_group("echo_64k");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    let (peer, body) = (s.peer.clone(), payload.clone());
    group.bench_function(BenchmarkId::new("meshrpc", 16), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (peer, body) = (peer.clone(), body.clone());
            drive(iters, 16, move |_| {
                let (peer, body) = (peer.clone(), body.clone());
                async move {
                    assert_eq!(
                        peer.call::<ByteBuf>(ECHO, body).await.expect("echo").len(),
                        64 << 10
                    )
                }
            })
        })
    });
    let base = s.baseline.clone();
    group.bench_function(BenchmarkId::new("baseline", 16), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (base, body) = (base.clone(), payload.clone());
            drive(iters, 16, move |_| {
                let (base, body) = (base.clone(), body.clone());
                async move { assert_eq!(base.call(&body).await.len(), 64 << 10) }
            })
        })
    });
    group.finish();

    // The same small call served by a stateless function and by an actor (one mailbox, one
    // call at a time): what the mailbox costs.
    let mut group = c.benchmark_group("mailbox");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    let peer = s.peer.clone();
    group.bench_function(BenchmarkId::new("actor_incr", 64), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let peer = peer.clone();
            drive(iters, 64, move |_| {
                let peer = peer.clone();
                async move {
                    peer.call::<i64>(INCR, 1).await.expect("incr");
                }
            })
        })
    });
    let peer = s.peer.clone();
    group.bench_function(BenchmarkId::new("function_add", 64), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let peer = peer.clone();
            drive(iters, 64, move |_| {
                let peer = peer.clone();
                async move {
                    peer.call::<i64>(ADD, (2, 3)).await.expect("add");
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
