//! `/ready` and `/health`, as a Kubernetes probe sees them: ready only once the node has
//! joined through its seeds (at once without seeds, or when its seeds name only itself),
//! not ready again while it shuts down; both answer without the gateway's token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshrpc::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

/// `GET path` on the gateway: (status, body).
async fn get(node: &Node, path: &str) -> (u16, String) {
    let addr = node.http_addr().expect("a gateway");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    timeout(PATIENCE, tcp.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn config(name: &str, seeds: Vec<String>) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        seeds,
        http: Some("127.0.0.1:0".parse().expect("addr")),
        http_token: Some("a-gateway-secret".into()),
        ..NodeConfig::default()
    }
}

/// A loopback port nothing listens on now (TCP and UDP).
fn free_port() -> u16 {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok());
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_join_and_the_shutdown() {
    // Without seeds: ready at once; the probes need no token.
    let alone = Node::start(config("alone", vec![])).await.expect("node");
    assert_eq!(get(&alone, "/ready").await.0, 200);
    assert_eq!(get(&alone, "/health").await.0, 200);
    assert_eq!(
        get(&alone, "/metrics").await.0,
        401,
        "other paths need the token"
    );

    // A seed that is not there yet: alive, not ready.
    let port = free_port();
    let joiner = Node::start(config("joiner", vec![format!("127.0.0.1:{port}")]))
        .await
        .expect("node");
    let (status, body) = get(&joiner, "/ready").await;
    assert_eq!(
        (status, body.trim()),
        (503, "joining the cluster through its seeds")
    );
    assert_eq!(get(&joiner, "/health").await.0, 200);
    let seed = Node::start(NodeConfig {
        listen: format!("127.0.0.1:{port}"),
        ..config("seed", vec![])
    })
    .await
    .expect("the seed on its port");
    let deadline = Instant::now() + PATIENCE;
    while get(&joiner, "/ready").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "never ready after its seed came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Shutting down: not ready while a running call holds the shutdown in its grace.
    let running = Arc::new(AtomicBool::new(false));
    let started = running.clone();
    seed.register("sleep", move |ms: u64| {
        started.store(true, Ordering::SeqCst);
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<u64, String>(ms)
        }
    });
    let caller = joiner.clone();
    let seed_addr = seed.addr();
    let call = tokio::spawn(async move { caller.call::<u64>(seed_addr, "sleep", 2_000u64).await });
    // Running before the shutdown starts, so the shutdown waits for it.
    let deadline = Instant::now() + PATIENCE;
    while !running.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the call never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stopping = seed.clone();
    let stop = tokio::spawn(async move { stopping.shutdown().await });
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = get(&seed, "/ready").await;
        if status == 503 {
            assert_eq!(body.trim(), "shutting down");
            break;
        }
        assert!(Instant::now() < deadline, "still ready while shutting down");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.await.expect("shutdown");
    let _ = call.await;
    // Seeds that name only this node: the first of its cluster, ready.
    let port = free_port();
    let first = Node::start(NodeConfig {
        listen: format!("127.0.0.1:{port}"),
        ..config("first", vec![format!("127.0.0.1:{port}")])
    })
    .await
    .expect("node");
    let deadline = Instant::now() + PATIENCE;
    while get(&first, "/ready").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "a node seeded with itself never got ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in [alone, joiner, first] {
        node.shutdown().await;
    }
}

/// The library emits to the `metrics` facade and installs no recorder of its own: without
/// `meshrpc::install_prometheus` (which `meshrpc node` calls), `/metrics` says why it is
/// empty. No test in this binary installs one.
#[tokio::test]
async fn a_library_node_installs_no_recorder_by_itself() {
    let node = Node::start(NodeConfig {
        http_token: None,
        http_open: true,
        ..config("quiet", vec![])
    })
    .await
    .expect("node");
    let (status, body) = get(&node, "/metrics").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("install_prometheus"), "{body}");
    node.shutdown().await;
}
