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
        // Each fire of a reminder counts one.
        .on_reminder(|_key, n: &mut i64, _name| *n += 1)
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
    // Both increments are stored: a node that loads k now reads 12.
    assert_eq!(stored(&file, "k").await, 12);
    for node in [a, b] {
        node.shutdown().await;
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_queued_behind_a_refused_one_is_refused_too() {
    // a's activation of k is stale (b wrote since). Two calls reach it at once: the first's
    // write is refused, and the second, queued behind it naming the version the first
    // would have made, must not land on top of b's write either (with versions that
    // count, it would: b's write made exactly that number).
    let file = StateFile::new();
    let (a, b) = (node("a", &file).await, node("b", &file).await);
    let on_a = a.actor_ref("pcounter", "k");
    assert_eq!(on_a.call::<i64>("incr", 1).await.unwrap(), 1);
    assert_eq!(
        b.actor_ref("pcounter", "k")
            .call::<i64>("incr", 1)
            .await
            .unwrap(),
        2
    );
    let (first, second) = tokio::join!(on_a.call::<i64>("incr", 10), on_a.call::<i64>("incr", 10));
    let mut answers = [first.unwrap(), second.unwrap()];
    answers.sort();
    assert_eq!(
        answers,
        [12, 22],
        "each increment counted once, on top of b's"
    );
    assert_eq!(stored(&file, "k").await, 22);
    for node in [a, b] {
        node.shutdown().await;
    }
}

/// What `key` holds in `file`, as a node that loads it now reads it.
async fn stored(file: &StateFile, key: &str) -> i64 {
    let reader = node("reader", file).await;
    let n = reader
        .actor_ref("pcounter", key)
        .call("get", ())
        .await
        .unwrap();
    reader.shutdown().await;
    n
}

/// Polls `key`'s count on `node` until it reaches `at_least`, within 10 s.
async fn counted(node: &Node, key: &str, at_least: i64) -> i64 {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n: i64 = node
            .actor_ref("pcounter", key)
            .call("get", ())
            .await
            .unwrap();
        if n >= at_least {
            return n;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{key} counted {n}, not {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_every_period_until_it_is_forgotten_and_outlives_its_node() {
    use std::time::Duration;
    let file = StateFile::new();
    let a = node("a", &file).await;
    let tick = a.actor_ref("pcounter", "r");
    tick.remind("tick", Duration::from_millis(100))
        .await
        .unwrap();
    counted(&a, "r", 3).await;
    // Its node stops; another on the same store fires it on.
    a.shutdown().await;
    let b = node("b", &file).await;
    let fired = counted(&b, "r", 1).await;
    counted(&b, "r", fired + 2).await;
    let tick = b.actor_ref("pcounter", "r");
    assert!(tick.forget("tick").await.unwrap(), "it was there");
    assert!(!tick.forget("tick").await.unwrap(), "and is no more");
    let after = counted(&b, "r", 0).await;
    // Another reminder firing twice spans two periods: the forgotten one fires no more (a
    // fire already running when it was forgotten may still land).
    let probe = b.actor_ref("pcounter", "probe");
    probe
        .remind("tick", Duration::from_millis(100))
        .await
        .unwrap();
    counted(&b, "probe", 2).await;
    let now = counted(&b, "r", 0).await;
    assert!(
        now <= after + 1,
        "fired after it was forgotten: {after} then {now}"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_bad_reminder_is_refused_saying_why() {
    use std::time::Duration;
    let file = StateFile::new();
    let a = node("a", &file).await;
    let r = a.actor_ref("pcounter", "k");
    let short = r
        .remind("tick", Duration::from_millis(10))
        .await
        .unwrap_err();
    assert!(short.to_string().contains("period"), "{short}");
    let unnamed = r.remind("", Duration::from_secs(1)).await.unwrap_err();
    assert!(unnamed.to_string().contains("named"), "{unnamed}");
    a.shutdown().await;
    // Without a store there is nowhere to keep one.
    let volatile = Node::start(NodeConfig::default()).await.unwrap();
    let refused = (volatile.actor_ref("pcounter", "k"))
        .remind("tick", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("--state"), "{refused}");
    volatile.shutdown().await;
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_stops_the_node_saying_why() {
    let err = Node::builder("x")
        .state("redis://nowhere")
        .start()
        .await
        .err()
        .expect("no node with an unknown store");
    assert!(err.to_string().contains("names no state store"), "{err}");
}
