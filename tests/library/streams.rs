//! Streams in process: order and completeness, credit (a stalled consumer holds back only
//! its own stream, with memory bounded on both sides), cancellation both ways, errors
//! mid-stream, deadlines, a link that dies, client and bidirectional streams.

use crate::support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{stream, StreamExt};
use meshrpc::stream::{Items, StreamOptions};
use meshrpc::{Client, ErrorKind, Node, NodeConfig, RpcError};
use support::eventually;
use support::proxy::{Mode, Proxy};
use tokio::time::timeout;

/// Bounds every wait: a test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(20);

async fn node(name: &str) -> Node {
    Node::start(NodeConfig {
        name: name.to_owned(),
        ..NodeConfig::default()
    })
    .await
    .expect("node")
}

/// Counts itself when dropped: shows that a producer's stream was dropped (its task ended).
struct DropFlag(Arc<AtomicU64>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_arrives_whole_and_in_order() {
    let (a, b) = (node("a").await, node("b").await);
    b.register_stream("count", |n: u64| stream::iter(0..n));
    const N: u64 = 200_000;
    let mut items = a
        .peer(b.addr())
        .await
        .unwrap()
        .call_stream::<u64>("count", N);
    let mut expected = 0;
    while let Some(item) = timeout(PATIENCE, items.next())
        .await
        .expect("an item in time")
    {
        assert_eq!(item.expect("an item"), expected);
        expected += 1;
    }
    assert_eq!(expected, N, "every item, then a clean end");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_holds_back_only_its_stream_and_memory_stays_bounded() {
    let (a, b) = (node("a").await, node("b").await);
    let produced = Arc::new(AtomicU64::new(0));
    let counter = produced.clone();
    b.register_stream("feed", move |n: u64| {
        let counter = counter.clone();
        stream::iter(0..n).map(move |i| {
            counter.fetch_add(1, Ordering::SeqCst);
            (i, vec![0u8; 1024])
        })
    });
    b.register("add", |(x, y): (i64, i64)| x + y);
    const WINDOW: u32 = 8;
    let options = StreamOptions::default().window(WINDOW).idle(None);
    let mut stalled = a
        .peer(b.addr())
        .await
        .unwrap()
        .call_stream_with::<(u64, Vec<u8>)>("feed", 1000u64, options);
    // Nobody reads: the producer stops once the window is full.
    eventually("the producer to fill the window", || {
        produced.load(Ordering::SeqCst) >= u64::from(WINDOW)
    })
    .await;
    // Unary calls on the same link go through meanwhile; each round trip also gives any
    // stray credit time to arrive.
    for i in 0..50 {
        let sum: i64 = timeout(PATIENCE, a.call(b.addr(), "add", (i, 1)))
            .await
            .expect("a unary call answered while the stream is stalled")
            .expect("add");
        assert_eq!(sum, i + 1);
    }
    // The window, plus the one item the producer holds while it waits for credit.
    let held = produced.load(Ordering::SeqCst);
    assert!(
        held <= u64::from(WINDOW) + 1,
        "{held} items produced for a window of {WINDOW}"
    );
    // Reading resumes the stream, to the end.
    let mut next = 0;
    while let Some(item) = timeout(PATIENCE, stalled.next()).await.expect("in time") {
        assert_eq!(item.expect("item").0, next);
        next += 1;
    }
    assert_eq!(next, 1000);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_stops_the_producer() {
    let (a, b) = (node("a").await, node("b").await);
    let dropped = Arc::new(AtomicU64::new(0));
    let flag = dropped.clone();
    b.register_stream("forever", move |(): ()| {
        let guard = DropFlag(flag.clone());
        stream::iter(0u64..).map(move |i| {
            let _alive = &guard;
            i
        })
    });
    let mut items = a
        .peer(b.addr())
        .await
        .unwrap()
        .call_stream::<u64>("forever", ());
    for expected in 0..100 {
        let item = timeout(PATIENCE, items.next()).await.expect("in time");
        assert_eq!(item.expect("open").expect("item"), expected);
    }
    drop(items);
    eventually("the producer's stream to be dropped", || {
        dropped.load(Ordering::SeqCst) == 1
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_stream_ends_it_after_the_items_before() {
    let (a, b) = (node("a").await, node("b").await);
    b.register_stream("flaky", |n: u64| {
        stream::iter(0..=n).map(move |i| {
            if i < n {
                Ok(i)
            } else {
                Err(format!("item {i} broke"))
            }
        })
    });
    let items: Vec<Result<u64, RpcError>> = timeout(
        PATIENCE,
        a.peer(b.addr())
            .await
            .unwrap()
            .call_stream::<u64>("flaky", 3u64)
            .collect(),
    )
    .await
    .expect("in time");
    assert_eq!(items.len(), 4, "{items:?}");
    assert_eq!(
        items[..3]
            .iter()
            .map(|i| *i.as_ref().unwrap())
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let err = items[3].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    assert!(err.to_string().contains("item 3 broke"), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_at_its_deadline_and_when_idle() {
    let (a, b) = (node("a").await, node("b").await);
    // One item, then silence.
    b.register_stream("stuck", |(): ()| {
        stream::iter([1u64]).chain(stream::pending())
    });
    let deadline = StreamOptions::default().timeout(Duration::from_millis(300));
    let items: Vec<_> = timeout(
        PATIENCE,
        a.peer(b.addr())
            .await
            .unwrap()
            .call_stream_with::<u64>("stuck", (), deadline)
            .collect(),
    )
    .await
    .expect("the deadline ends the stream");
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1].as_ref().unwrap_err().kind(), ErrorKind::Timeout);

    let idle = StreamOptions::default().idle(Some(Duration::from_millis(300)));
    let items: Vec<_> = timeout(
        PATIENCE,
        a.peer(b.addr())
            .await
            .unwrap()
            .call_stream_with::<u64>("stuck", (), idle)
            .collect(),
    )
    .await
    .expect("the idle limit ends the stream");
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1].as_ref().unwrap_err().kind(), ErrorKind::Timeout);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_that_dies_ends_every_stream_on_it() {
    let b = node("b").await;
    let dropped = Arc::new(AtomicU64::new(0));
    let flag = dropped.clone();
    b.register_stream("stuck", move |(): ()| {
        let guard = DropFlag(flag.clone());
        stream::iter([7u64]).chain(stream::pending()).map(move |i| {
            let _alive = &guard;
            i
        })
    });
    let proxy = Proxy::bind();
    proxy.forward_to(&b.addr().to_string());
    let client = Client::connect(&proxy.addr).await.expect("connect");
    let options = StreamOptions::default().idle(None);
    let mut streams: Vec<_> = (0..3)
        .map(|_| client.peer().call_stream_with::<u64>("stuck", (), options))
        .collect();
    for s in &mut streams {
        let first = timeout(PATIENCE, s.next()).await.expect("in time");
        assert_eq!(first.expect("open").expect("item"), 7);
    }
    proxy.set(Mode::Cut);
    for s in &mut streams {
        let end = timeout(PATIENCE, s.next()).await.expect("the stream ends");
        let err = end.expect("an error, not a clean end").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Disconnected, "{err}");
        assert!(timeout(PATIENCE, s.next())
            .await
            .expect("in time")
            .is_none());
    }
    // The producers, waiting for nothing that will come, stop too.
    eventually("the producers to stop", || {
        dropped.load(Ordering::SeqCst) == 3
    })
    .await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_bidirectional_streams_carry_items_both_ways() {
    let (a, b) = (node("a").await, node("b").await);
    b.register_stream("sum", |(): (), mut items: Items<i64>| async move {
        let mut sum = 0i64;
        while let Some(item) = items.next().await {
            sum += item.map_err(|e| e.to_string())?;
        }
        Ok::<i64, String>(sum)
    });
    b.register_stream("running_sum", |start: i64, items: Items<i64>| {
        items.scan(start, |total, item| {
            let next = item.map(|x| {
                *total += x;
                *total
            });
            futures_util::future::ready(Some(next))
        })
    });
    let (sink, reply) = a
        .peer(b.addr())
        .await
        .unwrap()
        .client_stream::<i64, i64>("sum", (), StreamOptions::default())
        .expect("open");
    // More items than one window: the upload waits for the callee's credit.
    for i in 1..=1000 {
        timeout(PATIENCE, sink.send(&i))
            .await
            .expect("credit in time")
            .expect("sent");
    }
    sink.finish();
    assert_eq!(
        timeout(PATIENCE, reply)
            .await
            .expect("in time")
            .expect("sum"),
        500_500
    );

    let (sink, mut totals) = a
        .peer(b.addr())
        .await
        .unwrap()
        .bidi_stream::<i64, i64>("running_sum", 100i64, StreamOptions::default())
        .expect("open");
    for (i, expected) in [(1, 101), (2, 103), (3, 106)] {
        sink.send(&i).await.expect("sent");
        let total = timeout(PATIENCE, totals.next()).await.expect("in time");
        assert_eq!(total.expect("open").expect("total"), expected);
    }
    drop(sink);
    assert!(
        timeout(PATIENCE, totals.next())
            .await
            .expect("in time")
            .is_none(),
        "ends after the upload"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calling_a_stream_as_a_request_or_the_reverse_says_so_and_runs_nothing() {
    let (a, b) = (node("a").await, node("b").await);
    b.register_stream("count", |n: u64| stream::iter(0..n));
    b.register("add", |(x, y): (i64, i64)| x + y);
    let err = a.call::<u64>(b.addr(), "count", 3u64).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Streaming);
    assert!(err.to_string().contains("open it as a stream"), "{err}");
    let mut items = a
        .peer(b.addr())
        .await
        .unwrap()
        .call_stream::<i64>("add", (1i64, 2i64));
    let err = items.next().await.expect("an error").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Streaming);
    assert!(err.to_string().contains("not a stream"), "{err}");
    assert!(items.next().await.is_none());
    a.shutdown().await;
    b.shutdown().await;
}

meshrpc::service! {
    /// Streams, declared once for both sides.
    pub service Feed {
        /// 0, 1, ... n-1.
        fn count(n: u64) -> stream<u64>;
        /// 0 .. n-1, then an error.
        fn flaky(n: u64) -> stream<Result<u64, String>>;
        /// The sum of what the caller streams.
        fn sum(items: stream<i64>) -> Result<i64, String>;
        /// Running totals from `start`.
        fn scan(items: stream<i64>, start: i64) -> stream<Result<i64, String>>;
        /// A plain method beside them.
        fn add(a: i64, b: i64) -> i64;
    }
}

struct FeedImpl;

impl Feed for FeedImpl {
    fn count(&self, n: u64) -> meshrpc::stream::BoxStream<u64> {
        stream::iter(0..n).boxed()
    }

    fn flaky(&self, n: u64) -> meshrpc::stream::BoxStream<Result<u64, String>> {
        stream::iter(0..n)
            .map(Ok)
            .chain(stream::iter([Err(format!("broke after {n}"))]))
            .boxed()
    }

    async fn sum(&self, mut items: Items<i64>) -> Result<i64, String> {
        let mut sum = 0;
        while let Some(item) = items.next().await {
            sum += item.map_err(|e| e.to_string())?;
        }
        Ok(sum)
    }

    fn scan(
        &self,
        items: Items<i64>,
        start: i64,
    ) -> meshrpc::stream::BoxStream<Result<i64, String>> {
        items
            .scan(start, |total, item| {
                let next = item.map(|x| {
                    *total += x;
                    *total
                });
                futures_util::future::ready(Some(next.map_err(|e| e.to_string())))
            })
            .boxed()
    }

    fn add(&self, a: i64, b: i64) -> i64 {
        a + b
    }
}

meshrpc::service! {
    /// `count` as a caller with another definition sees it.
    pub service OtherFeed {
        fn count(n: String) -> stream<u64>;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_service_streams_all_three_shapes_with_typed_clients() {
    let (a, b) = (node("a").await, node("b").await);
    b.serve(FeedServer::new(FeedImpl));
    let feed = FeedClient::new(a.peer(b.addr()).await.expect("peer"));
    let counted: Vec<u64> = feed.count(4).map(|i| i.expect("item")).collect().await;
    assert_eq!(counted, [0, 1, 2, 3]);
    let flaky: Vec<_> = feed.flaky(2).collect().await;
    assert_eq!(flaky.len(), 3);
    assert!(flaky[2]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("broke after 2"));

    let (sink, reply) = feed.sum().expect("open");
    for x in [5, 6, 7] {
        sink.send(&x).await.expect("sent");
    }
    sink.finish();
    assert_eq!(
        timeout(PATIENCE, reply)
            .await
            .expect("in time")
            .expect("sum"),
        18
    );

    let (sink, mut totals) = feed.scan(10).expect("open");
    sink.send(&1).await.expect("sent");
    assert_eq!(totals.next().await.expect("open").expect("total"), 11);
    sink.send(&2).await.expect("sent");
    assert_eq!(totals.next().await.expect("open").expect("total"), 13);
    drop(sink);
    assert!(totals.next().await.is_none());
    assert_eq!(feed.add(2, 3).await.expect("add"), 5);

    // Help shows the shapes; a caller whose definition differs is told, and nothing runs.
    let help: String = a
        .call(b.addr(), "system.methodHelp", "scan")
        .await
        .expect("help");
    assert!(
        help.starts_with("scan(stream<i64>, start: i64) -> stream<i64>"),
        "{help}"
    );
    let other = OtherFeedClient::new(a.peer(b.addr()).await.expect("peer"));
    let err = other
        .count("four".into())
        .next()
        .await
        .expect("an error")
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    assert!(
        err.to_string().contains("count(n: u64) -> stream<u64>"),
        "{err}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_and_virtual_actors_stream() {
    let a = node("a").await;
    let b = Node::start(NodeConfig {
        name: "b".into(),
        seeds: vec![a.addr().to_string()],
        ..NodeConfig::default()
    })
    .await
    .expect("node");
    // A plain actor: the stream is made in the actor's turn, from its state.
    b.actor("log", Vec::<String>::new)
        .method("push", |log: &mut Vec<String>, line: String| {
            log.push(line);
            log.len()
        })
        .stream_method("lines", |log: &mut Vec<String>, (): ()| {
            stream::iter(log.clone())
        })
        .start();
    for line in ["x", "y", "z"] {
        a.call::<usize>(b.addr(), "log.push", line)
            .await
            .expect("push");
    }
    let lines: Vec<String> = a
        .peer(b.addr())
        .await
        .unwrap()
        .call_stream::<String>("log.lines", ())
        .map(|l| l.expect("line"))
        .collect()
        .await;
    assert_eq!(lines, ["x", "y", "z"]);

    // A virtual actor type on both nodes: each key's stream comes from its one activation.
    for n in [&a, &b] {
        n.virtual_actor("vlog", |_key: &str| Vec::<u64>::new())
            .method("push", |items: &mut Vec<u64>, x: u64| {
                items.push(x);
                items.len()
            })
            .stream_method("items", |items: &mut Vec<u64>, (): ()| {
                stream::iter(items.clone())
            })
            .start()
            .await
            .expect("vlog");
    }
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    eventually("both nodes to agree on owners, both hosting", || {
        let owners: Vec<_> = keys
            .iter()
            .map(|k| {
                (
                    a.actor_ref("vlog", k).owner(),
                    b.actor_ref("vlog", k).owner(),
                )
            })
            .collect();
        let agree = owners.iter().all(|(x, y)| x == y && x.is_some());
        let both = ["a", "b"]
            .iter()
            .all(|n| owners.iter().any(|(x, _)| x.as_deref() == Some(*n)));
        agree && both
    })
    .await;
    for key in &keys {
        for x in 1..=3u64 {
            let pushed: usize = a
                .actor_ref("vlog", key)
                .call("push", x)
                .await
                .expect("push");
            assert_eq!(pushed as u64, x);
        }
    }
    for key in &keys {
        // Through the other node, whichever owns the key.
        let items: Vec<u64> = b
            .actor_ref("vlog", key)
            .call_stream::<u64>("items", ())
            .await
            .map(|i| i.expect("item"))
            .collect()
            .await;
        assert_eq!(items, [1, 2, 3], "{key}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_waits_for_a_handler_that_does_not_read_and_resumes_when_it_does() {
    use futures_util::FutureExt;
    let (a, b) = (node("a").await, node("b").await);
    let go = Arc::new(tokio::sync::Notify::new());
    let wait = go.clone();
    b.register_stream("slow_sum", move |(): (), mut items: Items<u64>| {
        let wait = wait.clone();
        async move {
            wait.notified().await; // reads nothing until told
            let mut sum = 0;
            while let Some(item) = items.next().await {
                sum += item.map_err(|e| e.to_string())?;
            }
            Ok::<u64, String>(sum)
        }
    });
    let (sink, reply) = a
        .peer(b.addr())
        .await
        .unwrap()
        .client_stream::<u64, u64>("slow_sum", (), StreamOptions::default())
        .expect("open");
    // The callee's window (64 items) goes out although nobody reads...
    for i in 0..64u64 {
        timeout(PATIENCE, sink.send(&i))
            .await
            .expect("within the window")
            .expect("sent");
    }
    // ...and not one more: only the handler taking items grants credit.
    let mut next = Box::pin(sink.send(&64));
    assert!(
        (&mut next).now_or_never().is_none(),
        "an item beyond the window went out"
    );
    go.notify_one();
    timeout(PATIENCE, next)
        .await
        .expect("credit once it reads")
        .expect("sent");
    for i in 65..200u64 {
        sink.send(&i).await.expect("sent");
    }
    sink.finish();
    let sum = timeout(PATIENCE, reply)
        .await
        .expect("in time")
        .expect("sum");
    assert_eq!(sum, (0..200u64).sum::<u64>());
    a.shutdown().await;
    b.shutdown().await;
}
