//! The demo services every `meshrpc node` serves: the seed's `add`, `square` and `cube`, plus
//! `echo`, `sleep`, `fail`, `crash`, a `counter` actor and `fanout`.

use std::collections::BTreeMap;
use std::time::Duration;

use meshrpc::bench::{self, LoadSpec, Report};
use meshrpc::{CallOptions, Method, Node};
use serde_bytes::ByteBuf;
use serde_json::{json, Value};

/// `add(a, b)`: the seed's first example.
pub const ADD: Method<(i64, i64), i64> = Method::new("add");
/// `square(x)`.
pub const SQUARE: Method<i64, i64> = Method::new("square");
/// `cube(x)`.
pub const CUBE: Method<i64, i64> = Method::new("cube");

/// The named arguments of `scale`.
#[derive(serde::Deserialize)]
struct Scale {
    value: f64,
    factor: f64,
}

/// Registers every demo service on `node`.
pub fn register(node: &Node) {
    node.register_try_fn(ADD.name(), |(a, b): (i64, i64)| {
        a.checked_add(b).ok_or("integer overflow")
    })
    .help("add(a, b) -> a + b, for 64-bit integers");
    node.register_try_fn(SQUARE.name(), |x: i64| {
        x.checked_mul(x).ok_or("integer overflow")
    })
    .help("square(x) -> x * x");
    node.register_try_fn(CUBE.name(), |x: i64| {
        x.checked_mul(x)
            .and_then(|sq| sq.checked_mul(x))
            .ok_or("integer overflow")
    })
    .help("cube(x) -> x * x * x");
    node.register_fn("echo", |bytes: ByteBuf| bytes)
        .help("echo(bytes) -> the same bytes");
    node.register("sleep", |ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<u64, String>(ms)
    })
    .help("sleep(ms) -> ms, after sleeping that long");
    node.register_try_fn("fail", |message: String| Err::<(), String>(message))
        .help("fail(message): always fails with an application error carrying `message`");
    node.register_fn("crash", |(): ()| -> () { panic!("crash() was called") })
        .help("crash(): panics inside the handler; the node keeps serving");
    node.actor("counter", || 0i64)
        .method("incr", |count: &mut i64, by: i64| {
            *count = count.saturating_add(by);
            *count
        })
        .help("counter.incr(by) -> the new value; a stateful actor, one call at a time")
        .method("get", |count: &mut i64, (): ()| *count)
        .help("counter.get() -> the current value")
        .start();
    node.register_fn("mirror", |value: Value| value)
        .help("mirror(value) -> value: returns its argument unchanged (JSON and the HTTP gateways; not for bincode callers)");
    node.register_try_fn("scale", |args: Scale| {
        let product = args.value * args.factor;
        if product.is_finite() {
            Ok(product)
        } else {
            Err("the product is not a finite number")
        }
    })
    .help("scale({value, factor}) -> value * factor: takes named arguments (a struct)");
    let weak = node.downgrade();
    node.register("bench.run", move |(to, spec): (String, LoadSpec)| {
        let node = weak.upgrade();
        async move {
            let node = node.ok_or("the node is stopping")?;
            let peer = node.peer(to.as_str()).await.map_err(|e| e.to_string())?;
            let report = bench::run(&[peer], &spec, Default::default()).await;
            Ok::<Report, String>(report)
        }
    })
    .help("bench.run(peer, spec) -> report: runs a load from this node against its peer, over their link (meshrpc bench --from/--to)");
    let weak = node.downgrade();
    node.register("fanout", move |(method, args): (String, Value)| {
        let node = weak.upgrade();
        async move {
            let node = node.ok_or("the node is stopping")?;
            Ok::<Value, &'static str>(fanout(&node, &method, &args).await)
        }
    })
    .help("fanout(method, args) -> {peer: result}: calls method(args) on every connected peer at once (JSON arguments)");
}

/// Calls `method(args)` on every peer concurrently; errors are reported per peer.
async fn fanout(node: &Node, method: &str, args: &Value) -> Value {
    let calls = node.peers().into_iter().map(|info| async move {
        let result = match node.peer(info.id).await {
            Ok(peer) => peer.call_json(method, args, CallOptions::default()).await,
            Err(e) => Err(e),
        };
        let value = result.unwrap_or_else(
            |e| json!({ "error": { "kind": e.kind().as_str(), "message": e.to_string() } }),
        );
        (info.name, value)
    });
    let results: BTreeMap<String, Value> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect();
    json!(results)
}
