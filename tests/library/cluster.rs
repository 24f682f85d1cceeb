//! In-process clusters: several nodes in one runtime, calling each other over loopback.

use crate::support;

use support::eventually;

use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshrpc::{CallOptions, ErrorKind, Node, NodeConfig, RpcError};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(20);
const ADD: &str = "add";

async fn node(name: &str) -> Node {
    let node = Node::builder(name).start().await.expect("node starts");
    node.register(ADD, |(a, b): (i64, i64)| a + b);
    node.register("whoami", {
        let name = name.to_owned();
        move |(): ()| name.clone()
    });
    node.register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, String>(ms)
    });
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_call_each_other_over_one_connection() {
    let a = node("a").await;
    let b = node("b").await;
    assert_eq!(a.call::<i64>(b.addr(), ADD, (2, 3)).await.unwrap(), 5);
    // b calls back by a's name: the link a opened is the one b uses.
    let name: String = b.call("a", "whoami", ()).await.unwrap();
    assert_eq!(name, "a");
    assert_eq!(b.call::<i64>(a.addr(), ADD, (40, 2)).await.unwrap(), 42);
    assert_eq!(a.peers().len(), 1);
    assert_eq!(b.peers().len(), 1);
    // On b, the link comes from a's ephemeral port, not from a's listen address: b never
    // dialed a, even when calling it by address.
    assert_ne!(b.peers()[0].remote, a.addr());
    assert_eq!(a.peers()[0].remote, b.addr());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_form_pairs_with_one_link_each() {
    let nodes = [node("a").await, node("b").await, node("c").await];
    for x in &nodes {
        for y in &nodes {
            if x.id() != y.id() {
                let name: String = x.call(y.addr(), "whoami", ()).await.unwrap();
                assert_eq!(name, y.name());
            }
        }
    }
    for n in &nodes {
        let mut names: Vec<String> = n.peers().into_iter().map(|p| p.name).collect();
        names.sort();
        assert_eq!(names.len(), 2, "{} has {names:?}", n.name());
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_keep_exactly_one_link() {
    for round in 0..20 {
        let a = node("a").await;
        let b = node("b").await;
        let (ab, ba) = tokio::join!(
            a.call::<String>(b.addr(), "whoami", ()),
            b.call::<String>(a.addr(), "whoami", ())
        );
        assert_eq!(ab.unwrap(), "b", "round {round}");
        assert_eq!(ba.unwrap(), "a", "round {round}");
        // Both sides settle on the same TCP connection: exactly one of them sees the other's
        // listen address as the remote end (that side dialed it).
        eventually("one link per side", || {
            a.peers().len() == 1 && b.peers().len() == 1
        })
        .await;
        let a_dialed = a.peers()[0].remote == b.addr();
        let b_dialed = b.peers()[0].remote == a.addr();
        assert!(
            a_dialed != b_dialed,
            "round {round}: a dialed {a_dialed}, b dialed {b_dialed}"
        );
        // And it carries calls both ways.
        assert_eq!(a.call::<i64>(b.addr(), ADD, (1, 2)).await.unwrap(), 3);
        assert_eq!(b.call::<i64>(a.addr(), ADD, (3, 4)).await.unwrap(), 7);
        a.shutdown().await;
        b.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_answered_out_of_order() {
    let a = node("a").await;
    let b = node("b").await;
    let peer = a.peer(b.addr()).await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    // Longest first: if replies were serialized, they would come back in this order.
    let calls = (0..20u64).rev().map(|i| {
        let peer = peer.clone();
        let order = order.clone();
        async move {
            let ms: u64 = peer.call("sleep", i * 10).await.unwrap();
            assert_eq!(ms, i * 10, "each caller gets its own reply");
            order.lock().unwrap().push(i);
        }
    });
    futures_util::future::join_all(calls).await;
    let order = order.lock().unwrap().clone();
    assert_eq!(order.len(), 20);
    assert!(
        order.windows(2).all(|w| w[0] <= w[1]),
        "shortest sleeps finish first: {order:?}"
    );
    // And a thousand small calls in flight at once on the same link.
    let sums = (0..1000i64).map(|i| peer.call::<i64>(ADD, (i, i)));
    for (i, sum) in futures_util::future::join_all(sums)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(sum.unwrap(), 2 * i as i64);
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_ends_the_call_with_timeout() {
    let a = node("a").await;
    let b = node("b").await;
    let options = CallOptions::timeout(Duration::from_millis(50));
    let err = a
        .call_with::<u64>(b.addr(), "sleep", 10_000u64, options)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.to_string().contains("`sleep` timed out"), "{err}");
    // The link is still fine afterwards.
    assert_eq!(a.call::<i64>(b.addr(), ADD, (1, 1)).await.unwrap(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callee_errors_arrive_with_their_kind_and_the_node_keeps_serving() {
    let a = node("a").await;
    let b = node("b").await;
    b.register("boom", |(): ()| -> i64 { panic!("kaboom") });
    b.register("checked", |x: i64| {
        if x < 0 {
            Err(format!("{x} is negative"))
        } else {
            Ok(x)
        }
    });
    let peer = a.peer(b.addr()).await.unwrap();

    let err = peer.call::<i64>("missing", ()).await.unwrap_err();
    assert_eq!(
        err,
        RpcError::MethodNotFound {
            method: "missing".into()
        }
    );

    let err = peer.call::<i64>("add", "not a pair").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    assert!(
        err.to_string().contains("(i64, i64)"),
        "names the expected type: {err}"
    );

    let err = peer.call::<i64>("checked", -1i64).await.unwrap_err();
    assert_eq!(
        err,
        RpcError::Application {
            method: "checked".into(),
            message: "-1 is negative".into(),
            // A string error's value is the string, as JSON.
            data: Some(bytes::Bytes::from_static(br#""-1 is negative""#)),
        }
    );

    for _ in 0..3 {
        let err = peer.call::<i64>("boom", ()).await.unwrap_err();
        assert_eq!(
            err,
            RpcError::Panicked {
                method: "boom".into(),
                message: "kaboom".into()
            }
        );
    }
    assert_eq!(peer.call::<i64>(ADD, (2, 2)).await.unwrap(), 4);
    // The wrong result type is the caller's mistake, reported as such.
    let err = peer.call::<String>("add", (1i64, 2i64)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_callers_reach_the_same_methods() {
    let a = node("a").await;
    let b = node("b").await;
    let peer = a.peer(b.addr()).await.unwrap();
    let sum = peer
        .call_json("add", &serde_json::json!([2, 3]), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(sum, serde_json::json!(5));
    let err = peer
        .call_json("add", &serde_json::json!(["x"]), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_runs_one_call_at_a_time_and_survives_a_panic() {
    let a = node("a").await;
    let b = node("b").await;
    b.actor("acct", || 0i64)
        .method("deposit", |balance: &mut i64, amount: i64| {
            assert!(amount > 0, "deposits are positive");
            *balance += amount;
            *balance
        })
        .method("balance", |balance: &mut i64, (): ()| *balance)
        .start();
    let peer = a.peer(b.addr()).await.unwrap();
    let deposits = (0..200).map(|_| peer.call::<i64>("acct.deposit", 1i64));
    let mut seen: Vec<i64> = futures_util::future::join_all(deposits)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        (1..=200).collect::<Vec<_>>(),
        "every deposit saw a distinct balance"
    );
    let err = peer.call::<i64>("acct.deposit", -5i64).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    // Restarted from its factory.
    assert_eq!(peer.call::<i64>("acct.balance", ()).await.unwrap(), 0);
    assert_eq!(peer.call::<i64>("acct.deposit", 7i64).await.unwrap(), 7);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_overloaded() {
    let a = node("a").await;
    let b = node("b").await;
    let (entered_tx, entered_rx) = std_mpsc::channel::<()>();
    let (release_tx, release_rx) = std_mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    b.actor("gate", || ())
        .mailbox(1)
        .method("hold", move |(): &mut (), (): ()| {
            let _ = entered_tx.lock().unwrap().send(());
            // Blocks the actor until the test releases it; `block_in_place` hands this worker's
            // other tasks to another thread meanwhile.
            tokio::task::block_in_place(|| {
                let _ = release_rx.lock().unwrap().recv_timeout(PATIENCE);
            });
        })
        .start();
    let peer = a.peer(b.addr()).await.unwrap();
    let first = tokio::spawn({
        let peer = peer.clone();
        async move { peer.call::<()>("gate.hold", ()).await }
    });
    tokio::task::spawn_blocking(move || entered_rx.recv_timeout(PATIENCE))
        .await
        .unwrap()
        .unwrap();
    // The actor is busy: of five more calls, one fits in the mailbox and four are refused.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..5 {
        let (peer, done_tx) = (peer.clone(), done_tx.clone());
        tokio::spawn(async move {
            let _ = done_tx.send(
                peer.call_with::<()>("gate.hold", (), CallOptions::timeout(PATIENCE))
                    .await,
            );
        });
    }
    for _ in 0..4 {
        let refused = done_rx.recv().await.unwrap().unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Overloaded);
        assert!(
            refused
                .to_string()
                .contains("mailbox of actor `gate` is full"),
            "{refused}"
        );
    }
    release_tx.send(()).unwrap();
    first.await.unwrap().unwrap();
    release_tx.send(()).unwrap();
    done_rx
        .recv()
        .await
        .unwrap()
        .expect("the queued call ran once the actor was free");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_calls_fail_promptly_when_the_peer_goes_away() {
    let a = node("a").await;
    let config = NodeConfig {
        name: "b".into(),
        shutdown_grace: Duration::from_millis(50),
        ..NodeConfig::default()
    };
    let b = Node::start(config).await.unwrap();
    b.register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, String>(ms)
    });
    let peer = a.peer(b.addr()).await.unwrap();
    let options = CallOptions::timeout(Duration::from_secs(60));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let peer = peer.clone();
            tokio::spawn(async move { peer.call_with::<u64>("sleep", 60_000u64, options).await })
        })
        .collect();
    // Whether b has started a call or not when it stops, each caller must hear about it.
    eventually("b to see a", || b.peers().len() == 1).await;
    let started = Instant::now();
    tokio::time::timeout(PATIENCE, b.shutdown())
        .await
        .expect("shutdown ends");
    for call in calls {
        let err = tokio::time::timeout(PATIENCE, call)
            .await
            .expect("call ends")
            .unwrap()
            .unwrap_err();
        // Refused or stopped (`shutdown`), cut off while running (`disconnected`), or never
        // read before b's goodbye (`peer_unavailable`: it did not run).
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Shutdown | ErrorKind::Disconnected | ErrorKind::PeerUnavailable
            ),
            "expected shutdown, disconnected or peer_unavailable, got {err}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "no call waited for its deadline"
    );
    // The link is gone on a's side too; new calls fail fast instead of hanging.
    eventually("a to drop the link", || a.peers().is_empty()).await;
    let err = a.call::<i64>(b.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PeerUnavailable);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_limit_is_refused_before_sending() {
    let a = Node::builder("a")
        .max_frame(64 << 10)
        .start()
        .await
        .unwrap();
    let b = node("b").await;
    b.register("echo", |bytes: serde_bytes::ByteBuf| bytes);
    let peer = a.peer(b.addr()).await.unwrap();
    let small = serde_bytes::ByteBuf::from(vec![7u8; 1000]);
    let back: serde_bytes::ByteBuf = peer.call("echo", &small).await.unwrap();
    assert_eq!(back, small);
    let big = serde_bytes::ByteBuf::from(vec![7u8; 100 << 10]);
    let err = peer
        .call::<serde_bytes::ByteBuf>("echo", &big)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
    assert!(
        err.to_string()
            .contains(&format!("limit of {} bytes", 64 << 10)),
        "{err}"
    );
    // b also limits what it sends to a's limit: a large reply becomes an error, not a frame
    // that a would refuse.
    b.register("blob", |n: usize| serde_bytes::ByteBuf::from(vec![1u8; n]));
    let err = peer
        .call::<serde_bytes::ByteBuf>("blob", 100usize << 10)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FrameTooLarge);
    assert!(err.to_string().contains("frame limit"), "{err}");
    assert_eq!(peer.call::<i64>(ADD, (1, 2)).await.unwrap(), 3);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtins_describe_the_node() {
    let a = node("a").await;
    let b = node("b").await;
    b.register("square", |x: i64| x * x)
        .help("square(x) -> x * x");
    let peer = a.peer(b.addr()).await.unwrap();
    let names: Vec<String> = peer.call("system.listMethods", ()).await.unwrap();
    for name in [
        "add",
        "square",
        "system.listMethods",
        "system.methodHelp",
        "system.whoami",
        "system.peers",
    ] {
        assert!(
            names.contains(&name.to_owned()),
            "{name} missing from {names:?}"
        );
    }
    let help: String = peer.call("system.methodHelp", "square").await.unwrap();
    assert_eq!(help, "square(x) -> x * x");
    let err = peer
        .call::<String>("system.methodHelp", "nope")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    let me: WhoAmI = peer.call("system.whoami", ()).await.unwrap();
    assert_eq!((me.name.as_str(), me.id), ("b", b.id().to_string()));
    assert_eq!(me.addr, b.addr().to_string());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn casts_arrive_without_replies() {
    let a = node("a").await;
    let b = node("b").await;
    b.actor("tally", || 0u64)
        .method("add", |n: &mut u64, by: u64| *n += by)
        .method("get", |n: &mut u64, (): ()| *n)
        .start();
    for _ in 0..10 {
        a.cast(b.addr(), "tally.add", 3u64).await.unwrap();
    }
    // A cast to a missing method is only logged by the callee; the link stays up.
    a.cast(b.addr(), "no.such.method", ()).await.unwrap();
    let peer = a.peer(b.addr()).await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // Casts and calls share one ordered link and the actor serves its mailbox in order, so
        // the first `get` already sees every cast; the loop only guards against a regression.
        let total: u64 = peer.call("tally.get", ()).await.unwrap();
        if total == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "casts never all arrived: {total}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_running_calls_finish_and_refuses_new_ones() {
    let a = node("a").await;
    let b = node("b").await;
    let (entered_tx, mut entered) = tokio::sync::mpsc::unbounded_channel();
    b.register("slow", move |ms: u64| {
        let _ = entered_tx.send(());
        async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<u64, String>(ms)
        }
    });
    let peer = a.peer(b.addr()).await.unwrap();
    let running = tokio::spawn(async move { peer.call::<u64>("slow", 200u64).await });
    entered.recv().await.unwrap();
    b.shutdown().await;
    assert_eq!(
        running.await.unwrap().unwrap(),
        200,
        "the running call finished within the grace period"
    );
    let err = b.call::<i64>(a.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Shutdown);
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dialed_at_another_address_keeps_its_one_link() {
    // b listens on every interface, so 127.0.0.2 reaches it too, though it advertises 127.0.0.1.
    let b = Node::builder("b")
        .listen("0.0.0.0:0")
        .start()
        .await
        .unwrap();
    b.register(ADD, |(a, b): (i64, i64)| a + b);
    let a = node("a").await;
    assert_eq!(a.call::<i64>(b.addr(), ADD, (1, 1)).await.unwrap(), 2);
    let link = b.peers()[0].remote;
    let alias: std::net::SocketAddr = format!("127.0.0.2:{}", b.addr().port()).parse().unwrap();
    for i in 0..10 {
        assert_eq!(a.call::<i64>(alias, ADD, (i, 1)).await.unwrap(), i + 1);
    }
    assert_eq!(b.peers().len(), 1);
    assert_eq!(
        b.peers()[0].remote,
        link,
        "the first link was never replaced"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_method_names_get_errors_not_a_dead_link() {
    let a = node("a").await;
    let b = node("b").await;
    let peer = a.peer(b.addr()).await.unwrap();
    // Multi-byte characters across the point where error messages are cut.
    for len in [2040, 2043, 2044, 5000] {
        let name = "é".repeat(len);
        let err = peer.call::<()>(&name, ()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MethodNotFound);
    }
    assert_eq!(peer.call::<i64>(ADD, (2, 2)).await.unwrap(), 4);
    a.shutdown().await;
    b.shutdown().await;
}

async fn next(events: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>) -> &'static str {
    let event = tokio::time::timeout(PATIENCE, events.recv()).await;
    event.expect("the handler reported in time").expect("event")
}

/// Sends on drop: tells the test a handler's future was dropped (stopped) by the callee.
struct DropSignal(tokio::sync::mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("stopped");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_expired_call_stops_the_callees_handler() {
    let a = node("a").await;
    let b = node("b").await;
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    b.register("hang", move |(): ()| {
        let signal = DropSignal(events_tx.clone());
        let _ = events_tx.send("started");
        async move {
            let _signal = signal;
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<(), String>(())
        }
    });
    let peer = a.peer(b.addr()).await.unwrap();

    // The deadline passes: the caller gets `timeout`, and the callee stops the handler
    // (its deadline is the same, and the caller's Cancel arrives besides).
    let err = peer
        .call_with::<()>("hang", (), CallOptions::timeout(Duration::from_millis(100)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(next(&mut events).await, "started");
    assert_eq!(next(&mut events).await, "stopped");
    // The caller drops the call future with a long deadline: only the Cancel can stop it.
    let caller = peer.clone();
    let abandoned = tokio::spawn(async move {
        caller
            .call_with::<()>("hang", (), CallOptions::timeout(Duration::from_secs(3600)))
            .await
    });
    assert_eq!(next(&mut events).await, "started");
    abandoned.abort();
    assert_eq!(
        next(&mut events).await,
        "stopped",
        "the Cancel frame stopped the handler"
    );
    // The link is fine.
    assert_eq!(peer.call::<i64>(ADD, (1, 1)).await.unwrap(), 2);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_wide_in_flight_limit_spans_links() {
    let config = NodeConfig {
        name: "b".into(),
        max_in_flight_node: 3,
        ..NodeConfig::default()
    };
    let b = Node::start(config).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let entered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (held, count) = (gate.clone(), entered.clone());
    b.register("hold", move |(): ()| {
        let (held, count) = (held.clone(), count.clone());
        async move {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _permit = held.acquire().await.map_err(|e| e.to_string())?;
            Ok::<(), String>(())
        }
    });
    let addr = b.addr().to_string();
    let (c1, c2) = (
        meshrpc::Client::connect(&addr).await.unwrap(),
        meshrpc::Client::connect(&addr).await.unwrap(),
    );
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for peer in [c1.peer().clone(), c2.peer().clone()] {
        for _ in 0..3 {
            let (peer, done_tx) = (peer.clone(), done_tx.clone());
            tokio::spawn(async move {
                let _ = done_tx.send(
                    peer.call_with::<()>("hold", (), CallOptions::timeout(PATIENCE))
                        .await,
                );
            });
        }
    }
    // Until the gate opens, a call either waits inside the handler or comes back refused.
    // (A refusal counts against the limit until it is written, so fewer than three may run.)
    let mut refused = 0;
    let deadline = Instant::now() + PATIENCE;
    while entered.load(std::sync::atomic::Ordering::SeqCst) + refused < 6 {
        assert!(
            Instant::now() < deadline,
            "calls neither ran nor were refused"
        );
        if let Ok(result) = tokio::time::timeout(Duration::from_millis(5), done_rx.recv()).await {
            let err = result.unwrap().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Overloaded);
            assert!(err.to_string().contains("on this node"), "{err}");
            refused += 1;
        }
    }
    let ran = entered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        ran <= 3 && refused >= 3,
        "{ran} ran at once across two links, {refused} refused"
    );
    gate.add_permits(6);
    for _ in 0..ran {
        done_rx
            .recv()
            .await
            .unwrap()
            .expect("the admitted calls finish");
    }
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_resend_only_what_is_safe_to_run_twice() {
    let a = node("a").await;
    let b = node("b").await;
    let lookups = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let charges = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Both hang on their first call only, so the first attempt times out.
    for (name, count, idempotent) in [
        ("lookup", lookups.clone(), true),
        ("charge", charges.clone(), false),
    ] {
        let registered = b.register(name, move |(): ()| {
            let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 0 {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                Ok::<u64, String>(n)
            }
        });
        if idempotent {
            registered.idempotent();
        }
    }
    let options = CallOptions::timeout(Duration::from_millis(100)).retries(2);
    assert_eq!(
        a.call_with::<u64>(b.addr(), "lookup", (), options)
            .await
            .unwrap(),
        1,
        "the retry ran"
    );
    let err = a
        .call_with::<u64>(b.addr(), "charge", (), options)
        .await
        .unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout,
        "the caller sees what happened, not the refusal"
    );
    assert_eq!(
        charges.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a non-idempotent call ran once"
    );
    // Without opting in, nothing is resent.
    let err = a
        .call_with::<u64>(
            b.addr(),
            "nope",
            (),
            CallOptions::timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotFound);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_open_on_demand_close_when_idle_and_reopen_on_the_next_call() {
    let idle = Duration::from_millis(200);
    let quick = |name: &str| NodeConfig {
        name: name.to_owned(),
        link_idle: idle,
        ..NodeConfig::default()
    };
    let a = Node::start(quick("a")).await.unwrap();
    let b = Node::start(quick("b")).await.unwrap();
    b.register(ADD, |(x, y): (i64, i64)| x + y);
    assert!(a.peers().is_empty(), "no link before the first call");
    assert_eq!(a.call::<i64>(b.addr(), ADD, (1, 2)).await.unwrap(), 3);
    assert_eq!(a.peers().len(), 1);
    // A call in flight keeps the link however long it takes.
    b.register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, String>(ms)
    });
    let slow: u64 = a.call(b.addr(), "sleep", 600u64).await.unwrap();
    assert_eq!(slow, 600);
    let closed_at = Instant::now();
    eventually("the idle link to close on both sides", || {
        a.peers().is_empty() && b.peers().is_empty()
    })
    .await;
    // Looked at every idle/4: a link closes at least 3/4 of `idle` after its last call.
    assert!(
        closed_at.elapsed() >= idle * 3 / 4,
        "closed before it was idle"
    );
    // The next call opens a new one.
    assert_eq!(a.call::<i64>(b.addr(), ADD, (2, 2)).await.unwrap(), 4);
    assert_eq!(a.peers().len(), 1);
    a.shutdown().await;
    b.shutdown().await;
}

/// A new user's first program: start a node seeded with another, call it by name. `start`
/// returns as soon as the node listens; `joined` waits for the cluster, including a seed that
/// is not up yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joined_waits_for_the_seed_and_then_a_call_by_name_finds_it() {
    // The seed's address, before anything listens there: below the ephemeral range, so no
    // dial in the meantime takes the port (or connects to itself on it).
    let seed_addr = loop {
        let port = 10_000 + (rand::random::<u16>() % 22_000);
        if let Ok(probe) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            break probe.local_addr().unwrap();
        }
    };
    let b = Node::builder("b").seed(seed_addr).start().await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(300), b.joined()).await;
    assert!(early.is_err(), "joined before its seed was even up");
    let a = Node::builder("a").listen(seed_addr).start().await.unwrap();
    a.register("whoami", |(): ()| "a".to_owned());
    tokio::time::timeout(PATIENCE, b.joined())
        .await
        .expect("b joins once its seed is up")
        .expect("and is not refused");
    let who: String = b.call("a", "whoami", ()).await.unwrap();
    assert_eq!(who, "a");
    // A node without seeds has joined all there is.
    tokio::time::timeout(Duration::from_secs(1), a.joined())
        .await
        .expect("a node without seeds is joined at once")
        .expect("and is not refused");
    b.shutdown().await;
    a.shutdown().await;
}

/// What `system.whoami` answers.
#[derive(Debug, serde::Deserialize)]
struct WhoAmI {
    name: String,
    id: String,
    addr: String,
}
