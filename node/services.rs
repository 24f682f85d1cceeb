//! The demo services every `meshrpc node` serves: the Python tutorial's `add`, `square` and
//! `cube` (the `Calc` service), `echo`, `sleep`, `fail` and `crash` (the `Demo` service),
//! a `counter` actor, `mirror`, `scale`, `bench.run` and `fanout`, and the `Streams`
//! service (`count`, `sum`, `running_sum`, `payloads`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::load::{self, LoadSpec, Report};
use futures_util::{future, stream, StreamExt};
use meshrpc::stream::{BoxStream, Items};
use meshrpc::{CallOptions, MemberStatus, Node, RequestContext, RpcError};
use serde_bytes::ByteBuf;
use serde_json::{json, Value};

meshrpc::service! {
    /// The calculator of the Python tutorial, on 64-bit integers.
    pub service Calc {
        /// a + b; an error when the sum overflows.
        fn add(a: i64, b: i64) -> Result<i64, String>;
        /// x * x; an error when it overflows.
        fn square(x: i64) -> Result<i64, String>;
        /// x * x * x; an error when it overflows.
        fn cube(x: i64) -> Result<i64, String>;
    }
}

meshrpc::service! {
    /// Methods to try the runtime with: payloads, slowness, failures.
    pub service Demo {
        /// Returns the same bytes.
        fn echo(data: ByteBuf) -> ByteBuf;
        /// Sleeps `ms` milliseconds, then returns `ms`.
        async fn sleep(ms: u64) -> u64;
        /// Always fails with an application error carrying `message`.
        fn fail(message: String) -> Result<(), String>;
        /// Panics inside the handler; the node keeps serving.
        fn crash();
    }
}

/// The demo services' implementation; it holds no state.
pub struct DemoImpl;

impl Calc for DemoImpl {
    fn add(&self, a: i64, b: i64) -> Result<i64, String> {
        a.checked_add(b).ok_or_else(|| overflow("add"))
    }

    fn square(&self, x: i64) -> Result<i64, String> {
        x.checked_mul(x).ok_or_else(|| overflow("square"))
    }

    fn cube(&self, x: i64) -> Result<i64, String> {
        x.checked_mul(x)
            .and_then(|sq| sq.checked_mul(x))
            .ok_or_else(|| overflow("cube"))
    }
}

impl Demo for DemoImpl {
    fn echo(&self, data: ByteBuf) -> ByteBuf {
        data
    }

    async fn sleep(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    fn fail(&self, message: String) -> Result<(), String> {
        Err(message)
    }

    fn crash(&self) {
        panic!("crash() was called")
    }
}

fn overflow(method: &str) -> String {
    format!("integer overflow: the result of {method} does not fit in i64")
}

meshrpc::service! {
    /// Streams to try the runtime with: one of each shape, and payloads for `bench --stream`.
    pub service Streams {
        /// Streams 0, 1, ... n-1 (`meshrpc call ADDR count 5` prints one per line).
        fn count(n: u64) -> stream<u64>;
        /// The sum of the integers the caller streams (`meshrpc call ADDR sum` reads them
        /// from stdin); an error when it overflows.
        fn sum(items: stream<i64>) -> Result<i64, String>;
        /// For each integer the caller streams, the total so far.
        fn running_sum(items: stream<i64>) -> stream<Result<i64, String>>;
        /// `count` items of `size` bytes, at most 1 MiB each (`meshrpc bench --stream`
        /// reads them).
        fn payloads(size: u64, count: u64) -> stream<Result<Payload, String>>;
    }
}

/// Items of `payloads` larger than this are refused: a small request must not make a node
/// allocate much.
const MAX_PAYLOAD: u64 = 1 << 20;

impl Streams for DemoImpl {
    fn count(&self, n: u64) -> BoxStream<u64> {
        stream::iter(0..n).boxed()
    }

    async fn sum(&self, mut items: Items<i64>) -> Result<i64, String> {
        let mut sum = 0i64;
        while let Some(item) = items.next().await {
            let item = item.map_err(|e| e.to_string())?;
            sum = sum.checked_add(item).ok_or_else(|| overflow("sum"))?;
        }
        Ok(sum)
    }

    fn running_sum(&self, items: Items<i64>) -> BoxStream<Result<i64, String>> {
        items
            .scan(Some(0i64), |total, item| {
                let next = match (item, *total) {
                    (Ok(x), Some(t)) => t.checked_add(x).ok_or_else(|| overflow("running_sum")),
                    (Err(e), _) => Err(e.to_string()),
                    (_, None) => return future::ready(None), // ended by the error before
                };
                *total = next.as_ref().ok().copied();
                future::ready(Some(next))
            })
            .boxed()
    }

    fn payloads(&self, size: u64, count: u64) -> BoxStream<Result<Payload, String>> {
        if size > MAX_PAYLOAD {
            let refused =
                format!("an item of {size} bytes is over the {MAX_PAYLOAD} bytes `payloads` makes");
            return stream::iter([Err(refused)]).boxed();
        }
        // One buffer, shared by every item: the stream measures the link, not memcpy.
        let payload = Payload(Arc::from(vec![0xA5u8; size as usize]));
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        stream::repeat(payload).take(count).map(Ok).boxed()
    }
}

/// Bytes shared between the items of `payloads`, serialized as a byte string.
#[derive(Clone)]
pub struct Payload(Arc<[u8]>);

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = ByteBuf::deserialize(d)?;
        Ok(Payload(Arc::from(bytes.into_vec())))
    }
}

/// The named arguments of `scale`.
#[derive(serde::Deserialize)]
struct Scale {
    value: f64,
    factor: f64,
}

/// Registers every demo service on `node`, declares the `vcounter` virtual-actor type and
/// joins the `demo` group.
pub async fn register(node: &Node) -> Result<(), RpcError> {
    node.serve(CalcServer::new(DemoImpl));
    node.serve(DemoServer::new(DemoImpl));
    node.actor("counter", || 0i64)
        .method("incr", |count: &mut i64, by: i64| {
            *count = count.saturating_add(by);
            *count
        })
        .params(&["by"])
        .help("counter.incr(by: i64) -> i64: adds `by` and returns the new value; a stateful actor, one call at a time")
        .method("get", |count: &mut i64, (): ()| *count)
        .help("counter.get() -> i64: the current value")
        .start();
    node.virtual_actor("vcounter", |_key: &str| 0i64)
        .persist()
        .method("incr", |count: &mut i64, by: i64| {
            *count = count.saturating_add(by);
            *count
        })
        .params(&["by"])
        .help("vcounter.incr/KEY(by: i64) -> i64: adds `by` to the counter KEY, wherever in the cluster it lives, and returns the new value")
        .method("get", |count: &mut i64, (): ()| *count)
        .help("vcounter.get/KEY() -> i64: the value of the counter KEY")
        .stream_method("upto", |count: &mut i64, (): ()| stream::iter(0..=*count))
        .help("vcounter.upto/KEY() -> stream<i64>: streams 0, 1, ... up to the counter's value")
        // A reminder on a counter counts its fires: `system.reminders.set vcounter KEY tick 1000`.
        .on_reminder(|_key, count: &mut i64, _name| *count = count.saturating_add(1))
        .start()
        .await?;
    node.group("demo").join().await?;
    node.serve(StreamsServer::new(DemoImpl));
    node.register("mirror", |value: Value| value)
        .params(&["value"])
        .help("mirror(value) -> value: returns its argument unchanged (JSON and the HTTP gateways; not for bincode callers)");
    node.register("scale", |args: Scale| {
        let product = args.value * args.factor;
        if product.is_finite() {
            Ok(product)
        } else {
            Err("the product is not a finite number")
        }
    })
    .help("scale({value, factor}) -> value * factor: takes named arguments (a struct)");
    node.register(
        "bench.run",
        |cx: RequestContext, (to, spec): (String, LoadSpec)| async move {
            let peer = cx.node()?.peer(to.as_str()).await?;
            Ok::<Report, RpcError>(load::run(&[peer], &spec, Default::default(), None).await)
        },
    )
    .params(&["peer", "spec"])
    .help("bench.run(peer, spec) -> report: runs a load from this node against its peer, over their link (meshrpc bench --from/--to). Acts on another node: keep it off public gateways");
    node.register(
        "fanout",
        |cx: RequestContext, (method, args): (String, Value)| async move {
            Ok::<Value, RpcError>(fanout(&cx.node()?, &method, &args).await)
        },
    )
    .params(&["method", "args"])
    .help("fanout(method, args) -> {member: result}: calls method(args) on every other member that is up, at once (JSON arguments). Acts on other nodes: keep it off public gateways");
    Ok(())
}

/// Calls `method(args)` on every other member that is up, concurrently (dialing those it
/// has no link to yet); errors are reported per member.
async fn fanout(node: &Node, method: &str, args: &Value) -> Value {
    let members = node.members();
    let others = members
        .into_iter()
        .filter(|m| m.status == MemberStatus::Up && m.id != node.id());
    let calls = others.map(|member| async move {
        let result = match member.addr {
            Some(addr) => match node.peer(addr).await {
                Ok(peer) => peer.call_json(method, args, CallOptions::default()).await,
                Err(e) => Err(e),
            },
            None => Err(RpcError::PeerUnavailable {
                peer: member.name.clone(),
                reason: "it has no address".into(),
            }),
        };
        let value = result.unwrap_or_else(
            |e| json!({ "error": { "kind": e.kind().as_str(), "message": e.to_string() } }),
        );
        (member.name, value)
    });
    let results: BTreeMap<String, Value> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .collect();
    json!(results)
}
