//! Virtual actors across real `meshrpc node` processes: five nodes route sixty keys to one
//! activation each, whoever is called; a SIGKILL moves only the dead node's keys; a restart
//! and a healed partition end with every key on exactly one node.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use support::proxy::{Mode, Proxy};
use support::{call, call_ok, members, wait_until, NodeProc, BIN};

const FAST: [&str; 4] = ["--heartbeat-ms", "100", "--down-after-ms", "1000"];

fn start(name: &str, extra: &[&str]) -> NodeProc {
    let mut args = FAST.to_vec();
    args.extend_from_slice(extra);
    NodeProc::start(name, &args)
}

/// `meshrpc actors --json ADDR`: the keys of `vcounter` active on that node.
fn activations(addr: &str) -> BTreeSet<String> {
    let out = Command::new(BIN)
        .args(["actors", "--json", "--timeout-ms", "5000", addr])
        .env("RUST_LOG", "error")
        .output()
        .expect("run meshrpc actors");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    list.iter()
        .filter(|a| a["type"] == "vcounter")
        .filter_map(|a| a["key"].as_str().map(str::to_owned))
        .collect()
}

/// Key → the node holding its activation; fails if a key is active on two nodes.
fn placement(nodes: &[&NodeProc]) -> BTreeMap<String, String> {
    let mut at = BTreeMap::new();
    for node in nodes {
        for key in activations(&node.addr) {
            if let Some(other) = at.insert(key.clone(), node.name.clone()) {
                panic!("{key} is active on {other} and {}", node.name);
            }
        }
    }
    at
}

/// The owner of `key` in `node`'s view (empty if none).
fn owner(node: &NodeProc, key: &str) -> String {
    let out = call_ok(
        &node.addr,
        "system.actors.owner",
        &["\"vcounter\"", &format!("\"{key}\"")],
    );
    serde_json::from_str::<Option<String>>(&out)
        .expect("a name or null")
        .unwrap_or_default()
}

/// Until every node sees `n` members up and all of them place 40 probe keys alike, over
/// all `n` nodes.
fn settled(nodes: &[&NodeProc]) {
    let n = nodes.len();
    wait_until("membership and hosting to settle", || {
        let all_up = nodes.iter().all(|node| {
            let view = members(&node.addr, &[]);
            view.len() >= n && view.values().filter(|s| *s == "up").count() == n
        });
        if !all_up {
            return false;
        }
        let mut owners = BTreeSet::new();
        for k in 0..40 {
            let key = format!("probe-{k}");
            let seen: BTreeSet<String> = nodes.iter().map(|node| owner(node, &key)).collect();
            if seen.len() != 1 {
                return false;
            }
            owners.extend(seen);
        }
        owners.len() == n
    });
}

fn incr(node: &NodeProc, key: &str) -> i64 {
    let out = call(
        &node.addr,
        "incr",
        &["--actor", &format!("vcounter/{key}"), "1"],
    );
    assert!(
        out.status.success(),
        "incr {key} on {}: {}",
        node.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

fn get(node: &NodeProc, key: &str) -> i64 {
    call_ok(&node.addr, "get", &["--actor", &format!("vcounter/{key}")])
        .parse()
        .expect("a count")
}

#[test]
fn five_nodes_one_activation_per_key_and_a_kill_moves_only_its_keys() {
    let a = start("a", &[]);
    let mut others: Vec<NodeProc> = ["b", "c", "d", "e"]
        .iter()
        .map(|name| start(name, &["--seed", &a.addr]))
        .collect();
    {
        let all: Vec<&NodeProc> = std::iter::once(&a).chain(&others).collect();
        settled(&all);
        let keys: Vec<String> = (0..60).map(|k| format!("user-{k}")).collect();
        for (i, key) in keys.iter().enumerate() {
            // Through two different nodes: the second call finds the first's activation.
            assert_eq!(incr(all[i % 5], key), 1, "{key}");
            assert_eq!(incr(all[(i + 1) % 5], key), 2, "{key}");
        }
        let at = placement(&all);
        assert_eq!(at.len(), 60, "every key active once");
        let used: BTreeSet<&String> = at.values().collect();
        assert_eq!(used.len(), 5, "keys spread over every node: {at:?}");
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(get(all[(i + 2) % 5], key), 2, "{key} agrees on its count");
        }
    }
    // SIGKILL c: only c's keys move (and start over: c saved nothing); the others keep
    // their activation and their count.
    let before = {
        let all: Vec<&NodeProc> = std::iter::once(&a).chain(&others).collect();
        placement(&all)
    };
    let c = others.remove(1);
    assert_eq!(c.name, "c");
    c.signal("KILL");
    drop(c);
    wait_until("the survivors to see c down", || {
        std::iter::once(&a)
            .chain(&others)
            .all(|n| members(&n.addr, &[]).get("c").map(String::as_str) == Some("down"))
    });
    let alive: Vec<&NodeProc> = std::iter::once(&a).chain(&others).collect();
    settled(&alive);
    for (key, was) in &before {
        let n = get(alive[0], key);
        if was == "c" {
            assert_eq!(n, 0, "{key} was on c and starts over");
        } else {
            assert_eq!(n, 2, "{key} kept its state");
        }
    }
    let after = placement(&alive);
    for (key, was) in &before {
        if was != "c" {
            assert_eq!(&after[key], was, "{key} did not move");
        }
    }
    // c comes back (a new run, so new placement): every key ends on exactly one node.
    let c = start("c", &["--seed", &a.addr]);
    let all: Vec<&NodeProc> = std::iter::once(&a).chain(&others).chain([&c]).collect();
    settled(&all);
    for key in before.keys() {
        get(all[0], key);
    }
    wait_until(
        "every key on exactly one node, where placement says",
        || {
            let at = placement(&all);
            at.len() == 60 && at.iter().all(|(key, node)| owner(&a, key) == *node)
        },
    );
}

#[test]
fn a_healed_partition_ends_with_one_activation_per_key() {
    // Each node advertises its own proxy, so everything between them goes through it.
    let (pa, pb) = (Proxy::bind(), Proxy::bind());
    let a = start("a", &["--advertise", &pa.addr]);
    pa.forward_to(&a.addr);
    let b = start("b", &["--advertise", &pb.addr, "--seed", &pa.addr]);
    pb.forward_to(&b.addr);
    settled(&[&a, &b]);
    let keys: Vec<String> = (0..10).map(|k| format!("p{k}")).collect();
    pa.set(Mode::Cut);
    pb.set(Mode::Cut);
    wait_until("each side to see the other down", || {
        members(&a.addr, &[]).get("b").map(String::as_str) == Some("down")
            && members(&b.addr, &[]).get("a").map(String::as_str) == Some("down")
    });
    // Each side owns every key now, and activates those it is called for.
    for key in &keys {
        assert_eq!(incr(&a, key), 1);
        assert_eq!(incr(&b, key), 1);
    }
    assert_eq!(activations(&a.addr).len(), 10);
    assert_eq!(activations(&b.addr).len(), 10, "one activation per side");
    pa.set(Mode::Pass);
    pb.set(Mode::Pass);
    settled(&[&a, &b]);
    wait_until("the non-owner's activations to be handed over", || {
        let (on_a, on_b) = (activations(&a.addr), activations(&b.addr));
        on_a.is_disjoint(&on_b) && on_a.len() + on_b.len() == 10
    });
    for key in &keys {
        let at = if activations(&a.addr).contains(key) {
            "a"
        } else {
            "b"
        };
        assert_eq!(owner(&a, key), at, "{key} stayed with its owner");
    }
}

/// Issue 23's promise with real processes: three nodes share one SQLite file, the owner of a
/// persistent key is SIGKILLed, and the count goes on through another node from its last
/// acknowledged value.
#[test]
fn a_killed_owners_keys_go_on_from_their_last_acknowledged_value() {
    struct Folder(std::path::PathBuf);
    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let dir =
        Folder(std::env::temp_dir().join(format!("meshrpc-state-kill-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&dir.0);
    std::fs::create_dir_all(&dir.0).expect("a temporary folder");
    let state = format!("sqlite:{}", dir.0.join("state.db").display());
    let a = NodeProc::start("a", &["--state", &state]);
    let b = NodeProc::start("b", &["--state", &state, "--seed", &a.addr]);
    let c = NodeProc::start("c", &["--state", &state, "--seed", &a.addr]);
    let nodes = [&a, &b, &c];
    settled(&nodes);
    // A key that b or c owns, so that a survives to call it.
    let key = (0..100)
        .map(|k| format!("user-{k}"))
        .find(|key| owner(&a, key) != "a")
        .expect("a key a does not own");
    for expected in 1..=5 {
        assert_eq!(incr(&a, &key), expected);
    }
    let killed = owner(&a, &key);
    let (victim, survivor) = if killed == "b" { (b, c) } else { (c, b) };
    victim.signal("KILL");
    // The next call waits (within its deadline) for the owner to be found gone, and is then
    // served by the new owner, from the store.
    assert_eq!(incr(&a, &key), 6, "the count went on from its stored value");
    assert_eq!(get(&survivor, &key), 6);
    drop(victim);
}

#[test]
fn a_reminder_fires_on_the_new_owner_after_its_owner_is_killed() {
    let dir = support::Folder::new("reminders-kill");
    let state = format!("sqlite:{}", dir.0.join("state.db").display());
    // Default timings: the bound below holds for what users run.
    let a = NodeProc::start("a", &["--state", &state]);
    let b = NodeProc::start("b", &["--state", &state, "--seed", &a.addr]);
    let c = NodeProc::start("c", &["--state", &state, "--seed", &a.addr]);
    settled(&[&a, &b, &c]);
    let key = (0..100)
        .map(|k| format!("tick-{k}"))
        .find(|key| owner(&a, key) != "a")
        .expect("a key a does not own");
    let period_ms = 300u64;
    call_ok(
        &a.addr,
        "system.reminders.set",
        &[
            "\"vcounter\"",
            &format!("\"{key}\""),
            "\"tick\"",
            &period_ms.to_string(),
        ],
    );
    // `meshrpc reminders` lists it, with the member that fires it.
    let listed = Command::new(BIN)
        .args(["reminders", "--json", &a.addr])
        .env("RUST_LOG", "error")
        .output()
        .expect("run meshrpc reminders");
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&listed.stdout).expect("JSON");
    let killed = owner(&a, &key);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["key"], key.as_str());
    assert_eq!(listed[0]["period_ms"], period_ms);
    assert_eq!(listed[0]["owner"], killed.as_str());
    wait_until("the reminder to fire twice", || get(&a, &key) >= 2);
    let (victim, survivor) = if killed == "b" { (b, c) } else { (c, b) };
    let before = get(&a, &key);
    let killed_at = std::time::Instant::now();
    victim.signal("KILL");
    // How long the cluster takes to find the owner down, and the first fire after that.
    let mut down_after = None;
    wait_until("the reminder to fire on the new owner", || {
        if down_after.is_none()
            && members(&a.addr, &[]).get(&killed).map(String::as_str) == Some("down")
        {
            down_after = Some(killed_at.elapsed());
        }
        get(&survivor, &key) > before + 1
    });
    let fired_after = killed_at.elapsed();
    let detected = down_after.unwrap_or(fired_after);
    let bound =
        std::time::Duration::from_millis(period_ms) + detected + std::time::Duration::from_secs(2);
    eprintln!("reminder: owner found down after {detected:?}, fired again after {fired_after:?}");
    assert!(
        fired_after <= bound,
        "fired {fired_after:?} after the kill; bound {bound:?}"
    );
    // The next owner is either live node: placement ranks all members, and `a` may rank
    // second for this key.
    let new_owner = owner(&a, &key);
    assert_ne!(new_owner, killed, "the killed node still owns the key");
    assert!([a.name.as_str(), survivor.name.as_str()].contains(&new_owner.as_str()));
    drop(victim);
}
