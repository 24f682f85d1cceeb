//! Typed services from `meshrpc::service!`: a typed client and server (sync, async, fallible
//! and unit methods), named parameters through JSON, help and signatures from the
//! declaration, fingerprints that catch two definitions that disagree, and a service that
//! grows a method without breaking its callers.

use std::time::Duration;

use meshrpc::{CallOptions, Client, ErrorKind, Node};
use serde_json::json;

mod v1 {
    meshrpc::service! {
        /// The calculator of the Python tutorial.
        pub service Calc {
            /// a + b
            fn add(a: i64, b: i64) -> i64;
            /// x * x, or an error when it overflows.
            fn square(x: i64) -> Result<i64, String>;
            /// Waits, then answers.
            async fn sleep(ms: u64) -> u64;
            /// Fails on purpose.
            async fn fail(message: String) -> Result<(), String>;
            /// Nothing at all.
            fn ping();
        }
    }

    pub struct Impl;

    impl Calc for Impl {
        fn add(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        fn square(&self, x: i64) -> Result<i64, String> {
            x.checked_mul(x).ok_or_else(|| "overflow".to_owned())
        }
        async fn sleep(&self, ms: u64) -> u64 {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            ms
        }
        async fn fail(&self, message: String) -> Result<(), String> {
            Err(message)
        }
        fn ping(&self) {}
    }
}

/// The same service, but `add` disagrees about its types.
mod narrow {
    meshrpc::service! {
        pub service Calc {
            fn add(a: i32, b: i32) -> i32;
        }
    }
}

/// The same service with one more method: its old callers must not notice.
mod v2 {
    meshrpc::service! {
        pub service Calc {
            fn add(a: i64, b: i64) -> i64;
            fn negate(x: i64) -> i64;
        }
    }

    pub struct Impl;

    impl Calc for Impl {
        fn add(&self, a: i64, b: i64) -> i64 {
            a + b
        }
        fn negate(&self, x: i64) -> i64 {
            -x
        }
    }
}

async fn pair() -> (Node, Node) {
    let server = Node::builder("server").start().await.unwrap();
    let client = Node::builder("client").start().await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_client_calls_a_typed_server() {
    let (server, client) = pair().await;
    server.serve(v1::CalcServer::new(v1::Impl));
    let calc = v1::CalcClient::new(client.peer(server.addr()).await.unwrap());
    assert_eq!(calc.add(2, 3).await.unwrap(), 5);
    assert_eq!(calc.square(12).await.unwrap(), 144);
    let err = calc.square(i64::MAX).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Application, "{err}");
    assert_eq!(calc.sleep(5).await.unwrap(), 5);
    let err = calc.fail("disk full".into()).await.unwrap_err();
    assert!(err.to_string().contains("disk full"), "{err}");
    calc.ping().await.unwrap();
    // The descriptors carry names, parameters and the fingerprint.
    assert_eq!(
        v1::CalcClient::ADD.signature(),
        "add(a: i64, b: i64) -> i64"
    );
    assert_eq!(v1::CalcClient::METHODS.len(), 5);
    assert_eq!(v1::CalcClient::ADD.params[1].name, "b");
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_go_by_name_and_errors_speak_of_the_method() {
    let (server, client) = pair().await;
    server.serve(v1::CalcServer::new(v1::Impl));
    let peer = client.peer(server.addr()).await.unwrap();
    let call = |args: serde_json::Value| {
        let peer = peer.clone();
        async move { peer.call_json("add", &args, CallOptions::default()).await }
    };
    assert_eq!(call(json!({"a": 40, "b": 2})).await.unwrap(), json!(42));
    assert_eq!(call(json!([40, 2])).await.unwrap(), json!(42));
    let err = call(json!([1, 2, 3])).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    assert_eq!(
        err.to_string(),
        "`add` takes 2 arguments (a: i64, b: i64), got 3"
    );
    let err = call(json!({"a": 1})).await.unwrap_err();
    assert!(err.to_string().contains("argument `b` is missing"), "{err}");
    let err = peer
        .call_json("fail", &json!([]), CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "`fail` takes 1 argument (message: string), got none"
    );
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_signatures_come_from_the_declaration() {
    let (server, client) = pair().await;
    server.serve(v1::CalcServer::new(v1::Impl));
    let peer = client.peer(server.addr()).await.unwrap();
    let help: String = peer.call("system.methodHelp", "add").await.unwrap();
    assert_eq!(help, "add(a: i64, b: i64) -> i64\n\na + b");
    let signature: Vec<Vec<String>> = peer.call("system.methodSignature", "square").await.unwrap();
    assert_eq!(signature, vec![vec!["int".to_owned(), "int".to_owned()]]);
    let names: Vec<String> = peer.call("system.listMethods", ()).await.unwrap();
    for name in ["add", "ping", "system.methodHelp", "system.methodSignature"] {
        assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
    }
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_whose_definition_disagrees_is_told_both_signatures() {
    let (server, client) = pair().await;
    server.serve(v1::CalcServer::new(v1::Impl));
    let wrong = narrow::CalcClient::new(client.peer(server.addr()).await.unwrap());
    let err = wrong.add(2, 3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadArguments);
    let text = err.to_string();
    assert!(
        text.contains("the callee declares `add(a: i64, b: i64) -> i64`"),
        "{text}"
    );
    assert!(
        text.contains("this caller declares `add(a: i32, b: i32) -> i32`"),
        "{text}"
    );
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_method_breaks_no_caller_of_the_others() {
    let (server, client) = pair().await;
    server.serve(v2::CalcServer::new(v2::Impl));
    let peer = client.peer(server.addr()).await.unwrap();
    // An old client, compiled before `negate` existed, still calls `add`.
    assert_eq!(
        v1::CalcClient::new(peer.clone()).add(40, 2).await.unwrap(),
        42
    );
    assert_eq!(v2::CalcClient::new(peer).negate(7).await.unwrap(), -7);
    server.shutdown().await;
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_use_typed_services_too() {
    let server = Node::builder("server").start().await.unwrap();
    server.serve(v1::CalcServer::new(v1::Impl));
    let client = Client::connect(&server.addr().to_string()).await.unwrap();
    let calc = v1::CalcClient::new(&client);
    assert_eq!(calc.add(1, 1).await.unwrap(), 2);
    let slow = tokio::time::timeout(Duration::from_secs(5), calc.sleep(1)).await;
    assert_eq!(slow.unwrap().unwrap(), 1);
    client.close().await;
    server.shutdown().await;
}
