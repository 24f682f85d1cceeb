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
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{wait_until, NodeProc, BIN};

const FAST: [&str; 4] = ["--heartbeat-ms", "100", "--down-after-ms", "1000"];
const HOSTS: usize = 5;

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each Lan in this process gets its own names and subnet.
static LANS: AtomicUsize = AtomicUsize::new(0);

/// Two bridges in a namespace of their own (the switch) joined by a trunk, and one namespace
/// per host, wired to the first bridge by a veth pair. Every namespace is deleted on drop.
pub(crate) struct Lan {
    switch: String,
    hosts: Vec<String>,
    /// The switch side of each host's cable.
    ports: Vec<String>,
    subnet: String,
    /// This (the test's) namespace's end of a cable into the switch, once plugged.
    root: Option<String>,
}

impl Lan {
    /// `None` (with the reason printed) where namespaces cannot be made.
    pub(crate) fn build(hosts: usize) -> Option<Lan> {
        let tag = (std::process::id() * 4 + LANS.fetch_add(1, Ordering::Relaxed) as u32) % 10_000;
        let switch = format!("mr{tag}sw");
        let probe = ip(&["netns", "add", &switch]);
        if !probe.status.success() {
            eprintln!(
                "SKIPPED: cannot create network namespaces here ({}); this test needs root and iproute2",
                String::from_utf8_lossy(&probe.stderr).trim()
            );
            return None;
        }
        let mut lan = Lan {
            switch,
            hosts: Vec::new(),
            ports: Vec::new(),
            root: None,
            subnet: format!("10.{}.{}", 100 + tag % 100, tag % 200 + 1),
        };
        let sw = lan.switch.clone();
        for br in ["br0", "br1"] {
            ip_ok(&["-n", &sw, "link", "add", br, "type", "bridge"]);
            ip_ok(&["-n", &sw, "link", "set", br, "up"]);
        }
        ip_ok(&[
            "-n", &sw, "link", "add", "t0", "type", "veth", "peer", "name", "t1",
        ]);
        ip_ok(&["-n", &sw, "link", "set", "t0", "master", "br0"]);
        ip_ok(&["-n", &sw, "link", "set", "t1", "master", "br1"]);
        ip_ok(&["-n", &sw, "link", "set", "t0", "up"]);
        ip_ok(&["-n", &sw, "link", "set", "t1", "up"]);
        for i in 1..=hosts {
            let (host, end, port) = (
                format!("mr{tag}h{i}"),
                format!("mr{tag}e{i}"),
                format!("mr{tag}p{i}"),
            );
            ip_ok(&["netns", "add", &host]);
            lan.hosts.push(host.clone());
            ip_ok(&["link", "add", &end, "type", "veth", "peer", "name", &port]);
            ip_ok(&["link", "set", &end, "netns", &host]);
            ip_ok(&["link", "set", &port, "netns", &sw]);
            lan.ports.push(port.clone());
            let addr = format!("{}/24", lan.addr(i));
            ip_ok(&["-n", &host, "addr", "add", &addr, "dev", &end]);
            ip_ok(&["-n", &host, "link", "set", &end, "up"]);
            ip_ok(&["-n", &host, "link", "set", "lo", "up"]);
            ip_ok(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &sw, "link", "set", &port, "up"]);
        }
        Some(lan)
    }

    pub(crate) fn addr(&self, host: usize) -> String {
        format!("{}.{host}", self.subnet)
    }

    /// Plugs the test's own namespace into the first bridge too, at address `.250`, and
    /// returns that address: the test's clients and servers then reach every host directly.
    /// The cable goes when the switch's namespace is deleted.
    pub(crate) fn plug_in_the_test(&mut self) -> String {
        let tag = self.switch.trim_end_matches("sw");
        let (end, port) = (format!("{tag}r"), format!("{tag}rp"));
        ip_ok(&["link", "add", &end, "type", "veth", "peer", "name", &port]);
        self.root = Some(end.clone());
        ip_ok(&["link", "set", &port, "netns", &self.switch]);
        let addr = format!("{}.250", self.subnet);
        ip_ok(&["addr", "add", &format!("{addr}/24"), "dev", &end]);
        ip_ok(&["link", "set", &end, "up"]);
        ip_ok(&["-n", &self.switch, "link", "set", &port, "master", "br0"]);
        ip_ok(&["-n", &self.switch, "link", "set", &port, "up"]);
        addr
    }

    /// The subnet's `/24`, to allow in a server's rules.
    pub(crate) fn network(&self) -> String {
        format!("{}.0/24", self.subnet)
    }

    /// Cuts hosts `a` and `b` off from each other (each drops what it would send the
    /// other), or joins them again; every other path stays.
    pub(crate) fn cut(&self, a: usize, b: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}/32", self.addr(to));
            ip_ok(&["-n", &self.hosts[from - 1], "route", verb, "blackhole", &to]);
        }
    }

    /// The namespace of host `i`.
    pub(crate) fn host(&self, host: usize) -> &str {
        &self.hosts[host - 1]
    }

    /// Pulls host `i`'s cable out of the switch, or puts it back.
    fn cable(&self, host: usize, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip_ok(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &self.ports[host - 1],
            state,
        ]);
    }

    /// Moves hosts `from..` onto the second bridge and unplugs the trunk: two networks that
    /// cannot reach each other.
    fn split(&self, from: usize) {
        for port in &self.ports[from - 1..] {
            ip_ok(&["-n", &self.switch, "link", "set", port, "master", "br1"]);
        }
        self.trunk(false);
    }

    /// Plugs the trunk between the two bridges in, or pulls it out.
    fn trunk(&self, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip_ok(&["-n", &self.switch, "link", "set", "t0", state]);
    }

    /// `meshrpc members --json` run inside host `i`, against its own node.
    fn members(&self, host: usize) -> BTreeMap<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hosts[host - 1], BIN])
            .args(["members", "--json", "--timeout-ms", "2000"])
            .arg(format!("{}:4000", self.addr(host)))
            .env("RUST_LOG", "error")
            .output()
            .expect("run meshrpc members");
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.iter()
            .filter_map(|m| {
                Some((
                    m["name"].as_str()?.to_owned(),
                    m["status"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// `meshrpc call` run inside host `i`, against its own node.
    fn call(&self, host: usize, method: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts[host - 1], BIN])
            .args(["call", "--timeout-ms", "5000"])
            .arg(format!("{}:4000", self.addr(host)))
            .arg(method)
            .args(args)
            .env("RUST_LOG", "error")
            .output()
            .expect("run meshrpc call")
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Some(end) = &self.root {
            let _ = ip(&["link", "del", end]);
        }
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

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
            &lan.hosts[i - 1],
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
            NodeProc::spawn_in(&lan.hosts[i - 1], &format!("h{i}"), &listen, &extra)
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
