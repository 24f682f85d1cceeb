//! Five hosts on one bridge, each a network namespace with its own address, each running a
//! real `meshrpc node`: they form a cluster through one seed and advertise their own
//! addresses; one host is cut off (its link down) and both sides mark the other down while
//! calls across fail fast; the link comes back and the cluster heals by itself.
//!
//! Six hosts split across two switches from the start, every node naming one seed on each
//! side: each side forms a cluster of its own, and when the switches are joined the two
//! merge into one by themselves.
//!
//! The tests make their namespaces and always delete them (even when they fail). They need
//! root, as CI has; where namespaces cannot be made they say so and pass without running.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::lan::Lan;
use support::{wait_until, NodeProc};

const FAST: [&str; 4] = ["--heartbeat-ms", "100", "--down-after-ms", "1000"];
const HOSTS: usize = 5;

#[test]
fn five_hosts_form_a_cluster_survive_a_cut_cable_and_heal() {
    let Some(lan) = Lan::build(HOSTS) else {
        return;
    };
    let names: Vec<String> = (1..=HOSTS).map(|i| format!("h{i}")).collect();
    let seed = format!("{}:4000", lan.addr(1));
    let mut nodes = Vec::new();
    for i in 1..=HOSTS {
        let listen = format!("{}:4000", lan.addr(i));
        let mut extra = FAST.to_vec();
        if i > 1 {
            extra.extend(["--seed", &seed]);
        }
        nodes.push(NodeProc::start_in(
            lan.host(i),
            &names[i - 1],
            &listen,
            &extra,
        ));
    }
    let everyone = |status: &str| -> BTreeMap<String, String> {
        names
            .iter()
            .map(|n| (n.clone(), status.to_owned()))
            .collect()
    };
    for i in 1..=HOSTS {
        wait_until(&format!("h{i} to see five hosts up"), || {
            lan.members(i) == everyone("up")
        });
    }
    // Each advertises its own address, so calls by name cross the bridge.
    let whoami: serde_json::Value =
        serde_json::from_slice(&lan.call(1, "fanout", &["\"system.whoami\"", "[]"]).stdout)
            .unwrap_or_default();
    assert_eq!(
        whoami["h5"]["addr"],
        format!("{}:4000", lan.addr(5)),
        "{whoami}"
    );

    lan.cable(5, false);
    let cut = Instant::now();
    wait_until("h1 to mark h5 down", || {
        lan.members(1).get("h5").map(String::as_str) == Some("down")
    });
    wait_until("h5 to mark the others down", || {
        let view = lan.members(5);
        names[..HOSTS - 1]
            .iter()
            .all(|n| view.get(n).map(String::as_str) == Some("down"))
    });
    println!(
        "cut off: both sides saw the other down after {:?}",
        cut.elapsed()
    );
    // A call across the cut fails at once with a reason, instead of hanging.
    let started = Instant::now();
    let out = lan.call(
        1,
        "bench.run",
        &[
            "\"h5\"",
            r#"{"method":"add","args":[1,1],"payload":null,"concurrency":1,"duration_ms":null,"calls":1,"warmup_ms":0,"timeout_ms":1000}"#,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("member `h5` is down"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );

    lan.cable(5, true);
    let plugged = Instant::now();
    for i in 1..=HOSTS {
        wait_until(&format!("h{i} to see everyone up again"), || {
            lan.members(i) == everyone("up")
        });
    }
    println!("healed after {:?}", plugged.elapsed());
    drop(nodes);
}

#[test]
fn two_groups_split_at_bootstrap_merge_when_the_network_heals() {
    const SIX: usize = 6;
    let Some(lan) = Lan::build(SIX) else {
        return;
    };
    lan.split(4);
    // Every node gets the same two seeds, one on each side, and default timings; all start
    // at once.
    let seeds = [
        format!("{}:4000", lan.addr(1)),
        format!("{}:4000", lan.addr(4)),
    ];
    let mut nodes: Vec<NodeProc> = (1..=SIX)
        .map(|i| {
            let listen = format!("{}:4000", lan.addr(i));
            let extra = ["--seed", &seeds[0], "--seed", &seeds[1]];
            NodeProc::spawn_in(lan.host(i), &format!("h{i}"), &listen, &extra)
        })
        .collect();
    for node in &mut nodes {
        node.wait_listening();
    }
    let up = |host: usize| -> Vec<String> {
        let view = lan.members(host);
        view.into_iter()
            .filter(|(_, status)| status == "up")
            .map(|(name, _)| name)
            .collect()
    };
    let side = |range: std::ops::RangeInclusive<usize>| -> Vec<String> {
        range.map(|i| format!("h{i}")).collect()
    };
    for i in 1..=SIX {
        let expected = if i < 4 { side(1..=3) } else { side(4..=6) };
        wait_until(&format!("h{i} to see its own side up"), || {
            up(i) == expected
        });
    }
    lan.trunk(true);
    let healed = Instant::now();
    let everyone = side(1..=SIX);
    let deadline = healed + Duration::from_secs(60);
    for i in 1..=SIX {
        while up(i) != everyone {
            assert!(
                Instant::now() < deadline,
                "h{i} sees {:?} a minute after the heal",
                lan.members(i)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!("one cluster {:?} after the heal", healed.elapsed());
    drop(nodes);
}
