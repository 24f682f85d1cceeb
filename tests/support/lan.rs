//! A switch and hosts made of network namespaces, for tests that need several machines:
//! each host a namespace with its own address on a bridge, cables that can be pulled, two
//! switches that can be split, routes that cut two hosts apart, and the test's own
//! namespace plugged in when it must reach the hosts itself. Every namespace is deleted on
//! drop. Needs root and iproute2; `Lan::build` says why not and returns `None` without.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::BIN;

pub fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)")
}

pub fn ip_ok(args: &[&str]) {
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
pub struct Lan {
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
    pub fn build(hosts: usize) -> Option<Lan> {
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

    pub fn addr(&self, host: usize) -> String {
        format!("{}.{host}", self.subnet)
    }

    /// Plugs the test's own namespace into the first bridge too, at address `.250`, and
    /// returns that address: the test's clients and servers then reach every host directly.
    /// The cable goes when the switch's namespace is deleted.
    pub fn plug_in_the_test(&mut self) -> String {
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
    pub fn network(&self) -> String {
        format!("{}.0/24", self.subnet)
    }

    /// Cuts hosts `a` and `b` off from each other (each drops what it would send the
    /// other), or joins them again; every other path stays.
    pub fn cut(&self, a: usize, b: usize, cut: bool) {
        let verb = if cut { "add" } else { "del" };
        for (from, to) in [(a, b), (b, a)] {
            let to = format!("{}/32", self.addr(to));
            ip_ok(&["-n", &self.hosts[from - 1], "route", verb, "blackhole", &to]);
        }
    }

    /// The namespace of host `i`.
    pub fn host(&self, host: usize) -> &str {
        &self.hosts[host - 1]
    }

    /// Pulls host `i`'s cable out of the switch, or puts it back.
    pub fn cable(&self, host: usize, plugged: bool) {
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
    pub fn split(&self, from: usize) {
        for port in &self.ports[from - 1..] {
            ip_ok(&["-n", &self.switch, "link", "set", port, "master", "br1"]);
        }
        self.trunk(false);
    }

    /// Plugs the trunk between the two bridges in, or pulls it out.
    pub fn trunk(&self, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip_ok(&["-n", &self.switch, "link", "set", "t0", state]);
    }

    /// `meshrpc members --json` run inside host `i`, against its own node.
    pub fn members(&self, host: usize) -> BTreeMap<String, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.hosts[host - 1], BIN])
            .args(["members", "--json", "--timeout-ms", "2000"])
            .arg(format!("{}:4000", self.addr(host)))
            .env("RUST_LOG", "error")
            .output()
            .expect("run meshrpc members");
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        super::statuses(&list)
    }

    /// `meshrpc call` run inside host `i`, against its own node.
    pub fn call(&self, host: usize, method: &str, args: &[&str]) -> Output {
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
