//! Mutual TLS on node links: nodes with certificates from the cluster CA call each other
//! (with the cookie still checked inside), and anyone else is refused before anything can be
//! called: a node with another CA's certificate, or a plain-TCP client.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use meshrpc::{Client, ErrorKind, Node, NodeConfig, TlsConfig};

const ADD: &str = "add";

fn dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshrpc-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn files(dir: &Path, name: &str) -> TlsConfig {
    TlsConfig {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join("ca.pem"),
    }
}

fn config(name: &str, tls: TlsConfig) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        tls: Some(tls),
        cookie: Some("c00kie".into()),
        ..NodeConfig::default()
    }
}

async fn node(name: &str, tls: TlsConfig) -> Node {
    let node = Node::start(config(name, tls))
        .await
        .expect("a node with TLS starts");
    node.register(ADD, |(a, b): (i64, i64)| a + b);
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_one_ca_talk_and_strangers_are_refused() {
    let ours = dir("ours");
    support::tls_gen(&ours, &["a", "b", "client"]);
    let theirs = dir("theirs");
    support::tls_gen(&theirs, &["x"]);

    let a = node("a", files(&ours, "a")).await;
    let b = node("b", files(&ours, "b")).await;
    assert_eq!(a.call::<i64>(b.addr(), ADD, (2, 3)).await.unwrap(), 5);
    assert_eq!(
        b.call::<i64>(a.addr(), ADD, (4, 5)).await.unwrap(),
        9,
        "both ways over the one TLS link"
    );
    assert_eq!((a.peers().len(), b.peers().len()), (1, 1));

    // A client with a certificate from the CA (and the cookie) may call.
    let client_config = NodeConfig {
        name: "client".into(),
        ..config("client", files(&ours, "client"))
    };
    let client = Client::connect_with(&a.addr().to_string(), &client_config)
        .await
        .unwrap();
    assert_eq!(client.peer().call::<i64>(ADD, (1, 1)).await.unwrap(), 2);
    client.close().await;

    // The right CA but the wrong cookie: TLS passes, the cookie check inside does not.
    let wrong_cookie = NodeConfig {
        cookie: Some("nope".into()),
        ..client_config.clone()
    };
    let err = Client::connect_with(&a.addr().to_string(), &wrong_cookie)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("cookie"), "{err}");

    // A node whose certificate another CA signed is refused both ways.
    let x = node("x", files(&theirs, "x")).await;
    // Each side says, in plain words, whose certificate the other's CA did not sign.
    let err = x.call::<i64>(a.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(
        err.to_string().contains("not signed by this side's CA"),
        "{err}"
    );
    let err = a.call::<i64>(x.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(
        err.to_string().contains("not signed by this side's CA"),
        "{err}"
    );

    // A plain-TCP client gets nowhere, with a hint.
    let plain = NodeConfig {
        name: "plain".into(),
        cookie: Some("c00kie".into()),
        handshake_timeout: Duration::from_secs(2),
        ..NodeConfig::default()
    };
    let err = Client::connect_with(&a.addr().to_string(), &plain)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("TLS"), "{err}");
    // And none of that disturbed the real link.
    assert_eq!(a.call::<i64>(b.addr(), ADD, (20, 22)).await.unwrap(), 42);

    for n in [a, b, x] {
        n.shutdown().await;
    }
    let _ = (
        std::fs::remove_dir_all(&ours),
        std::fs::remove_dir_all(&theirs),
    );
}

#[tokio::test]
async fn a_missing_or_broken_tls_file_is_a_clear_start_error() {
    let d = dir("broken");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("ca.pem"), "not a certificate").unwrap();
    let err = Node::start(config("a", files(&d, "a")))
        .await
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("a.pem"),
        "names the missing file: {err}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

/// Row 6 of issue 21 under TLS: a certificate the CA issued to one node let its holder
/// announce any other node's name. Now the name each side announces must be in its
/// certificate, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_must_hold_a_certificate_that_names_it() {
    let d = dir("names");
    support::tls_gen(&d, &["a", "b"]);
    let a = node("a", files(&d, "a")).await;
    // "b" holds a's certificate: the CA signed it, but not for "b".
    let posing = node("b", files(&d, "a")).await;
    let err = posing.call::<i64>(a.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains("does not name `b`"), "{err}");
    let err = a.call::<i64>(posing.addr(), ADD, (1, 1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthenticated, "{err}");
    assert!(err.to_string().contains("does not name `b`"), "{err}");
    // With its own certificate, b is let in.
    let b = node("b2", files(&d, "b")).await;
    let err = b.call::<i64>(a.addr(), ADD, (1, 1)).await.unwrap_err();
    assert!(err.to_string().contains("does not name `b2`"), "{err}");
    let b = {
        b.shutdown().await;
        node("b", files(&d, "b")).await
    };
    assert_eq!(b.call::<i64>(a.addr(), ADD, (2, 2)).await.unwrap(), 4);
    for n in [a, b, posing] {
        n.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&d);
}
