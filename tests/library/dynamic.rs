//! Dynamic methods (`meshrpc::dynamic`, what the Python package registers): types known at
//! run time, read from a typed Rust caller's bincode and from JSON alike, results checked
//! against the declared type and encoded as the Rust type of the same name, so typed
//! callers, `call_json` and introspection cannot tell them from Rust methods.

use std::collections::BTreeMap;

use meshrpc::dynamic::{Function, Method, Raised, Type, Value};
use meshrpc::{CallOptions, ErrorKind, Node};
use serde_json::json;

fn method(params: &[(&str, &str)], result: &str, doc: &str) -> Method {
    Method {
        params: params
            .iter()
            .map(|(name, ty)| ((*name).to_owned(), Type::parse(ty).unwrap()))
            .collect(),
        result: Type::parse(result).unwrap(),
        doc: doc.to_owned(),
    }
}

/// A node serving `add`, `echo` (every shape, answered as sent), `lie` (answers a string
/// where it declares an int) and `raise`.
async fn server() -> Node {
    let node = Node::builder("dynamic").start().await.unwrap();
    let add = method(&[("a", "int"), ("b", "int")], "int", "a + b");
    node.register(
        "add",
        Function::new(add, |_cx, args: Vec<Value>| async move {
            match args.as_slice() {
                [Value::Int(a), Value::Int(b)] => Ok(Value::Int(a + b)),
                other => Err(Raised::new(format!("unexpected {other:?}"))),
            }
        }),
    );
    let shapes = "(bytes, Optional[str], dict[str, list[float]], bool, None)";
    let echo = method(
        &[
            ("data", "bytes"),
            ("label", "Optional[str]"),
            ("series", "dict[str, list[float]]"),
            ("flag", "bool"),
            ("nothing", "None"),
        ],
        "list[any]",
        shapes,
    );
    node.register(
        "echo",
        Function::new(echo, |_cx, args: Vec<Value>| async move {
            Ok(Value::List(args))
        }),
    );
    let same = method(
        &[("m", "dict[str, Optional[bytes]]"), ("l", "list[bytes]")],
        "list[any]",
        "",
    );
    node.register(
        "same",
        Function::new(same, |_cx, args: Vec<Value>| async move {
            Ok(Value::List(args))
        }),
    );
    let map = method(
        &[("m", "dict[str, Optional[bytes]]")],
        "dict[str, Optional[bytes]]",
        "",
    );
    node.register(
        "map",
        Function::new(map, |_cx, mut args: Vec<Value>| async move {
            Ok(args.pop().unwrap_or(Value::Null))
        }),
    );
    let kind = method(&[("v", "any")], "str", "");
    node.register(
        "kind",
        Function::new(kind, |_cx, args: Vec<Value>| async move {
            Ok(Value::Str(
                args.first().map(Value::describe).unwrap_or_default(),
            ))
        }),
    );
    let lie = method(&[], "int", "");
    node.register(
        "lie",
        Function::new(lie, |_cx, _args| async {
            Ok(Value::Str("not a number".into()))
        }),
    );
    let raise = method(&[("why", "str")], "None", "");
    node.register(
        "raise",
        Function::new(raise, |_cx, args: Vec<Value>| async move {
            let why = match args.into_iter().next() {
                Some(Value::Str(why)) => why,
                _ => String::new(),
            };
            Err(Raised {
                message: format!("ValueError: {why}"),
                data: Some(Value::Map(vec![(
                    "type".into(),
                    Value::Str("ValueError".into()),
                )])),
            })
        }),
    );
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_rust_callers_and_json_callers_reach_a_dynamic_method_alike() {
    let node = server().await;
    let caller = Node::builder("caller").start().await.unwrap();
    let peer = caller.peer(node.addr()).await.unwrap();
    // Bincode, as a typed caller sends it.
    let sum: i64 = peer.call("add", (40i64, 2i64)).await.unwrap();
    assert_eq!(sum, 42);
    // JSON, by position and by name.
    let options = CallOptions::default();
    let named = json!({"a": 1, "b": 2});
    let by_name = peer.call_json("add", &named, options).await;
    assert_eq!(by_name.unwrap(), json!(3));
    // Every shape, from a typed caller: bytes, an option, a map of lists, bool and unit.
    let mut series = BTreeMap::new();
    series.insert("x".to_owned(), vec![1.5f64, 2.0]);
    let args = (
        serde_bytes::ByteBuf::from(vec![0u8, 255]),
        Some("label".to_owned()),
        series,
        true,
        (),
    );
    // The result is a `list[any]`: in bincode, each `any` travels as its JSON text.
    let echoed: Vec<String> = peer.call("echo", &args).await.unwrap();
    assert_eq!(
        echoed,
        ["[0,255]", "\"label\"", "{\"x\":[1.5,2.0]}", "true", "null"]
    );
    // Maps of options of bytes, and lists of bytes, both ways from a typed caller.
    let mut map = std::collections::HashMap::new();
    map.insert(
        "some".to_owned(),
        Some(serde_bytes::ByteBuf::from(vec![1u8, 2])),
    );
    map.insert("none".to_owned(), None);
    let back: std::collections::HashMap<String, Option<serde_bytes::ByteBuf>> =
        peer.call("map", (&map,)).await.unwrap();
    assert_eq!(back, map);
    let list = vec![
        serde_bytes::ByteBuf::from(vec![7u8]),
        serde_bytes::ByteBuf::new(),
    ];
    let both: Vec<String> = peer.call("same", (&map, &list)).await.unwrap();
    assert_eq!(both[1], "[[7],[]]");
    // An unannotated (`json`) parameter takes JSON text from a typed caller.
    let kind: String = peer.call("kind", "{\"a\": 1}").await.unwrap();
    assert_eq!(kind, "a dict of 1");
    let err = peer.call::<String>("kind", 5i64).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments, "{err}");
    assert!(
        err.to_string()
            .contains("a `json` parameter takes its value's JSON text"),
        "{err}"
    );
    // The same through JSON, with an int where a float is declared.
    let sent = json!([[0, 255], null, {"x": [1, 2.5]}, false, null]);
    let echoed = peer.call_json("echo", &sent, options).await.unwrap();
    assert_eq!(
        echoed,
        json!([[0, 255], null, {"x": [1.0, 2.5]}, false, null])
    );
    node.shutdown().await;
    caller.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_arguments_and_wrong_results_get_errors_in_the_methods_words() {
    let node = server().await;
    let caller = Node::builder("caller").start().await.unwrap();
    let peer = caller.peer(node.addr()).await.unwrap();
    let options = CallOptions::default();
    let err = peer.call_json("add", &json!([1, "two"]), options).await;
    let err = err.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    assert_eq!(
        err.to_string(),
        "argument `b` of `add`: expected i64, got \"two\""
    );
    let err = peer
        .call_json("add", &json!([1]), options)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`add` takes 2 arguments (a: i64, b: i64), got 1"
    );
    let err = peer.call::<i64>("add", (1i64, "two")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments, "{err}");
    assert!(err.to_string().contains("(a: i64, b: i64)"), "{err}");
    // A result that is not the declared type is the callee's error, and it keeps serving.
    let err = peer.call::<i64>("lie", ()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    assert_eq!(
        err.to_string(),
        "`lie` failed: `lie` returned str \"not a number\", which is not its declared result type int"
    );
    let err = peer.call::<()>("raise", "bad input").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application);
    assert!(err.to_string().contains("ValueError: bad input"), "{err}");
    assert_eq!(
        err.data::<serde_json::Value>(),
        Some(json!({"type": "ValueError"}))
    );
    assert_eq!(peer.call::<i64>("add", (1i64, 1i64)).await.unwrap(), 2);
    // Introspection reads like a Rust method's.
    let help: String = peer.call("system.methodHelp", "add").await.unwrap();
    assert_eq!(help, "add(a: i64, b: i64) -> i64\n\na + b");
    let signature: Vec<Vec<String>> = peer.call("system.methodSignature", "echo").await.unwrap();
    assert_eq!(
        signature,
        [["array", "base64", "string", "struct", "boolean", "nil"]]
    );
    node.shutdown().await;
    caller.shutdown().await;
}

#[test]
fn types_read_as_python_writes_them_and_refuse_what_cannot_travel() {
    let parsed = Type::parse("dict[str, list[Optional[int]]]").unwrap();
    assert_eq!(parsed.to_string(), "dict[str, list[Optional[int]]]");
    assert_eq!(
        Type::parse("typing.Optional[bytes]").unwrap(),
        Type::Option(Box::new(Type::Bytes))
    );
    for (text, error) in [
        ("dict[int, str]", "dict keys must be `str`"),
        ("set[int]", "`set` is not a type meshrpc can carry"),
        ("list", "`list` needs its item type"),
        ("list[int", "expected `]`"),
        ("int int", "unexpected `int`"),
        ("list[None]", "carries nothing"),
    ] {
        let err = Type::parse(text).unwrap_err();
        assert!(err.contains(error), "{text}: {err}");
    }
    let deep = format!("{}int{}", "list[".repeat(40), "]".repeat(40));
    assert!(Type::parse(&deep).unwrap_err().contains("nest deeper"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_actors_awaited_functions_still_run_one_call_at_a_time_per_key() {
    use std::sync::{Arc, Mutex};
    let node = Node::builder("host").start().await.unwrap();
    // Each call logs when it starts and when its future ends; a turn that did not await
    // the future would interleave them.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = log.clone();
    let incr = method(&[("by", "int")], "int", "adds `by`, slowly");
    node.virtual_actor("slow", |_key: &str| 0i64)
        .function(
            "incr",
            Function::new(incr, move |n: &mut i64, args: Vec<Value>| {
                if let Some(Value::Int(by)) = args.first() {
                    *n += *by as i64;
                }
                let (value, log) = (*n, seen.clone());
                log.lock().unwrap().push(format!("start {value}"));
                async move {
                    tokio::task::yield_now().await;
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    log.lock().unwrap().push(format!("end {value}"));
                    Ok(Value::Int(value.into()))
                }
            }),
        )
        .start()
        .await
        .unwrap();
    let actor = node.actor_ref("slow", "k");
    let calls = (0..8).map(|_| {
        let actor = actor.clone();
        async move { actor.call::<i64>("incr", 1i64).await.unwrap() }
    });
    let mut answers = futures_util::future::join_all(calls).await;
    answers.sort_unstable();
    assert_eq!(answers, (1..=8).collect::<Vec<i64>>());
    let log = log.lock().unwrap().clone();
    let expected: Vec<String> = (1..=8)
        .flat_map(|v| [format!("start {v}"), format!("end {v}")])
        .collect();
    assert_eq!(log, expected);
    // From JSON too, with the declared signature.
    let two = json!([2]);
    let json = actor.call_json("incr", &two, std::time::Duration::from_secs(5));
    assert_eq!(json.await.unwrap(), json!(10));
    // Such a type cannot persist: its writes follow synchronous methods.
    let refused = node
        .virtual_actor("slow2", |_key: &str| 0i64)
        .function(
            "get",
            Function::new(method(&[], "int", ""), |n: &mut i64, _| {
                let n = *n;
                async move { Ok(Value::Int(n.into())) }
            }),
        )
        .persist()
        .start()
        .await;
    assert!(refused.unwrap_err().to_string().contains("cannot persist"));
    node.shutdown().await;
}
