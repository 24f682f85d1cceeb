//! Location-transparent actors in process: virtual actors placed by rendezvous hashing,
//! hand-over with the save hook, minimal movement, forwarding for clients, singletons,
//! groups and monitors.

use crate::support;

use support::eventually;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshrpc::actor::{ActorRef, Down, Monitored};
use meshrpc::{Client, MemberStatus, Node, NodeConfig};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(30);

/// What the save hook writes and the load hook reads: a stand-in for a database.
type Store = Arc<Mutex<HashMap<String, i64>>>;

fn config(name: &str, seed: Option<&Node>) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        seeds: seed.map(|s| s.addr().to_string()).into_iter().collect(),
        heartbeat: Duration::from_millis(100),
        down_after: Duration::from_millis(1000),
        shutdown_grace: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

/// A node hosting `vcounter`, whose state is saved to and loaded from `store`.
async fn node(name: &str, seed: Option<&Node>, store: &Store) -> Node {
    let node = Node::start(config(name, seed)).await.unwrap();
    let (load, save) = (store.clone(), store.clone());
    node.virtual_actor("vcounter", |_key: &str| 0i64)
        .method("incr", |n: &mut i64, by: i64| {
            *n += by;
            *n
        })
        .params(&["by"])
        .method("get", |n: &mut i64, (): ()| *n)
        .on_activate(move |key, n| {
            *n = load.lock().unwrap().get(key).copied().unwrap_or(0);
        })
        .on_deactivate(move |key, n| {
            save.lock().unwrap().insert(key.to_owned(), *n);
        })
        .start()
        .await
        .unwrap();
    node
}

/// Until every node sees `n` members up, each hosting `vcounter`.
async fn converged(nodes: &[&Node]) {
    let n = nodes.len();
    for node in nodes {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let up = node
                .members()
                .iter()
                .filter(|m| m.status == MemberStatus::Up)
                .count();
            // Every node routes keys the same way, and to every node, once each knows that
            // all of them host the type.
            let agree = (0..64).all(|k| {
                let key = format!("probe-{k}");
                let owners: HashSet<Option<String>> = nodes
                    .iter()
                    .map(|other| other.actor_ref("vcounter", &key).owner())
                    .collect();
                owners.len() == 1
            });
            let used: HashSet<Option<String>> = (0..64)
                .map(|k| node.actor_ref("vcounter", &format!("probe-{k}")).owner())
                .collect();
            if up == n && agree && used.len() == n {
                break;
            }
            assert!(Instant::now() < deadline, "no convergence on {n} nodes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Which node holds each key's activation (every key must be on exactly one).
fn placement(nodes: &[&Node]) -> HashMap<String, String> {
    let mut at = HashMap::new();
    for node in nodes {
        for a in node.activations() {
            let before = at.insert(a.key.clone(), node.name().to_owned());
            assert!(before.is_none(), "{} is active on two nodes", a.key);
        }
    }
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_per_key_across_nodes_whoever_calls() {
    let store = Store::default();
    let a = node("a", None, &store).await;
    let b = node("b", Some(&a), &store).await;
    let c = node("c", Some(&a), &store).await;
    converged(&[&a, &b, &c]).await;
    let nodes = [&a, &b, &c];
    for k in 0..60 {
        // Each key called through two different nodes.
        let key = format!("user-{k}");
        let first: i64 = nodes[k % 3]
            .actor_ref("vcounter", &key)
            .call("incr", 1)
            .await
            .unwrap();
        let second: i64 = nodes[(k + 1) % 3]
            .actor_ref("vcounter", &key)
            .call("incr", 1)
            .await
            .unwrap();
        assert_eq!((first, second), (1, 2), "{key}");
    }
    let at = placement(&nodes);
    assert_eq!(at.len(), 60);
    let per_node: HashSet<&String> = at.values().collect();
    assert_eq!(per_node.len(), 3, "keys spread over every node: {at:?}");
    for k in 0..60 {
        let key = format!("user-{k}");
        let owner = a.actor_ref("vcounter", &key).owner().unwrap();
        assert_eq!(at[&key], owner, "{key} lives where placement says");
    }
    // A plain client (no placement of its own) is forwarded by whichever node it reaches.
    let client = Client::connect(b.addr()).await.unwrap();
    for k in 0..6 {
        let n: i64 = client
            .peer()
            .call(&format!("vcounter.get/user-{k}"), ())
            .await
            .unwrap();
        assert_eq!(n, 2, "user-{k} through the client");
    }
    let err = client
        .peer()
        .call::<i64>("vcounter.get", ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("vcounter.get/KEY"), "{err}");
    client.close().await;
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_only_its_keys_and_they_keep_their_state() {
    let store = Store::default();
    let a = node("a", None, &store).await;
    let b = node("b", Some(&a), &store).await;
    converged(&[&a, &b]).await;
    for k in 0..40 {
        let n: i64 = a
            .actor_ref("vcounter", &format!("k{k}"))
            .call("incr", k)
            .await
            .unwrap();
        assert_eq!(n, k);
    }
    let before = placement(&[&a, &b]);
    let c = node("c", Some(&a), &store).await;
    converged(&[&a, &b, &c]).await;
    // Keys that now hash to c move there (handed over: saved on the old owner, loaded on
    // c); every other key stays where it was, activation and all.
    eventually("the moved keys to leave their old owners", || {
        let now: HashSet<String> = [&a, &b]
            .iter()
            .flat_map(|n| n.activations())
            .map(|a| a.key)
            .collect();
        (0..40).all(|k| {
            let key = format!("k{k}");
            let owner = a.actor_ref("vcounter", &key).owner().unwrap();
            now.contains(&key) == (owner != "c")
        })
    })
    .await;
    let mut moved = 0;
    for k in 0..40 {
        let key = format!("k{k}");
        let owner = a.actor_ref("vcounter", &key).owner().unwrap();
        if owner == "c" {
            moved += 1;
        } else {
            assert_eq!(before[&key], owner, "{key} moved between two old nodes");
        }
        let n: i64 = b.actor_ref("vcounter", &key).call("get", ()).await.unwrap();
        assert_eq!(n, k as i64, "{key} kept its count");
    }
    assert!((3..=25).contains(&moved), "{moved} of 40 keys moved to c");
    let after = placement(&[&a, &b, &c]);
    assert!(after.values().filter(|n| *n == "c").count() > 0);
    for n in [a, b, c] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_keys_over_with_their_state() {
    let store = Store::default();
    let a = node("a", None, &store).await;
    let b = node("b", Some(&a), &store).await;
    converged(&[&a, &b]).await;
    for k in 0..20 {
        let n: i64 = a
            .actor_ref("vcounter", &format!("k{k}"))
            .call("incr", 5)
            .await
            .unwrap();
        assert_eq!(n, 5);
    }
    let on_b = b.activations().len();
    assert!(on_b > 0, "b owns some keys");
    let watch_b = a.monitor(Monitored::Node("b".into()));
    b.shutdown().await;
    assert_eq!(
        tokio::time::timeout(PATIENCE, watch_b).await.unwrap(),
        Down::NodeLeft("b".into())
    );
    for k in 0..20 {
        let n: i64 = a
            .actor_ref("vcounter", &format!("k{k}"))
            .call("incr", 1)
            .await
            .unwrap();
        assert_eq!(n, 6, "k{k} continued from its saved count");
    }
    assert_eq!(a.activations().len(), 20);
    a.shutdown().await;
}

/// On paused time: the idle bound is the real five minutes, and the test takes none of them.
#[tokio::test(start_paused = true)]
async fn idle_activations_are_saved_and_come_back_on_the_next_call() {
    let store = Store::default();
    let a = Node::start(config("a", None)).await.unwrap();
    let (load, save) = (store.clone(), store.clone());
    let activations = Arc::new(Mutex::new(0));
    let counted = activations.clone();
    a.virtual_actor("vcounter", |_: &str| 0i64)
        .method("incr", |n: &mut i64, by: i64| {
            *n += by;
            *n
        })
        .on_activate(move |key, n| {
            *counted.lock().unwrap() += 1;
            *n = load.lock().unwrap().get(key).copied().unwrap_or(0);
        })
        .on_deactivate(move |key, n| {
            save.lock().unwrap().insert(key.to_owned(), *n);
        })
        .idle(Duration::from_secs(300))
        .start()
        .await
        .unwrap();
    let counter = a.actor_ref("vcounter", "x");
    assert_eq!(counter.call::<i64>("incr", 3).await.unwrap(), 3);
    tokio::time::sleep(Duration::from_secs(290)).await;
    assert_eq!(a.activations().len(), 1, "not idle for long enough yet");
    assert!(store.lock().unwrap().is_empty(), "nothing saved yet");
    let went = tokio::time::Instant::now();
    eventually("the idle activation to go", || a.activations().is_empty()).await;
    assert!(
        went.elapsed() < Duration::from_secs(30),
        "{:?}",
        went.elapsed()
    );
    assert_eq!(
        store.lock().unwrap().get("x"),
        Some(&3),
        "saved when it went"
    );
    assert_eq!(counter.call::<i64>("incr", 1).await.unwrap(), 4);
    assert_eq!(
        *activations.lock().unwrap(),
        2,
        "activated again, from the save"
    );
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_singleton_runs_once_and_moves_when_its_node_goes() {
    let started = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        let seed = nodes.first();
        let node = Node::start(config(name, seed)).await.unwrap();
        let log = started.clone();
        let me = name.to_owned();
        node.virtual_actor("scheduler", |_: &str| 0u64)
            .singleton()
            .method("where", move |_: &mut u64, (): ()| me.clone())
            .on_activate(move |_, _| {
                log.lock().unwrap().push("activated".into());
            })
            .start()
            .await
            .unwrap();
        nodes.push(node);
    }
    let running = |nodes: &[Node]| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| !n.activations().is_empty())
            .map(|n| n.name().to_owned())
            .collect()
    };
    eventually("the singleton to run on exactly one node", || {
        let owners: HashSet<Option<String>> = nodes
            .iter()
            .map(|n| n.actor_ref("scheduler", ActorRef::SINGLETON).owner())
            .collect();
        owners.len() == 1 && running(&nodes).len() == 1
    })
    .await;
    let host = running(&nodes).remove(0);
    let at: String = nodes[0]
        .actor_ref("scheduler", ActorRef::SINGLETON)
        .call("where", ())
        .await
        .unwrap();
    assert_eq!(at, host, "calls reach the running one");
    let i = nodes.iter().position(|n| n.name() == host).unwrap();
    let gone = nodes.remove(i);
    gone.shutdown().await;
    eventually("the singleton to run on one of the others", || {
        running(&nodes).len() == 1
    })
    .await;
    let at: String = nodes[0]
        .actor_ref("scheduler", ActorRef::SINGLETON)
        .call("where", ())
        .await
        .unwrap();
    assert_ne!(at, host);
    for n in nodes {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_reach_their_members_and_drop_those_that_go() {
    let a = Node::start(config("a", None)).await.unwrap();
    let b = Node::start(config("b", Some(&a))).await.unwrap();
    let c = Node::start(config("c", Some(&a))).await.unwrap();
    for n in [&a, &b, &c] {
        let name = n.name().to_owned();
        n.register("who", move |(): ()| name.clone());
        n.group("workers").join().await.unwrap();
    }
    let workers = a.group("workers");
    eventually("three workers", || workers.members().len() == 3).await;
    let mut all: Vec<String> = workers
        .call_all::<String>("who", ())
        .await
        .into_iter()
        .map(|(_, r)| r.unwrap())
        .collect();
    all.sort();
    assert_eq!(all, ["a", "b", "c"]);
    let one: String = workers.call_any("who", ()).await.unwrap();
    assert!(["a", "b", "c"].contains(&one.as_str()));
    assert_eq!(workers.cast_all("who", ()).await, 3);
    c.shutdown().await;
    eventually("c to drop out", || workers.members().len() == 2).await;
    b.group("workers").leave(None).await.unwrap();
    eventually("b to leave", || workers.members().len() == 1).await;
    let only: Vec<String> = workers
        .call_all::<String>("who", ())
        .await
        .into_iter()
        .map(|(m, r)| format!("{}={}", m.node, r.unwrap()))
        .collect();
    assert_eq!(only, ["a=a"]);
    let bad = a.group("a/b").join().await.unwrap_err();
    assert!(bad.to_string().contains("without `/`"), "{bad}");
    let err = a
        .group("nobody")
        .call_any::<String>("who", ())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no live member"), "{err}");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_fire_when_a_node_dies_or_an_actor_moves() {
    let store = Store::default();
    let a = node("a", None, &store).await;
    let b = node("b", Some(&a), &store).await;
    converged(&[&a, &b]).await;
    // A key b owns: its monitor fires when b goes.
    let key = (0..100)
        .map(|k| format!("m{k}"))
        .find(|k| a.actor_ref("vcounter", k).owner().as_deref() == Some("b"))
        .unwrap();
    let on_b = a.monitor(Monitored::Actor(a.actor_ref("vcounter", &key)));
    // A key a owns: a newcomer may take it, or not; its node stays, so it fires only if
    // the key moves.
    let unknown = a.monitor(Monitored::Node("nobody".into()));
    assert_eq!(
        tokio::time::timeout(PATIENCE, unknown).await.unwrap(),
        Down::Unknown("nobody".into())
    );
    b.shutdown().await;
    assert_eq!(
        tokio::time::timeout(PATIENCE, on_b).await.unwrap(),
        Down::NodeLeft("b".into())
    );
    a.shutdown().await;
}
