//! A cluster of two releases, as during a rolling upgrade: nodes of this release (protocol
//! 4) and nodes that speak exactly as the release before (protocol 3, `max_protocol: 3`)
//! join one membership, call each other both ways and stream both ways; each link speaks
//! the newest version its two ends share. (`tests/processes/mixed_process.rs` does the same with real
//! processes, and with the previous release's own binary when one is given.)

use std::time::Duration;

use futures_util::{stream, StreamExt};
use meshrpc::stream::{Items, StreamOptions};
use meshrpc::wire::{PREVIOUS_VERSION, PROTOCOL_VERSION};
use meshrpc::{Node, NodeConfig};
use tokio::time::{timeout, Instant};

const PATIENCE: Duration = Duration::from_secs(20);

async fn node(name: &str, max_protocol: u16, seed: Option<&Node>) -> Node {
    let node = Node::start(NodeConfig {
        name: name.to_owned(),
        max_protocol,
        seeds: seed.map(|s| s.addr().to_string()).into_iter().collect(),
        ..NodeConfig::default()
    })
    .await
    .expect("node");
    node.register("add", |(a, b): (i64, i64)| a + b);
    node.register_stream("count", |n: u64| stream::iter(0..n));
    node.register_stream("sum", |(): (), mut items: Items<i64>| async move {
        let mut sum = 0i64;
        while let Some(item) = items.next().await {
            sum += item.map_err(|e| e.to_string())?;
        }
        Ok::<i64, String>(sum)
    });
    node
}

async fn everyone_up(nodes: &[&Node]) {
    let deadline = Instant::now() + PATIENCE;
    for node in nodes {
        loop {
            let members = node.members();
            let up = members
                .iter()
                .filter(|m| m.status == meshrpc::MemberStatus::Up);
            if up.count() == nodes.len() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} never saw everyone",
                node.name()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// `from` calls, streams from and streams to `to`; returns the version their link speaks.
async fn talk(from: &Node, to: &Node) -> u16 {
    let peer = from.peer(to.addr()).await.expect("a link");
    let sum: i64 = timeout(PATIENCE, peer.call("add", (2i64, 3i64)))
        .await
        .expect("in time")
        .expect("add");
    assert_eq!(sum, 5);
    let counted: Vec<u64> = from
        .peer(to.addr())
        .await
        .unwrap()
        .call_stream::<u64>("count", 5u64)
        .map(|item| item.expect("an item"))
        .collect()
        .await;
    assert_eq!(counted, [0, 1, 2, 3, 4]);
    let (sink, reply) = from
        .peer(to.addr())
        .await
        .unwrap()
        .client_stream::<i64, i64>("sum", (), StreamOptions::default())
        .expect("open the upload");
    for i in 1..=100 {
        sink.send(&i).await.expect("sent");
    }
    sink.finish();
    assert_eq!(
        timeout(PATIENCE, reply)
            .await
            .expect("in time")
            .expect("sum"),
        5050
    );
    peer.info().protocol
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_this_release_and_the_one_before_form_one_cluster_and_talk_both_ways() {
    let new_a = node("new-a", PROTOCOL_VERSION, None).await;
    let old_b = node("old-b", PREVIOUS_VERSION, Some(&new_a)).await;
    let new_c = node("new-c", PROTOCOL_VERSION, Some(&old_b)).await;
    everyone_up(&[&new_a, &old_b, &new_c]).await;

    // Each way, so each side is dialer once and acceptor once.
    assert_eq!(talk(&new_a, &old_b).await, PREVIOUS_VERSION);
    assert_eq!(talk(&old_b, &new_c).await, PREVIOUS_VERSION);
    assert_eq!(talk(&new_c, &new_a).await, PROTOCOL_VERSION);
    assert_eq!(talk(&new_a, &new_c).await, PROTOCOL_VERSION);
    for node in [new_a, old_b, new_c] {
        node.shutdown().await;
    }
}
