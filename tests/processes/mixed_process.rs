//! A rolling upgrade's mixed cluster with real processes: two nodes of this release and one
//! of the release before — its own binary when `MESHRPC_PREVIOUS_BIN` names one (`.ci/run`
//! builds it with `scripts/previous_release.sh`), else this binary with `--max-protocol 3`,
//! which speaks exactly as that release does. They form one cluster, call each other both
//! ways (`fanout`), route virtual-actor calls across, and clients of this release call and
//! stream to the old node.

use crate::support;

use support::{call_ok, call_with_stdin, members, wait_until, NodeProc};

fn previous(name: &str, seed: &str) -> NodeProc {
    match std::env::var("MESHRPC_PREVIOUS_BIN") {
        Ok(bin) if !bin.is_empty() => {
            eprintln!("the previous release's own binary: {bin}");
            NodeProc::start_bin(&bin, name, &["--seed", seed])
        }
        _ => {
            eprintln!(
                "MESHRPC_PREVIOUS_BIN is not set: the previous release is played by this one \
                 with --max-protocol 3 (scripts/previous_release.sh builds the real one)"
            );
            NodeProc::start(name, &["--seed", seed, "--max-protocol", "3"])
        }
    }
}

#[test]
fn a_node_of_the_previous_release_joins_calls_both_ways_and_streams() {
    let a = NodeProc::start("a", &[]);
    let b = previous("b", &a.addr);
    let c = NodeProc::start("c", &["--seed", &b.addr]);
    let names = ["a", "b", "c"];
    for node in [&a, &b, &c] {
        wait_until(&format!("{} to see three members up", node.name), || {
            let view = members(&node.addr, &[]);
            view.len() == 3
                && names
                    .iter()
                    .all(|n| view.get(*n).map(String::as_str) == Some("up"))
        });
    }
    // Node to node, both ways: the new ones dial the old one and it dials them.
    for node in [&a, &b, &c] {
        let reached: serde_json::Value =
            serde_json::from_str(&call_ok(&node.addr, "fanout", &["\"add\"", "[2, 3]"])).unwrap();
        let others: Vec<_> = names.iter().filter(|n| **n != node.name).collect();
        for other in others {
            assert_eq!(reached[*other], 5, "{} -> {other}: {reached}", node.name);
        }
    }
    // Each link speaks the newest version its ends share.
    let peers: serde_json::Value =
        serde_json::from_str(&call_ok(&a.addr, "system.peers", &[])).unwrap();
    let protocol = |name: &str| {
        (peers.as_array().unwrap().iter())
            .find(|p| p["name"] == name)
            .map(|p| p["protocol"].clone())
    };
    assert_eq!(protocol("b"), Some(serde_json::json!(3)), "{peers}");
    assert_eq!(protocol("c"), Some(serde_json::json!(4)), "{peers}");
    // Virtual actors routed across the two releases: one counter, whoever owns it — once
    // every node knows what every other hosts (members can be `up` before that), they agree
    // on its owner.
    wait_until("the three nodes to agree on the counter's owner", || {
        let owners: Vec<String> = [&a, &b, &c]
            .iter()
            .map(|n| {
                call_ok(
                    &n.addr,
                    "system.actors.owner",
                    &["\"vcounter\"", "\"mixed\""],
                )
            })
            .collect();
        owners[0] != "null" && owners.iter().all(|o| *o == owners[0])
    });
    for (i, node) in [&a, &b, &c, &a].iter().enumerate() {
        let n = call_ok(&node.addr, "vcounter.incr/mixed", &["1"]);
        assert_eq!(n, (i + 1).to_string(), "through {}", node.name);
    }
    // Clients of this release stream from and to the old node.
    assert_eq!(call_ok(&b.addr, "count", &["3"]), "0\n1\n2");
    let (ok, sum, _) = call_with_stdin(&b.addr, "sum", "1 2 3 4");
    assert!(ok);
    assert_eq!(sum.trim(), "10");
}
