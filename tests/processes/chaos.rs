//! Faults, load and hostile peers with real `meshrpc node` processes on loopback, bounded in
//! time: kill -9 under load (every call accounted for), a restart under load, a thousand
//! connections opened and dropped, a peer that never reads, and a partition through a
//! fault-injecting proxy. Timings are shortened with --heartbeat-ms / --down-after-ms.

use crate::support;

use std::io::{ErrorKind, Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use meshrpc::wire::{self, Encoding, FrameBuf, Greeting, Header, Hello, Identity, NodeId, Welcome};
use meshrpc::{CallOptions, Client, Node, RpcError};
use support::proxy::{Mode, Proxy};
use support::{call_ok, members, wait_until, NodeProc, PATIENCE};

const FAST: [&str; 4] = ["--heartbeat-ms", "100", "--down-after-ms", "1000"];

fn start(name: &str, extra: &[&str]) -> NodeProc {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    NodeProc::start(name, &args)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Tally {
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    slowest_ms: AtomicU64,
}

/// Calls `add` in a loop from `workers` tasks until `stop_at`, counting every outcome and
/// the slowest call; `make` gives each call its peer (reconnecting if it must).
async fn load<F, Fut>(workers: usize, stop_at: Instant, tally: Arc<Tally>, call: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<i64, RpcError>> + Send,
{
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (tally, call) = (tally.clone(), call.clone());
            tokio::spawn(async move {
                while Instant::now() < stop_at {
                    tally.issued.fetch_add(1, Ordering::Relaxed);
                    let started = Instant::now();
                    match call().await {
                        Ok(5) => tally.ok.fetch_add(1, Ordering::Relaxed),
                        Ok(other) => panic!("add(2, 3) returned {other}"),
                        Err(_) => tally.failed.fetch_add(1, Ordering::Relaxed),
                    };
                    tally
                        .slowest_ms
                        .fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    // A failing call returns at once: do not spin on a dead peer.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("load worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_every_call_ends_and_is_counted() {
    let victim = start("victim", &[]);
    let relay = start("relay", &["--seed", &victim.addr]);
    wait_until("the relay to link the victim", || {
        members(&relay.addr, &[]).get("victim").map(String::as_str) == Some("up")
    });
    let direct = Client::connect(&victim.addr).await.unwrap();
    let through = Client::connect(&relay.addr).await.unwrap();
    let deadline = Duration::from_secs(2);
    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(2);
    let direct_peer = direct.peer().clone();
    let direct_load = load(16, stop_at, tally.clone(), move || {
        let peer = direct_peer.clone();
        async move {
            peer.call_with::<i64>("add", (2i64, 3i64), CallOptions::timeout(deadline))
                .await
        }
    });
    // Through the relay: its fanout calls the victim over their link.
    let relayed = Arc::new(Tally::default());
    let through_peer = through.peer().clone();
    let relay_load = load(4, stop_at, relayed.clone(), move || {
        let peer = through_peer.clone();
        async move {
            let args = serde_json::json!(["add", [2, 3]]);
            let out = peer
                .call_json("fanout", &args, CallOptions::timeout(deadline))
                .await?;
            out.get("victim")
                .and_then(|v| v.as_i64())
                .ok_or(RpcError::Protocol(out.to_string()))
        }
    });
    // Both loads succeed before the kill: the relay's first call dials the victim first.
    let killer = async {
        wait_for(|| {
            tally.ok.load(Ordering::Relaxed) > 200 && relayed.ok.load(Ordering::Relaxed) > 20
        })
        .await;
        victim.signal("KILL");
    };
    tokio::time::timeout(PATIENCE, async {
        tokio::join!(direct_load, relay_load, killer)
    })
    .await
    .expect("the load ends by itself");
    for (what, t) in [("direct", &tally), ("through the relay", &relayed)] {
        let (issued, ok, failed) = (
            t.issued.load(Ordering::Relaxed),
            t.ok.load(Ordering::Relaxed),
            t.failed.load(Ordering::Relaxed),
        );
        assert_eq!(issued, ok + failed, "{what}: every call issued ended");
        assert!(
            ok > 0 && failed > 0,
            "{what}: {ok} succeeded, {failed} failed"
        );
        let slowest = t.slowest_ms.load(Ordering::Relaxed);
        assert!(
            slowest <= deadline.as_millis() as u64 + 1000,
            "{what}: a call took {slowest} ms, deadline 2000"
        );
    }
    // The relay is fine and knows the victim is gone.
    assert_eq!(call_ok(&relay.addr, "add", &["1", "1"]), "2");
    wait_until("the relay to mark the victim down", || {
        members(&relay.addr, &[]).get("victim").map(String::as_str) == Some("down")
    });
}

async fn wait_for(mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_recover_when_a_node_restarts_under_load() {
    let first = start("target", &[]);
    let addr = first.addr.clone();
    // A node as the caller: each call finds or redials the link by address.
    let caller = Node::builder("caller").start().await.unwrap();
    let tally = Arc::new(Tally::default());
    let stop_at = Instant::now() + Duration::from_secs(30);
    let (c, a) = (caller.clone(), addr.clone());
    let options = CallOptions::timeout(Duration::from_secs(2));
    let driver = tokio::spawn(load(8, stop_at, tally.clone(), move || {
        let (c, a) = (c.clone(), a.clone());
        async move {
            c.call_with::<i64>(a.as_str(), "add", (2i64, 3i64), options)
                .await
        }
    }));
    wait_for(|| tally.ok.load(Ordering::Relaxed) > 100).await;
    first.signal("KILL");
    wait_for(|| tally.failed.load(Ordering::Relaxed) > 0).await;
    drop(first);
    // The same address again, a new run.
    let _second = NodeProc::start_with("target", &addr, &FAST, std::process::Stdio::inherit());
    let ok_before = tally.ok.load(Ordering::Relaxed);
    wait_for(|| tally.ok.load(Ordering::Relaxed) > ok_before + 100).await;
    driver.abort();
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connections_opened_and_dropped_leave_no_growth() {
    let node = start("busy", &[]);
    // 1000 connections in rounds of 250, so neither process nears a 1024-descriptor limit.
    let round = || async {
        let clients =
            futures_util::future::join_all((0..250).map(|_| Client::connect(&node.addr))).await;
        let clients: Vec<Client> = clients.into_iter().map(|c| c.expect("connect")).collect();
        assert_eq!(
            clients[249]
                .peer()
                .call::<i64>("add", (1i64, 2i64))
                .await
                .unwrap(),
            3
        );
        futures_util::future::join_all(clients.into_iter().map(Client::close)).await;
    };
    round().await;
    round().await;
    let after_first = rss_kib(node.pid());
    round().await;
    round().await;
    let after_second = rss_kib(node.pid());
    assert_eq!(
        call_ok(&node.addr, "add", &["2", "2"]),
        "4",
        "still serving"
    );
    // Memory freed by the first thousand is reused by the second: no growth.
    assert!(
        after_second <= after_first + 4096,
        "RSS grew from {after_first} KiB to {after_second} KiB"
    );
}

/// A raw client that completes the handshake and then only writes.
fn raw_handshake(addr: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let read_frame = |s: &mut std::net::TcpStream| {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut payload).unwrap();
        payload
    };
    let _greeting: Greeting = wire::decode_handshake(&read_frame(&mut stream)).unwrap();
    let identity = Identity {
        id: NodeId(42),
        name: "deaf".into(),
        listen: None,
        max_frame: 16 << 20,
        incarnation: 0,
    };
    stream
        .write_all(
            &wire::encode_handshake(&Hello {
                identity,
                nonce: [0; 16],
                proof: None,
            })
            .unwrap(),
        )
        .unwrap();
    let welcome: Welcome = wire::decode_handshake(&read_frame(&mut stream)).unwrap();
    assert_eq!(welcome.verdict, wire::Verdict::Accept);
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_cannot_grow_the_node_or_stop_it() {
    let node = start("patient", &[]);
    let before = rss_kib(node.pid());
    let mut deaf = raw_handshake(&node.addr);
    // Pipeline 64 KiB echo requests and never read a reply, for two seconds.
    let mut frame = BytesMut::new();
    let header = Header::Request {
        id: 1,
        method: "echo".into(),
        timeout_ms: Some(60_000),
        encoding: Encoding::Bincode,
        signature: None,
        trace: None,
    };
    let mut f = FrameBuf::new(&mut frame, &header).unwrap();
    wire::encode_value(
        &serde_bytes::ByteBuf::from(vec![7u8; 64 << 10]),
        f.body_mut(),
    )
    .unwrap();
    f.finish(usize::MAX).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(2);
    let mut sent = 0usize;
    let mut offset = 0usize;
    while Instant::now() < until {
        match deaf.write(&frame[offset..]) {
            Ok(n) => {
                sent += n;
                offset = (offset + n) % frame.len();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(_) => break, // the node closed us: fine too
        }
    }
    let peak = rss_kib(node.pid());
    assert!(sent > 1 << 20, "the test pushed {sent} bytes");
    assert!(
        peak < before + 200 * 1024,
        "RSS went from {before} KiB to {peak} KiB after {sent} bytes sent"
    );
    // Others are still served, and the deaf peer is cut off once silent past down_after.
    assert_eq!(call_ok(&node.addr, "add", &["1", "2"]), "3");
    deaf.set_nonblocking(false).unwrap();
    deaf.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut sink = vec![0u8; 1 << 20];
    let closed_at = Instant::now();
    loop {
        match deaf.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(
                closed_at.elapsed() < PATIENCE,
                "the node never closed the deaf link"
            ),
        }
    }
}

#[test]
fn a_partition_marks_both_sides_down_fails_calls_fast_and_heals() {
    // Each node advertises its own proxy, so every link between them (and every redial)
    // goes through the proxies.
    let (pa, pb) = (Proxy::bind(), Proxy::bind());
    let a = start("a", &["--advertise", &pa.addr]);
    pa.forward_to(&a.addr);
    let b = start("b", &["--advertise", &pb.addr, "--seed", &pa.addr]);
    pb.forward_to(&b.addr);
    let both_see = |status: &str| {
        members(&a.addr, &[]).get("b").map(String::as_str) == Some(status)
            && members(&b.addr, &[]).get("a").map(String::as_str) == Some(status)
    };
    wait_until("a and b to be up", || both_see("up"));
    // Black hole: bytes go in, nothing comes out. Only silence can tell.
    pa.set(Mode::BlackHole);
    pb.set(Mode::BlackHole);
    let cut_at = Instant::now();
    wait_until("both sides to mark each other down", || both_see("down"));
    assert!(
        cut_at.elapsed() < Duration::from_secs(6),
        "down after {:?}",
        cut_at.elapsed()
    );
    // Calls across the cut fail with a clear error at once, no hang.
    let started = Instant::now();
    let out = support::call(
        &a.addr,
        "bench.run",
        &[
            "\"b\"",
            r#"{"method":"add","args":[1,1],"payload":null,"concurrency":1,"duration_ms":null,"calls":1,"warmup_ms":0,"timeout_ms":1000}"#,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no connected peer has that name"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The link returns: the mesh heals by itself.
    pa.set(Mode::Pass);
    pb.set(Mode::Pass);
    wait_until("the mesh to heal", || both_see("up"));
    // A slow link (200 ms each way, well under down_after) is slow, not down.
    pa.delay(Duration::from_millis(200));
    pb.delay(Duration::from_millis(200));
    let slow = Instant::now();
    let out = support::call(&a.addr, "fanout", &["\"add\"", "[20, 22]"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{"b":42}"#);
    assert!(
        slow.elapsed() >= Duration::from_millis(400),
        "the call crossed the delayed link"
    );
    pa.delay(Duration::ZERO);
    pb.delay(Duration::ZERO);
    assert!(both_see("up"), "a slow link is not a dead one");
    // Cut: connections reset and redials refused, until the link returns.
    pa.set(Mode::Cut);
    pb.set(Mode::Cut);
    wait_until("both sides to mark each other down after the cut", || {
        both_see("down")
    });
    pa.set(Mode::Pass);
    pb.set(Mode::Pass);
    wait_until("the mesh to heal after the cut", || both_see("up"));
}
