//! The gateway's calls take the road to self (in process, no link), yet stay a client's:
//! handlers see the gateway as their caller, its calls count in the clients' share of the
//! node, and an HTTP client that goes away aborts the handler it started.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshrpc::{Node, NodeConfig, RequestContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::support::eventually;

const PATIENCE: Duration = Duration::from_secs(20);

async fn gateway_node(name: &str, max_in_flight_node: usize) -> Node {
    Node::start(NodeConfig {
        name: name.to_owned(),
        http: Some("127.0.0.1:0".parse().expect("an address")),
        http_open: true,
        max_in_flight_node,
        // Far beyond any wait here: a call that ends ended because its client went away.
        default_timeout: Duration::from_secs(600),
        ..NodeConfig::default()
    })
    .await
    .expect("a node with a gateway")
}

/// Sends a JSON-RPC call and returns the open connection (the answer not yet read).
async fn send(node: &Node, method: &str, params: &str) -> TcpStream {
    let body = format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":1}}"#);
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = TcpStream::connect(node.http_addr().expect("a gateway"))
        .await
        .expect("connect");
    tcp.write_all(request.as_bytes()).await.expect("write");
    tcp
}

/// The body of the answer on `tcp`.
async fn answer(mut tcp: TcpStream) -> String {
    let mut bytes = vec![0u8; 64 * 1024];
    let mut got = String::new();
    while !got.contains("\r\n\r\n") || !got.ends_with('}') {
        let n = timeout(PATIENCE, tcp.read(&mut bytes))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before answering: {got}");
        got.push_str(&String::from_utf8_lossy(&bytes[..n]));
    }
    got.split("\r\n\r\n").nth(1).unwrap_or("").to_owned()
}

/// Counts the futures dropped before they finished (aborted); one that finishes forgets it.
struct Aborted(Arc<AtomicUsize>);

impl Drop for Aborted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Registers `hold`, which runs for an hour unless aborted: how many started, how many were
/// aborted.
fn register_hold(node: &Node) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (started, aborted) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, a) = (started.clone(), aborted.clone());
    node.register("hold", move |(): ()| {
        s.fetch_add(1, Ordering::SeqCst);
        let guard = Aborted(a.clone());
        async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            std::mem::forget(guard);
        }
    });
    (started, aborted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_see_the_gateway_as_their_caller() {
    let node = gateway_node("g1", 65_536).await;
    node.register("who", |cx: RequestContext, (): ()| {
        cx.caller().map(|p| p.name.clone())
    });
    let body = answer(send(&node, "who", "[]").await).await;
    assert!(body.contains(r#""result":"g1-http""#), "{body}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_client_that_goes_away_aborts_its_call() {
    let node = gateway_node("g2", 65_536).await;
    let (started, aborted) = register_hold(&node);
    let tcp = send(&node, "hold", "[]").await;
    eventually("the handler to start", || {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    drop(tcp);
    eventually("the handler to be aborted", || {
        aborted.load(Ordering::SeqCst) == 1
    })
    .await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_count_in_the_clients_share() {
    // Clients together get ¾ of the node's in-flight bound: 3 of 4.
    let node = gateway_node("g3", 4).await;
    let (started, _) = register_hold(&node);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(send(&node, "hold", "[]").await);
    }
    eventually("three calls to run", || started.load(Ordering::SeqCst) == 3).await;
    let body = answer(send(&node, "hold", "[]").await).await;
    assert!(body.contains("-32002"), "{body}");
    assert!(body.contains("clients have more than 3"), "{body}");
    drop(held);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_error_is_bounded_like_one_on_a_link() {
    let node = gateway_node("g4", 65_536).await;
    node.register(
        "loud",
        |n: usize| {
            if n > 0 {
                Err("x".repeat(n))
            } else {
                Ok(0)
            }
        },
    );
    let body = answer(send(&node, "loud", "[100000]").await).await;
    // The message is cut to 4 KiB and the data, over that bound, left out, as on a link.
    assert!(body.contains("-32000"), "{}", &body[..200.min(body.len())]);
    assert!(body.len() < 5_000, "{} bytes", body.len());
    assert!(!body.contains(r#""data""#), "{}", &body[..200]);
    node.shutdown().await;
}
