//! Virtual actors whose state persists (`VirtualBuilder::persist`): the state outlives its
//! activation and its node, and a second activation of a key cannot overwrite the first.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use meshrpc::{Node, NodeConfig};

/// A fresh SQLite file in a folder of its own, removed when dropped.
struct StateFile(PathBuf);

impl StateFile {
    fn new() -> StateFile {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshrpc-durable-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        StateFile(dir)
    }

    fn url(&self) -> String {
        format!("sqlite:{}", self.0.join("state.db").display())
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A node alone (no seeds) hosting the persistent counter `pcounter`, its state in `file`.
async fn node(name: &str, file: &StateFile) -> Node {
    joined(name, file, Vec::new()).await
}

/// Like [`node`], joining the cluster of `seeds`.
async fn joined(name: &str, file: &StateFile, seeds: Vec<String>) -> Node {
    let node = Node::start(NodeConfig {
        name: name.to_owned(),
        state: Some(file.url()),
        seeds,
        ..NodeConfig::default()
    })
    .await
    .expect("a node with a state store");
    node.virtual_actor("pcounter", |_key: &str| 0i64)
        .persist()
        .method("incr", |n: &mut i64, by: i64| {
            *n += by;
            *n
        })
        .method("get", |n: &mut i64, (): ()| *n)
        .start()
        .await
        .expect("the type starts");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_outlives_its_node() {
    let file = StateFile::new();
    let a = node("a", &file).await;
    let counter = a.actor_ref("pcounter", "k");
    for expected in 1..=3 {
        assert_eq!(counter.call::<i64>("incr", 1).await.unwrap(), expected);
    }
    a.shutdown().await;
    // Another node on the same store: the count goes on.
    let b = node("b", &file).await;
    let counter = b.actor_ref("pcounter", "k");
    assert_eq!(counter.call::<i64>("get", ()).await.unwrap(), 3);
    assert_eq!(counter.call::<i64>("incr", 1).await.unwrap(), 4);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_activation_cannot_overwrite_the_first() {
    // Two nodes that do not know each other (a partition, as far as they can tell) both
    // host key k on one store: each has its own activation of it.
    let file = StateFile::new();
    let (a, b) = (node("a", &file).await, node("b", &file).await);
    let (on_a, on_b) = (a.actor_ref("pcounter", "k"), b.actor_ref("pcounter", "k"));
    assert_eq!(on_a.call::<i64>("incr", 1).await.unwrap(), 1);
    // b's activation loads what a wrote and goes on from there.
    assert_eq!(on_b.call::<i64>("incr", 1).await.unwrap(), 2);
    // a's activation still holds 1 at version 1: its write is refused, nothing is
    // acknowledged and it ends; the retry ActorRef makes activates k again from the stored
    // 2. Without the version check a would answer 11 and b's increment would be lost.
    assert_eq!(on_a.call::<i64>("incr", 10).await.unwrap(), 12);
    assert_eq!(
        on_b.call::<i64>("get", ()).await.unwrap(),
        2,
        "b's activation keeps its own"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_view_change_a_stale_activation_loads_what_was_written_before_it_answers() {
    // a and b each serve every key, unaware of each other; b's writes make a's stale.
    let file = StateFile::new();
    let (a, b) = (node("a", &file).await, node("b", &file).await);
    let keys: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(
            a.actor_ref("pcounter", key)
                .call::<i64>("incr", 1)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            b.actor_ref("pcounter", key)
                .call::<i64>("incr", 1)
                .await
                .unwrap(),
            2
        );
    }
    // A member joins a (as when a partition heals): a's view changes. The keys a keeps
    // must not answer from the state it loaded before b wrote.
    let c = joined("c", &file, vec![a.addr().to_string()]).await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for key in &keys {
            seen.push(
                a.actor_ref("pcounter", key)
                    .call::<i64>("get", ())
                    .await
                    .unwrap(),
            );
        }
        if seen.iter().all(|n| *n == 2) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stale answers after the view change: {seen:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_stops_the_node_saying_why() {
    let err = Node::start(NodeConfig {
        name: "x".into(),
        state: Some("redis://nowhere".into()),
        ..NodeConfig::default()
    })
    .await
    .err()
    .expect("no node with an unknown store");
    assert!(err.to_string().contains("names no state store"), "{err}");
}
