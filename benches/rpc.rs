//! Round trips between two in-process meshrpc nodes, against a baseline measured in the same
//! run: a minimal pipelined echo over the same stack (tokio, tokio-util length-delimited
//! frames, a bincode request with an id; no actors, no registry, no handshake). The baseline
//! is the practical ceiling of this design; read meshrpc's numbers as a ratio to it.
//!
//! `cargo bench --bench rpc`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use futures_util::{FutureExt, SinkExt, StreamExt};
use meshrpc::{Method, Node, Peer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

const ADD: Method<(i64, i64), i64> = Method::new("add");
const ECHO: Method<serde_bytes::ByteBuf, serde_bytes::ByteBuf> = Method::new("echo");
const BINCODE: bincode::config::Configuration = bincode::config::standard();

/// Runs `iters` calls of `call` with `in_flight` of them outstanding; returns the wall time.
/// Each worker has its own share of the calls: no counter shared between them.
async fn drive<F, Fut>(iters: u64, in_flight: u64, call: F) -> Duration
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let workers = in_flight.min(iters).max(1);
    let start = Instant::now();
    let workers: Vec<_> = (0..workers)
        .map(|w| {
            let share = iters / workers + u64::from(w < iters % workers);
            let call = call.clone();
            tokio::spawn(async move {
                for _ in 0..share {
                    call().await;
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("bench worker");
    }
    start.elapsed()
}

async fn meshrpc_pair() -> (Node, Node, Peer) {
    let server = Node::builder("server").start().await.expect("server");
    server.serve_fn(ADD, |(a, b)| a + b);
    server.serve_fn(ECHO, |bytes| bytes);
    let client = Node::builder("client").start().await.expect("client");
    let peer = client.peer(server.addr()).await.expect("link");
    (server, client, peer)
}

/// The baseline's request and reply: an id and a body.
#[derive(Serialize, Deserialize)]
struct Msg {
    id: u64,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
}

/// Baseline client: a writer task, a reader task and a pending table, like any pipelined client.
#[derive(Clone)]
struct Baseline {
    out: mpsc::UnboundedSender<Bytes>,
    pending: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>>,
    next: Arc<AtomicU64>,
}

impl Baseline {
    async fn start() -> Baseline {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(echo_server(stream));
            }
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (read, write) = stream.into_split();
        let (out, mut rx) = mpsc::unbounded_channel::<Bytes>();
        let pending: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>> = Arc::default();
        tokio::spawn(async move {
            let mut sink = FramedWrite::new(write, LengthDelimitedCodec::new());
            while let Some(frame) = rx.recv().await {
                let _ = sink.feed(frame).await;
                while let Ok(frame) = rx.try_recv() {
                    let _ = sink.feed(frame).await;
                }
                let _ = SinkExt::<Bytes>::flush(&mut sink).await;
            }
        });
        let routes = pending.clone();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, LengthDelimitedCodec::new());
            while let Some(Ok(frame)) = frames.next().await {
                if let Ok((msg, _)) = bincode::serde::decode_from_slice::<Msg, _>(&frame, BINCODE) {
                    if let Some((_, tx)) = routes.remove(&msg.id) {
                        let _ = tx.send(msg.body);
                    }
                }
            }
        });
        Baseline {
            out,
            pending,
            next: Arc::default(),
        }
    }

    async fn call(&self, body: &[u8]) -> Vec<u8> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, tx);
        let msg = Msg {
            id,
            body: body.to_vec(),
        };
        let bytes = bincode::serde::encode_to_vec(&msg, BINCODE).expect("encode");
        self.out.send(Bytes::from(bytes)).expect("writer alive");
        rx.await.expect("reply")
    }
}

/// Echoes every frame, flushing only when no other frame is ready.
async fn echo_server(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut frames = FramedRead::new(read, LengthDelimitedCodec::new());
    let mut sink = FramedWrite::new(write, LengthDelimitedCodec::new());
    while let Some(Ok(frame)) = frames.next().await {
        let mut next = Some(frame);
        while let Some(frame) = next.take() {
            let reply: BytesMut = frame; // same id, same body: an echo
            if sink.feed(reply.freeze()).await.is_err() {
                return;
            }
            if let Some(Some(Ok(more))) = frames.next().now_or_never() {
                next = Some(more);
            }
        }
        if SinkExt::<Bytes>::flush(&mut sink).await.is_err() {
            return;
        }
    }
}

fn round_trips(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (_server, _client, peer) = rt.block_on(meshrpc_pair());
    let baseline = rt.block_on(Baseline::start());
    let small = bincode::serde::encode_to_vec((2i64, 3i64), BINCODE).expect("encode");

    let mut group = c.benchmark_group("add");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(3));
    for in_flight in [1u64, 64] {
        let p = peer.clone();
        group.bench_function(BenchmarkId::new("meshrpc", in_flight), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let p = p.clone();
                drive(iters, in_flight, move || {
                    let p = p.clone();
                    async move {
                        assert_eq!(p.invoke(ADD, (2, 3)).await.expect("add"), 5);
                    }
                })
            })
        });
        let (base, small) = (baseline.clone(), small.clone());
        group.bench_function(BenchmarkId::new("baseline", in_flight), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (base, small) = (base.clone(), small.clone());
                drive(iters, in_flight, move || {
                    let (base, small) = (base.clone(), small.clone());
                    async move {
                        base.call(&small).await;
                    }
                })
            })
        });
    }
    group.finish();

    let payload = serde_bytes::ByteBuf::from(vec![0xA5u8; 64 << 10]);
    let mut group = c.benchmark_group("echo_64k");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.measurement_time(Duration::from_secs(3));
    let p = peer.clone();
    let body = payload.clone();
    group.bench_function(BenchmarkId::new("meshrpc", 16), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (p, body) = (p.clone(), body.clone());
            drive(iters, 16, move || {
                let (p, body) = (p.clone(), body.clone());
                async move {
                    let back = p.invoke(ECHO, body).await.expect("echo");
                    assert_eq!(back.len(), 64 << 10);
                }
            })
        })
    });
    let base = baseline.clone();
    group.bench_function(BenchmarkId::new("baseline", 16), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (base, body) = (base.clone(), payload.clone());
            drive(iters, 16, move || {
                let (base, body) = (base.clone(), body.clone());
                async move {
                    assert_eq!(base.call(&body).await.len(), 64 << 10);
                }
            })
        })
    });
    group.finish();
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
