//! Discovery and membership with real `meshrpc node` processes on loopback: joining through
//! one seed, failure detection, graceful leave, restarts, late seeds, multicast, cookies and
//! name conflicts. Timings are shortened with --heartbeat-ms / --down-after-ms.

use crate::support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use support::{call_ok, members, wait_until, NodeProc};

const FAST: [&str; 4] = ["--heartbeat-ms", "100", "--down-after-ms", "1000"];
const DOWN_AFTER: Duration = Duration::from_millis(1000);

fn start(name: &str, seed: Option<&str>) -> NodeProc {
    let mut args: Vec<&str> = FAST.to_vec();
    if let Some(seed) = seed {
        args.extend(["--seed", seed]);
    }
    NodeProc::start(name, &args)
}

fn statuses(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect()
}

fn all_up(names: &[&str]) -> BTreeMap<String, String> {
    statuses(&names.iter().map(|n| (*n, "up")).collect::<Vec<_>>())
}

#[test]
fn five_nodes_each_given_one_seed_form_a_full_mesh() {
    let mut nodes: Vec<NodeProc> = Vec::new();
    for i in 1..=5 {
        let seed = nodes.last().map(|n| n.addr.clone());
        nodes.push(start(&format!("n{i}"), seed.as_deref()));
    }
    let names = ["n1", "n2", "n3", "n4", "n5"];
    for node in &nodes {
        wait_until(&format!("{} to see five members up", node.name), || {
            members(&node.addr, &[]) == all_up(&names)
        });
    }
    for node in &nodes {
        let reached: serde_json::Value =
            serde_json::from_str(&call_ok(&node.addr, "fanout", &["\"system.whoami\"", "[]"]))
                .unwrap();
        let reached = reached.as_object().unwrap();
        assert_eq!(
            reached.len(),
            4,
            "fanout from {} reached {reached:?}",
            node.name
        );
        assert!(
            reached.values().all(|v| v.get("name").is_some()),
            "{reached:?}"
        );
    }
}

#[test]
fn a_killed_node_is_marked_down_and_a_restart_brings_it_back() {
    let a = start("a", None);
    let b = start("b", Some(&a.addr));
    let c = start("c", Some(&a.addr));
    for node in [&a, &b, &c] {
        wait_until("three members up", || {
            members(&node.addr, &[]) == all_up(&["a", "b", "c"])
        });
    }
    c.signal("KILL");
    let killed = Instant::now();
    for node in [&a, &b] {
        wait_until("c to be down", || {
            members(&node.addr, &[]).get("c").map(String::as_str) == Some("down")
        });
    }
    // Suspect at once (the link dropped), down after down_after: well within a few seconds.
    let took = killed.elapsed();
    assert!(
        took < DOWN_AFTER + Duration::from_secs(4),
        "c was marked down after {took:?}"
    );
    drop(c);
    // The same name again, a new run (new id, new port), joining through b.
    let c2 = start("c", Some(&b.addr));
    for node in [&a, &b, &c2] {
        wait_until("c to be up again everywhere", || {
            members(&node.addr, &[]) == all_up(&["a", "b", "c"])
        });
    }
    let whoami: serde_json::Value =
        serde_json::from_str(&call_ok(&a.addr, "fanout", &["\"system.whoami\"", "[]"])).unwrap();
    assert_eq!(
        whoami["c"]["addr"],
        c2.addr.as_str(),
        "calls by name reach the new run"
    );
}

#[test]
fn a_node_stopped_with_sigterm_is_marked_left_at_once() {
    let a = start("a", None);
    let mut b = start("b", Some(&a.addr));
    wait_until("a to see b", || {
        members(&a.addr, &[]) == all_up(&["a", "b"])
    });
    b.signal("TERM");
    let stopped = Instant::now();
    wait_until("b to be left", || {
        members(&a.addr, &[]).get("b").map(String::as_str) == Some("left")
    });
    // `left` comes from b's goodbye, not from a timeout.
    assert!(
        stopped.elapsed() < DOWN_AFTER,
        "b was marked left after {:?}",
        stopped.elapsed()
    );
    assert!(b.wait_exit().success());
}

#[test]
fn a_seed_started_after_the_node_that_points_at_it_still_forms_the_cluster() {
    // Reserve a port, free it, and point b at it before anything listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seed = format!("127.0.0.1:{port}");
    let b = start("b", Some(&seed));
    assert!(
        members(&b.addr, &[]) == all_up(&["b"]),
        "b runs alone while its seed is down"
    );
    let a = NodeProc::start_with("a", &seed, &FAST, Stdio::inherit());
    for node in [&a, &b] {
        wait_until("a and b to find each other", || {
            members(&node.addr, &[]) == all_up(&["a", "b"])
        });
    }
}

#[test]
fn a_wrong_or_missing_cookie_is_refused_before_any_call() {
    let a = NodeProc::start("a", &["--cookie", "s3cret"]);
    assert_eq!(call_ok_with_cookie(&a.addr, "s3cret", "counter.get"), "0");
    for cookie in [Some("wrong"), None] {
        let mut args = vec!["call", "--timeout-ms", "5000"];
        if let Some(cookie) = cookie {
            args.extend(["--cookie", cookie]);
        }
        args.extend([a.addr.as_str(), "counter.incr", "1"]);
        let out = std::process::Command::new(support::BIN)
            .args(&args)
            .env_remove("MESHRPC_COOKIE")
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("error: unauthenticated:") && stderr.contains("cookie"),
            "{cookie:?}: {stderr}"
        );
    }
    assert_eq!(
        call_ok_with_cookie(&a.addr, "s3cret", "counter.get"),
        "0",
        "nothing was called"
    );
    // A node with another cookie never joins.
    let b = NodeProc::start("b", &["--cookie", "other", "--seed", &a.addr]);
    let _c = NodeProc::start("c", &["--cookie", "s3cret", "--seed", &a.addr]);
    wait_until("c to join a", || {
        members_with_cookie(&a.addr, "s3cret") == all_up(&["a", "c"])
    });
    assert_eq!(members_with_cookie(&b.addr, "other"), all_up(&["b"]));
}

fn call_ok_with_cookie(addr: &str, cookie: &str, method: &str) -> String {
    let out = std::process::Command::new(support::BIN)
        .args(["call", "--cookie", cookie, addr, method])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn members_with_cookie(addr: &str, cookie: &str) -> BTreeMap<String, String> {
    members(addr, &["--cookie", cookie])
}

#[test]
fn a_second_live_node_with_a_taken_name_is_refused_on_both_sides_and_exits() {
    let log = std::env::temp_dir().join(format!("meshrpc-dup-{}.log", std::process::id()));
    let a_log = std::fs::File::create(&log).unwrap();
    let a = NodeProc::start_with("a", "127.0.0.1:0", &FAST, a_log);
    let b = start("b", Some(&a.addr));
    wait_until("b to join", || members(&a.addr, &[]) == all_up(&["a", "b"]));
    let dup_log = std::env::temp_dir().join(format!("meshrpc-dup2-{}.log", std::process::id()));
    let mut dup = NodeProc::start_with(
        "b",
        "127.0.0.1:0",
        &fast_with_seed(&a.addr),
        std::fs::File::create(&dup_log).unwrap(),
    );
    // The newcomer says why and exits 1, rather than running alone under a taken name.
    let status = dup.wait_exit();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let a_says = std::fs::read_to_string(&log).unwrap_or_default();
    let dup_says = std::fs::read_to_string(&dup_log).unwrap_or_default();
    assert!(a_says.contains("name `b` is already used"), "{a_says}");
    assert!(
        dup_says.contains("error:") && dup_says.contains("name `b` is already used"),
        "{dup_says}"
    );
    assert!(!dup_says.contains("seed not reachable"), "{dup_says}");
    assert_eq!(
        members(&a.addr, &[]),
        all_up(&["a", "b"]),
        "the first b is still the member"
    );
    drop((dup, b));
    let _ = (std::fs::remove_file(&log), std::fs::remove_file(&dup_log));
}

/// A node that leaves a moment after joining, before the news of its join has reached
/// everyone: every member that heard of it sees it `left`, none `down`. (Members pass a
/// goodbye on only under a cookie, which vouches for it.)
#[test]
fn a_node_that_leaves_right_after_joining_is_left_everywhere() {
    const COOKIE: [&str; 2] = ["--cookie", "c00kie"];
    let with_cookie = |name: &str, seed: Option<&str>| {
        let mut args: Vec<&str> = FAST.iter().chain(COOKIE.iter()).copied().collect();
        if let Some(seed) = seed {
            args.extend(["--seed", seed]);
        }
        NodeProc::start(name, &args)
    };
    let members_of = |node: &NodeProc| members(&node.addr, &COOKIE);
    let names = ["a", "b", "c", "d"];
    let a = with_cookie("a", None);
    let rest: Vec<NodeProc> = names[1..]
        .iter()
        .map(|n| with_cookie(n, Some(&a.addr)))
        .collect();
    for node in std::iter::once(&a).chain(&rest) {
        wait_until("four members up", || members_of(node) == all_up(&names));
    }
    let mut e = with_cookie("e", Some(&a.addr));
    wait_until("a to see e", || {
        members_of(&a).get("e").map(String::as_str) == Some("up")
    });
    e.signal("TERM");
    assert!(e.wait_exit().success());
    // Long enough for a `down` to show where the goodbye did not arrive.
    let settled = Instant::now() + DOWN_AFTER * 4;
    for node in std::iter::once(&a).chain(&rest) {
        wait_until("e to be left or unknown", || {
            let status = members_of(node).get("e").cloned();
            matches!(status.as_deref(), Some("left") | None)
        });
    }
    while Instant::now() < settled {
        for node in std::iter::once(&a).chain(&rest) {
            let status = members_of(node).get("e").cloned();
            assert!(
                matches!(status.as_deref(), Some("left") | None),
                "{} sees e {status:?}",
                node.name
            );
        }
    }
}

fn fast_with_seed(seed: &str) -> Vec<&str> {
    let mut args = FAST.to_vec();
    args.extend(["--seed", seed]);
    args
}

#[test]
fn multicast_discovery_finds_three_nodes_without_seeds() {
    // A group and port of this test's own, on loopback only.
    let port = 40000 + (std::process::id() % 20000) as u16;
    let group = format!("239.255.42.{}:{port}", std::process::id() % 250 + 1);
    if !multicast_works(&group) {
        eprintln!("SKIPPED multicast_discovery_finds_three_nodes_without_seeds: this machine has no multicast route on loopback");
        return;
    }
    let args = [
        "--discover",
        "multicast",
        "--multicast-group",
        &group,
        "--multicast-if",
        "127.0.0.1",
        "--cluster",
        "mtest",
    ];
    let mut all = FAST.to_vec();
    all.extend(args);
    let nodes: Vec<NodeProc> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| NodeProc::start(n, &all))
        .collect();
    // A node of another cluster on the same group is ignored.
    let mut other = all.clone();
    let last = other.len() - 1;
    other[last] = "elsewhere";
    let stranger = NodeProc::start("x", &other);
    for node in &nodes {
        wait_until("three members up", || {
            members(&node.addr, &[]) == all_up(&["m1", "m2", "m3"])
        });
    }
    assert_eq!(members(&stranger.addr, &[]), all_up(&["x"]));
}

/// Sends one datagram to the group on loopback and checks it comes back.
fn multicast_works(group: &str) -> bool {
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    let Ok(group) = group.parse::<SocketAddrV4>() else {
        return false;
    };
    let Ok(rx) = UdpSocket::bind(("0.0.0.0", 0)) else {
        return false;
    };
    let port = rx.local_addr().map(|a| a.port()).unwrap_or(0);
    if rx
        .join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)
        .is_err()
    {
        return false;
    }
    let _ = rx.set_read_timeout(Some(Duration::from_secs(1)));
    let Ok(tx) = UdpSocket::bind(("127.0.0.1", 0)) else {
        return false;
    };
    let _ = tx.set_multicast_loop_v4(true);
    if tx
        .send_to(b"probe", SocketAddrV4::new(*group.ip(), port))
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    rx.recv_from(&mut buf).is_ok()
}

/// Every member's id as `meshrpc members --json` prints it (public to any client).
fn member_ids(addr: &str) -> BTreeMap<String, u64> {
    (support::members_json(addr, &[]).iter())
        .filter_map(|m| {
            let id = u64::from_str_radix(m["id"].as_str()?, 16).ok()?;
            Some((m["name"].as_str()?.to_owned(), id))
        })
        .collect()
}

#[test]
fn without_a_cookie_a_goodbye_counts_only_from_the_members_own_address() {
    use meshrpc::wire::swim::{encode_datagram, Datagram, SwimId};
    use meshrpc::wire::NodeId;
    let a = start("a", None);
    let b = start("b", Some(&a.addr));
    wait_until("a to see b", || {
        members(&a.addr, &[]) == all_up(&["a", "b"])
    });
    // A stranger forges b's goodbye: b's id is public, its address too.
    let forged = SwimId {
        addr: b.addr.parse().unwrap(),
        id: NodeId(member_ids(&a.addr)["b"]),
        name: "b".into(),
        incarnation: 0,
        bump: 0,
    };
    let datagram = encode_datagram(&Datagram::Goodbye(forged)).unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        stranger.send_to(&datagram, &a.addr).unwrap();
    }
    // a keeps b up (a forged goodbye used to make it `left` at once, for minutes).
    let watch_until = Instant::now() + DOWN_AFTER;
    while Instant::now() < watch_until {
        assert_eq!(members(&a.addr, &[]), all_up(&["a", "b"]), "b stays up");
    }
    drop(b);
}

/// A membership datagram announcing `src` to the node at `to`.
fn announce(src: &meshrpc::wire::swim::SwimId, to: &str) -> Vec<u8> {
    use foca::Codec;
    use meshrpc::wire::swim::{encode_datagram, Datagram, SwimCodec, SwimId};
    let header = foca::Header {
        src: src.clone(),
        src_incarnation: 0,
        dst: SwimId::at(to.parse().unwrap()),
        message: foca::Message::Announce,
    };
    let mut payload = Vec::new();
    SwimCodec.encode_header(&header, &mut payload).unwrap();
    encode_datagram(&Datagram::Swim(&payload)).unwrap().to_vec()
}

/// Row 8 of issue 21: 5000 forged announces (no cookie) made ~4 930 fake `up` members on
/// every node, and 100 of them made nodes send 45 times the attacker's bytes to a victim's
/// address. Now a stranger must be at the address it claims.
#[test]
fn without_a_cookie_a_stranger_cannot_forge_members_or_aim_replies_at_a_victim() {
    use meshrpc::wire::swim::SwimId;
    use meshrpc::wire::NodeId;
    let a = start("a", None);
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let victim_addr = victim.local_addr().unwrap();
    for i in 0..200u64 {
        // Half claim the victim's address, half addresses nobody listens on.
        let addr = if i % 2 == 0 {
            victim_addr
        } else {
            format!("127.0.0.1:{}", 1 + i).parse().unwrap()
        };
        let forged = SwimId {
            addr,
            id: NodeId(0xfa4e_0000 + i),
            name: format!("fake-{i}"),
            incarnation: 1,
            bump: 0,
        };
        stranger
            .send_to(&announce(&forged, &a.addr), &a.addr)
            .unwrap();
    }
    // Then one announce from where the stranger really is: the node answers it, after
    // every forged one (they are handled in order).
    let honest = SwimId {
        addr: stranger.local_addr().unwrap(),
        id: NodeId(0x5eed),
        name: "stranger".into(),
        incarnation: 1,
        bump: 0,
    };
    stranger
        .send_to(&announce(&honest, &a.addr), &a.addr)
        .unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 2048];
    stranger
        .recv_from(&mut buf)
        .expect("the node answers a stranger at its own address");
    victim.set_nonblocking(true).unwrap();
    let aimed = victim.recv_from(&mut buf);
    assert!(aimed.is_err(), "the node sent {:?} to the victim", aimed);
    let fakes = members(&a.addr, &[])
        .into_keys()
        .filter(|name| name.starts_with("fake-"))
        .count();
    assert_eq!(fakes, 0, "forged members joined a's view");
}

/// Timings short enough that a gone run is forgotten (150 × down_after) within seconds.
const FORGETFUL: [&str; 4] = ["--heartbeat-ms", "25", "--down-after-ms", "100"];
const GHOST_COOKIE: &str = "ghost-cookie";

fn forgetful(name: &str, extra: &[&str]) -> NodeProc {
    let mut args: Vec<&str> = FORGETFUL.to_vec();
    args.extend(["--cookie", GHOST_COOKIE]);
    args.extend(extra);
    NodeProc::start(name, &args)
}

fn status_of(addr: &str, name: &str) -> Option<String> {
    members(addr, &["--cookie", GHOST_COOKIE]).remove(name)
}

/// Waits until `observer` has forgotten `name` (foca keeps a down member 150 × down_after).
fn forgotten(observer: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while status_of(observer, name).is_some() {
        assert!(Instant::now() < deadline, "{name} never forgotten");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Row 10 of issue 21: sealed datagrams recorded and replayed after a dead node was
/// forgotten brought it back `up` for about two seconds.
#[test]
fn replayed_datagrams_of_a_forgotten_run_bring_nothing_back() {
    use support::proxy::Proxy;
    // b is reached through a proxy that records what a sends it.
    let pb = Proxy::bind();
    let b = forgetful("b", &["--advertise", &pb.addr]);
    pb.forward_to(&b.addr);
    let a = forgetful("a", &["--seed", &pb.addr]);
    wait_until("b to see a", || {
        status_of(&b.addr, "a").as_deref() == Some("up")
    });
    a.signal("KILL");
    wait_until("b to see a down", || {
        status_of(&b.addr, "a").as_deref() == Some("down")
    });
    forgotten(&b.addr, "a");
    let recorded = pb.datagrams();
    assert!(!recorded.is_empty(), "the proxy recorded a's datagrams");
    let replayer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for datagram in &recorded {
        replayer.send_to(datagram, &b.addr).unwrap();
    }
    // The ghost used to show `up` within milliseconds, for about two seconds.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert_eq!(status_of(&b.addr, "a"), None, "a replay brought a back");
    }
    drop(a);
}

/// The other side of remembering gone runs: a node the cluster declared down while it
/// lived, cut off for longer than down members are remembered, is told so when it speaks
/// again, renews its identity and joins.
#[test]
fn a_node_cut_off_until_forgotten_rejoins_when_the_cut_heals() {
    use support::proxy::{Mode, Proxy};
    let (pa, pb) = (Proxy::bind(), Proxy::bind());
    let a = forgetful("a", &["--advertise", &pa.addr]);
    pa.forward_to(&a.addr);
    let b = forgetful("b", &["--advertise", &pb.addr, "--seed", &pa.addr]);
    pb.forward_to(&b.addr);
    wait_until("a and b to see each other", || {
        status_of(&a.addr, "b").as_deref() == Some("up")
            && status_of(&b.addr, "a").as_deref() == Some("up")
    });
    pa.set(Mode::Cut);
    pb.set(Mode::Cut);
    forgotten(&b.addr, "a");
    forgotten(&a.addr, "b");
    pa.set(Mode::Pass);
    pb.set(Mode::Pass);
    wait_until("a and b to see each other again", || {
        status_of(&a.addr, "b").as_deref() == Some("up")
            && status_of(&b.addr, "a").as_deref() == Some("up")
    });
}
