//! Trace context across nodes, in process and without an exporter: a call made as part of a
//! W3C trace (from Rust with `with_trace`, or over HTTP with a `traceparent` header through
//! the gateway) carries it to every node it reaches, and each hop records its span — same
//! trace id, the caller's span as its parent, the method, the peer and the outcome.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshrpc::{with_trace, Node, NodeConfig, RequestContext, Trace};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const W3C: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

type Hops = Arc<Mutex<Vec<BTreeMap<String, String>>>>;

/// Keeps the fields of every `meshrpc::trace` event.
struct Recorder(Hops);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "meshrpc::trace" {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

async fn node(name: &str, http: bool) -> Node {
    Node::start(NodeConfig {
        name: name.to_owned(),
        http: http.then(|| "127.0.0.1:0".parse().unwrap()),
        ..NodeConfig::default()
    })
    .await
    .expect("node")
}

/// The hop served by `method`. A hop is recorded as its reply is queued, so the caller may
/// have its answer a moment before: wait for it (bounded).
async fn hop(hops: &Hops, method: &str) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        {
            let hops = hops.lock().unwrap();
            let found: Vec<_> = hops.iter().filter(|h| h["method"] == method).collect();
            assert!(found.len() <= 1, "one hop of {method}: {hops:?}");
            if let Some(found) = found.first() {
                return (*found).clone();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no hop of {method}: {hops:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_follows_a_call_across_nodes() {
    let hops: Hops = Arc::default();
    let subscriber = tracing_subscriber::registry().with(Recorder(hops.clone()));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let (a, b, c) = (
        node("a", false).await,
        node("b", true).await,
        node("c", false).await,
    );
    c.register("leaf", |x: i64| x + 1);
    let leaf_at = c.addr();
    b.register("middle", move |cx: RequestContext, x: i64| async move {
        cx.node()?.call::<i64>(leaf_at, "leaf", x).await
    });

    // Untraced: no hop is recorded.
    assert_eq!(a.call::<i64>(b.addr(), "middle", 1).await.unwrap(), 2);
    assert!(
        hops.lock().unwrap().is_empty(),
        "untraced calls record nothing"
    );

    // From Rust, as part of the W3C example's trace.
    let parent = Trace::parse(W3C).unwrap();
    let two: i64 = with_trace(parent, a.call(b.addr(), "middle", 1))
        .await
        .unwrap();
    assert_eq!(two, 2);
    let (middle, leaf) = (hop(&hops, "middle").await, hop(&hops, "leaf").await);
    assert_eq!(
        (middle["trace_id"].as_str(), leaf["trace_id"].as_str()),
        (TRACE_ID, TRACE_ID)
    );
    assert_eq!(middle["parent_id"], "00f067aa0ba902b7", "the caller's span");
    assert_eq!(
        leaf["parent_id"], middle["span_id"],
        "b's hop is c's parent"
    );
    assert_eq!((middle["peer"].as_str(), leaf["peer"].as_str()), ("a", "b"));
    assert_eq!(
        (middle["outcome"].as_str(), leaf["outcome"].as_str()),
        ("ok", "ok")
    );

    // Over HTTP: JSON-RPC with a traceparent header, through b's gateway.
    hops.lock().unwrap().clear();
    let body = r#"{"jsonrpc": "2.0", "method": "middle", "params": [41], "id": 1}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\ntraceparent: {W3C}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut tcp = tokio::net::TcpStream::connect(b.http_addr().unwrap())
        .await
        .unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(20), tcp.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(answer.contains(r#""result":42"#), "{answer}");
    let (middle, leaf) = (hop(&hops, "middle").await, hop(&hops, "leaf").await);
    assert_eq!(middle["trace_id"], TRACE_ID);
    assert_eq!(
        middle["parent_id"], "00f067aa0ba902b7",
        "the HTTP caller's span"
    );
    assert_eq!(middle["peer"], "b-http", "through the gateway's link");
    assert_eq!(leaf["trace_id"], TRACE_ID);
    assert_eq!(leaf["parent_id"], middle["span_id"]);

    // A traceparent that is not valid starts no trace.
    hops.lock().unwrap().clear();
    let bad = request.replace(W3C, "00-zz-00f067aa0ba902b7-01");
    let mut tcp = tokio::net::TcpStream::connect(b.http_addr().unwrap())
        .await
        .unwrap();
    tcp.write_all(bad.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains(r#""result":42"#), "{answer}");
    assert!(
        hops.lock().unwrap().is_empty(),
        "an invalid traceparent is ignored"
    );
    for n in [a, b, c] {
        n.shutdown().await;
    }
}
