//! The one way to register: a closure's shape says whether it runs at once or as a task,
//! whether it reads its request's context, and (returning `Result`) whether it can fail.

use std::time::Duration;

use futures_util::{stream, StreamExt};
use meshrpc::stream::Items;
use meshrpc::{with_trace, ErrorKind, Node, RequestContext, RpcError, Trace};

async fn pair() -> (Node, Node) {
    let a = Node::builder("a").start().await.expect("a starts");
    let b = Node::builder("b").start().await.expect("b starts");
    (a, b)
}

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum Refusal {
    TooSmall { min: i64 },
}

#[tokio::test]
async fn a_closure_returning_result_is_fallible_and_anything_else_is_the_answer() {
    let (a, b) = pair().await;
    b.register("double", |x: i64| x * 2);
    b.register("sqrt", |x: f64| {
        if x < 0.0 {
            Err("negative")
        } else {
            Ok(x.sqrt())
        }
    });
    b.register("at_least", |x: i64| {
        if x < 10 {
            Err(Refusal::TooSmall { min: 10 })
        } else {
            Ok(x)
        }
    });
    b.register("later", |x: i64| async move {
        tokio::task::yield_now().await;
        if x == 0 {
            Err(format!("{x} is not allowed"))
        } else {
            Ok(x + 1)
        }
    });
    b.register("vec", |n: usize| vec![n; n]);

    assert_eq!(a.call::<i64>(b.addr(), "double", 21).await.unwrap(), 42);
    assert_eq!(a.call::<f64>(b.addr(), "sqrt", 9.0).await.unwrap(), 3.0);
    let err = a.call::<f64>(b.addr(), "sqrt", -1.0).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application, "{err}");
    assert!(err.to_string().ends_with(": negative"), "{err}");
    // An error that is not a string reads as its JSON.
    let err = a.call::<i64>(b.addr(), "at_least", 3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application, "{err}");
    assert!(
        err.to_string().contains(r#"{"TooSmall":{"min":10}}"#),
        "{err}"
    );
    // And crosses typed: the caller decodes the handler's own error value.
    assert_eq!(err.data::<Refusal>(), Some(Refusal::TooSmall { min: 10 }));
    assert_eq!(err.data::<String>(), None, "not a string");
    assert_eq!(a.call::<i64>(b.addr(), "at_least", 12).await.unwrap(), 12);
    assert_eq!(a.call::<i64>(b.addr(), "later", 1).await.unwrap(), 2);
    let err = a.call::<i64>(b.addr(), "later", 0).await.unwrap_err();
    assert!(err.to_string().ends_with("0 is not allowed"), "{err}");
    assert_eq!(
        a.call::<Vec<usize>>(b.addr(), "vec", 2usize).await.unwrap(),
        [2, 2]
    );
    // What a method says it returns is the `T` of its `Result`.
    let signature: Vec<Vec<String>> = a
        .call(b.addr(), "system.methodSignature", "sqrt")
        .await
        .unwrap();
    assert_eq!(signature[0][..], ["double", "double"], "{signature:?}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_handler_reads_its_caller_deadline_and_trace_and_calls_on() {
    let (a, b) = pair().await;
    let c = Node::builder("c").start().await.expect("c starts");
    c.register("square", |x: i64| x * x);
    let c_addr = c.addr();
    // Calls another node from inside a handler, through the node its context hands it.
    b.register(
        "square_there",
        move |cx: RequestContext, x: i64| async move {
            let caller = cx.caller().map(|p| p.name.clone());
            let deadline_set = cx.deadline().is_some();
            let trace = cx.trace().map(|t| t.trace_id);
            let squared: i64 = cx.node()?.call(c_addr, "square", x).await?;
            Ok::<_, RpcError>((squared, caller, deadline_set, trace))
        },
    );
    b.register("who_calls", |cx: RequestContext, (): ()| {
        cx.caller().map(|p| p.name.clone())
    });

    let trace = Trace::random();
    let (squared, caller, deadline_set, seen): (i64, Option<String>, bool, Option<[u8; 16]>) =
        with_trace(trace, a.call(b.addr(), "square_there", 7))
            .await
            .unwrap();
    assert_eq!(squared, 49);
    assert_eq!(caller.as_deref(), Some("a"));
    assert!(
        deadline_set,
        "a task handler knows until when its caller waits"
    );
    assert_eq!(seen, Some(trace.trace_id));
    let who: Option<String> = a.call(b.addr(), "who_calls", ()).await.unwrap();
    assert_eq!(who.as_deref(), Some("a"));
    // An error from the nested call reaches the first caller as the handler's own.
    c.shutdown().await;
    let err = a
        .call::<(i64, Option<String>, bool, Option<[u8; 16]>)>(b.addr(), "square_there", 2)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application, "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_three_stream_shapes_register_through_one_method() {
    let (a, b) = pair().await;
    b.register_stream("count", |n: u64| stream::iter(0..n));
    b.register_stream("until_bad", |(): ()| {
        stream::iter([Ok(1u64), Ok(2), Err("bad item"), Ok(4)])
    });
    b.register_stream("sum", |(): (), mut items: Items<i64>| async move {
        let mut sum = 0;
        while let Some(item) = items.next().await {
            sum += item?;
        }
        Ok::<i64, RpcError>(sum)
    });
    b.register_stream("echo", |(): (), items: Items<i64>| {
        items.map(|item| item.map(|x| x * 10))
    });
    let peer = a.peer(b.addr()).await.unwrap();
    let counted: Vec<u64> = peer
        .call_stream::<u64>("count", 3u64)
        .map(|item| item.unwrap())
        .collect()
        .await;
    assert_eq!(counted, [0, 1, 2]);
    let items: Vec<Result<u64, RpcError>> =
        peer.call_stream::<u64>("until_bad", ()).collect().await;
    assert_eq!(items.len(), 3, "the Err item ends the stream: {items:?}");
    let err = items[2].as_ref().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    assert!(err.to_string().ends_with("bad item"), "{err}");
    assert_eq!(
        err.data::<String>().as_deref(),
        Some("bad item"),
        "typed, as a call's"
    );
    let options = meshrpc::stream::StreamOptions::default();
    let (sink, reply) = peer.client_stream::<i64, i64>("sum", (), options).unwrap();
    for i in 1..=4 {
        sink.send(&i).await.unwrap();
    }
    sink.finish();
    assert_eq!(reply.await.unwrap(), 10);
    let (sink, mut echoed) = peer.bidi_stream::<i64, i64>("echo", (), options).unwrap();
    sink.send(&5).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), echoed.next())
        .await
        .expect("an echo in time");
    assert_eq!(first.unwrap().unwrap(), 50);
    a.shutdown().await;
    b.shutdown().await;
}
