//! What one caller can take from a node, and gives back: the calls of a link that closed stop
//! and free their slots; no request runs past the node's `max_call`; plain clients together
//! never take the slots nodes need to call each other.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshrpc::actor::Activation;
use meshrpc::{CallOptions, Client, ErrorKind, Node, NodeConfig};
use tokio::time::{timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(20);
/// The node-wide in-flight bound of these nodes; clients get ¾ of it.
const SLOTS: usize = 40;

async fn node(config: NodeConfig) -> Node {
    let node = Node::start(NodeConfig {
        max_in_flight_node: SLOTS,
        ..config
    })
    .await
    .expect("node");
    node.register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, String>(ms)
    });
    node.register("add", |(a, b): (i64, i64)| a + b);
    node
}

/// How the hogs' calls ended so far, by outcome (refused once the share is full, ended by
/// the test closing the link, or anything else), for a failure's message.
type Ended = Arc<Mutex<BTreeMap<String, usize>>>;

/// Starts `n` minute-long `sleep` calls from `client` without waiting for them.
fn hog_calls(client: &Client, n: usize, ended: &Ended) {
    for _ in 0..n {
        let (peer, ended) = (meshrpc::Peer::from(client), ended.clone());
        tokio::spawn(async move {
            let options = CallOptions::timeout(Duration::from_secs(3600));
            let outcome = match peer.call_with::<u64>("sleep", 60_000u64, options).await {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{}: {e}", e.kind()),
            };
            *ended.lock().unwrap().entry(outcome).or_insert(0) += 1;
        });
    }
}

/// Calls `add` from `client` until it succeeds, failing after `PATIENCE`; returns how long
/// that took, and whether some attempt was refused `overloaded` first.
async fn add_until_served(client: &Client) -> (Duration, bool) {
    let started = Instant::now();
    let mut refused = false;
    loop {
        match client.peer().call::<i64>("add", (2i64, 3i64)).await {
            Ok(sum) => {
                assert_eq!(sum, 5);
                return (started.elapsed(), refused);
            }
            Err(e) if e.kind() == ErrorKind::Overloaded => refused = true,
            Err(e) => panic!("add failed: {e}"),
        }
        assert!(started.elapsed() < PATIENCE, "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until a call from `probe` is refused `overloaded`: `hog`'s calls hold the slots.
/// A probe call in flight takes a slot of the share for a moment, so a hog call arriving
/// then is refused and the share may stay one short: each admitted probe call is answered
/// by one more hog call, until the share is full.
async fn until_full(probe: &Client, hog: &Client, ended: &Ended) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = match probe.peer().call::<i64>("add", (1i64, 1i64)).await {
            Err(e) if e.kind() == ErrorKind::Overloaded => return,
            other => other,
        };
        assert!(
            Instant::now() < deadline,
            "the slots never filled; the probe's last call: {last:?}; the hogs' calls ended: {:?}",
            ended.lock().unwrap()
        );
        hog_calls(hog, 1, ended);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_of_a_closed_link_stop_and_free_their_slots() {
    let node = node(NodeConfig::default()).await;
    let hog_client = Client::connect(node.addr()).await.unwrap();
    let ended = Ended::default();
    hog_calls(&hog_client, SLOTS, &ended);
    let other = Client::connect(node.addr()).await.unwrap();
    until_full(&other, &hog_client, &ended).await;
    // The hog goes away with every call still running: they stop, and others are served at
    // once, not when the sleeps would have ended a minute later.
    hog_client.close().await;
    let (took, _) = add_until_served(&other).await;
    assert!(took < Duration::from_secs(10), "served after {took:?}");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_runs_past_the_nodes_max_call_whatever_its_deadline() {
    let node = node(NodeConfig {
        max_call: Duration::from_millis(300),
        ..NodeConfig::default()
    })
    .await;
    let client = Client::connect(node.addr()).await.unwrap();
    let started = Instant::now();
    let options = CallOptions::timeout(Duration::from_secs(3600));
    let err = timeout(
        PATIENCE,
        client.peer().call_with::<u64>("sleep", 60_000u64, options),
    )
    .await
    .expect("ends")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_however_many_never_take_the_slots_nodes_call_each_other_with() {
    let node = node(NodeConfig::default()).await;
    let hogs: Vec<Client> = futures_util::future::join_all(
        (0..4).map(|_| async { Client::connect(node.addr()).await.unwrap() }),
    )
    .await;
    let ended = Ended::default();
    for client in &hogs {
        hog_calls(client, SLOTS / 4, &ended);
    }
    let probe = Client::connect(node.addr()).await.unwrap();
    until_full(&probe, &hogs[0], &ended).await;
    // Another node still gets its calls through.
    let other = Node::start(NodeConfig {
        name: "other".into(),
        ..NodeConfig::default()
    })
    .await
    .unwrap();
    let sum: i64 = timeout(PATIENCE, other.call(node.addr(), "add", (2i64, 3i64)))
        .await
        .expect("in time")
        .expect("a node's call is served");
    assert_eq!(sum, 5);
    for client in hogs {
        client.close().await;
    }
    other.shutdown().await;
    node.shutdown().await;
}

/// A node hosting the `vcounter` virtual actor of the demo.
async fn counter_node(config: NodeConfig) -> Node {
    let node = Node::start(config).await.expect("node");
    node.virtual_actor("vcounter", |_key: &str| 0i64)
        .method("incr", |n: &mut i64, by: i64| {
            *n += by;
            *n
        })
        .start()
        .await
        .expect("the type");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_with_every_call_cannot_grow_a_node_past_its_max_activations() {
    const MAX: usize = 200;
    let node = counter_node(NodeConfig {
        max_activations: MAX,
        ..NodeConfig::default()
    })
    .await;
    let client = Client::connect(node.addr()).await.unwrap();
    let (mut served, mut refused) = (0, 0);
    for i in 0..(MAX * 5) {
        match client
            .peer()
            .call::<i64>(&format!("vcounter.incr/k{i}"), 1i64)
            .await
        {
            Ok(n) => {
                assert_eq!(n, 1);
                served += 1;
            }
            Err(e) if e.kind() == ErrorKind::Overloaded => refused += 1,
            Err(e) => panic!("{e}"),
        }
        // Never past the budget, whatever the calls do.
        assert!(
            node.activations().len() <= MAX,
            "{}",
            node.activations().len()
        );
    }
    // Shedding makes room: more keys were served than the node may hold at once.
    assert!(served > MAX, "served {served}, refused {refused}");
    client.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_actors_pages_and_never_lists_the_whole_table() {
    let node = counter_node(NodeConfig::default()).await;
    let client = Client::connect(node.addr()).await.unwrap();
    for i in 0..1200 {
        let _: i64 = client
            .peer()
            .call(&format!("vcounter.incr/k{i:04}"), 1i64)
            .await
            .unwrap();
    }
    let first: Vec<Activation> = client.peer().call("system.actors", ()).await.unwrap();
    assert_eq!(first.len(), 1000, "at most a page");
    #[derive(serde::Deserialize)]
    struct Page {
        count: usize,
        activations: Vec<Activation>,
        next: Option<(String, String)>,
    }
    let mut after: Option<(String, String)> = None;
    let mut keys = Vec::new();
    loop {
        let page: Page = client
            .peer()
            .call("system.actors.page", (500usize, after.clone()))
            .await
            .unwrap();
        assert_eq!(page.count, 1200);
        assert!(page.activations.len() <= 500);
        keys.extend(page.activations.into_iter().map(|a| a.key));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<String> = (0..1200).map(|i| format!("k{i:04}")).collect();
    assert_eq!(keys, expected, "every activation once, in order");
    client.close().await;
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_beyond_max_connections_are_refused_saying_why() {
    let node = node(NodeConfig {
        max_connections: 3,
        ..NodeConfig::default()
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(node.addr()).await.expect("within the cap"));
    }
    let refused = Client::connect(node.addr())
        .await
        .err()
        .expect("beyond the cap");
    assert!(
        refused.to_string().contains("--max-connections"),
        "{refused}"
    );
    // Room again once one goes.
    held.pop().unwrap().close().await;
    let deadline = Instant::now() + PATIENCE;
    let again = loop {
        match Client::connect(node.addr()).await {
            Ok(client) => break client,
            Err(_) => assert!(Instant::now() < deadline, "never room again"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        again.peer().call::<i64>("add", (2i64, 3i64)).await.unwrap(),
        5
    );
    node.shutdown().await;
}

/// A plain client's handshake on a raw socket; the socket, ready for frames.
async fn raw_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use meshrpc::wire::{self, Hello, Identity, NodeId, Welcome};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    async fn frame(s: &mut tokio::net::TcpStream) -> Vec<u8> {
        let len = s.read_u32().await.unwrap() as usize;
        let mut payload = vec![0; len];
        s.read_exact(&mut payload).await.unwrap();
        payload
    }
    let _greeting = frame(&mut s).await;
    let hello = Hello {
        identity: Identity {
            id: NodeId(rand::random()),
            name: "raw".into(),
            listen: None,
            max_frame: 1 << 20,
            incarnation: 0,
        },
        nonce: [1; 16],
        proof: None,
    };
    s.write_all(&wire::encode_handshake(&hello).unwrap())
        .await
        .unwrap();
    let welcome: Welcome = wire::decode_handshake(&frame(&mut s).await).unwrap();
    assert_eq!(welcome.verdict, wire::Verdict::Accept);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_trickled_on_many_links_cannot_hold_more_than_the_frame_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const MIB: usize = 1 << 20;
    let node = node(NodeConfig {
        max_frame: 16 * MIB,
        frame_budget: 40 * MIB,
        ..NodeConfig::default()
    })
    .await;
    // Each starts a 16 MiB frame and sends a few bytes of it: two fit the budget, the
    // third does not, and its link is closed.
    let mut links = Vec::new();
    for _ in 0..3 {
        let mut s = raw_client(node.addr()).await;
        s.write_all(&((16 * MIB - 64) as u32).to_be_bytes())
            .await
            .unwrap();
        s.write_all(&[0; 10]).await.unwrap();
        links.push(s);
    }
    let mut closed = 0;
    for s in &mut links {
        let mut buf = [0u8; 64];
        // The node writes nothing to a link it keeps: a read that ends is a close.
        if let Ok(Ok(0) | Err(_)) = timeout(Duration::from_millis(500), s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "exactly the frame that did not fit was refused");
    let client = Client::connect(node.addr()).await.unwrap();
    assert_eq!(
        client
            .peer()
            .call::<i64>("add", (2i64, 3i64))
            .await
            .unwrap(),
        5
    );
    node.shutdown().await;
}
