//! Membership in process: events, and how long a 32-node cluster takes to converge.

use std::time::Duration;

use meshrpc::{MemberEvent, MemberStatus, Node, NodeConfig};
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

fn config(name: &str, seed: Option<String>) -> NodeConfig {
    NodeConfig {
        name: name.to_owned(),
        seeds: seed.into_iter().collect(),
        heartbeat: Duration::from_millis(200),
        down_after: Duration::from_secs(2),
        ..NodeConfig::default()
    }
}

async fn next_event(events: &mut tokio::sync::broadcast::Receiver<MemberEvent>) -> MemberEvent {
    tokio::time::timeout(PATIENCE, events.recv())
        .await
        .expect("an event in time")
        .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_nodes_join_and_leave() {
    let a = Node::start(config("a", None)).await.unwrap();
    let mut events = a.subscribe();
    let b = Node::start(config("b", Some(a.addr().to_string())))
        .await
        .unwrap();
    match next_event(&mut events).await {
        MemberEvent::NodeUp(m) => assert_eq!(
            (m.name.as_str(), m.id, m.addr),
            ("b", b.id(), Some(b.addr()))
        ),
        other => panic!("expected b up, got {other:?}"),
    }
    let view = a.members();
    let names: Vec<(&str, MemberStatus)> =
        view.iter().map(|m| (m.name.as_str(), m.status)).collect();
    assert_eq!(names, [("a", MemberStatus::Up), ("b", MemberStatus::Up)]);
    b.shutdown().await;
    match next_event(&mut events).await {
        MemberEvent::NodeLeft(m) => {
            assert_eq!((m.name.as_str(), m.status), ("b", MemberStatus::Left))
        }
        other => panic!("expected b left, got {other:?}"),
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_nodes_converge_and_link_on_demand() {
    const N: usize = 32;
    let started = Instant::now();
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..N {
        // Each node knows only the one before it.
        let seed = nodes.last().map(|n| n.addr().to_string());
        nodes.push(
            Node::start(config(&format!("n{i:02}"), seed))
                .await
                .unwrap(),
        );
    }
    let all_started = started.elapsed();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut complete = 0;
        for node in &nodes {
            let up = node
                .members()
                .iter()
                .filter(|m| m.status == MemberStatus::Up)
                .count();
            complete += usize::from(up == N);
        }
        if complete == N {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {complete} of {N} nodes saw everyone within {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = started.elapsed();
    // Membership holds no connection per pair (a mesh would hold N - 1 on every node): a
    // link opens on the first call, by name. State syncs (at join, then every 30
    // heartbeats) open a link for one call and close it after, unless the other side was
    // using it at that moment (then it idles out later), so a few may be seen open.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let most = nodes.iter().map(|n| n.peers().len()).max().unwrap_or(0);
        if most <= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a node still holds {most} links without calls"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let far = nodes[N - 1].name().to_owned();
    let me: WhoAmI = nodes[0]
        .call(far.as_str(), "system.whoami", ())
        .await
        .unwrap();
    assert_eq!(me.name, far);
    assert!(
        nodes[0].peers().iter().any(|p| p.name == far),
        "the call opened a link to {far}"
    );
    println!(
        "{N} nodes: started in {all_started:?}, every node saw all {N} up after {converged:?}"
    );
    for node in &nodes {
        node.shutdown().await;
    }
}

/// What `system.whoami` answers (bincode reads every field, though only `name` is checked).
#[derive(Debug, serde::Deserialize)]
#[allow(dead_code)]
struct WhoAmI {
    name: String,
    id: String,
    addr: String,
}
