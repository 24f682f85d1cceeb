//! Multi-process tests: real `meshrpc node` processes driven by `meshrpc call`.

use crate::support;

use std::time::Duration;

use meshrpc::{CallOptions, Client, ErrorKind};
use support::{call, call_ok, wait_until, NodeProc};

#[test]
fn the_seeds_examples_work_through_the_cli() {
    let node = NodeProc::start("a", &[]);
    assert_eq!(call_ok(&node.addr, "add", &["2", "3"]), "5");
    assert_eq!(call_ok(&node.addr, "square", &["5"]), "25");
    assert_eq!(call_ok(&node.addr, "cube", &["3"]), "27");
    assert_eq!(call_ok(&node.addr, "counter.incr", &["4"]), "4");
    assert_eq!(call_ok(&node.addr, "counter.get", &[]), "4");
    let methods = call_ok(&node.addr, "system.listMethods", &[]);
    for name in ["add", "fanout", "counter.incr", "system.whoami"] {
        assert!(
            methods.contains(&format!("\"{name}\"")),
            "{name} missing from {methods}"
        );
    }
    let help = call_ok(&node.addr, "system.methodHelp", &["\"square\""]);
    assert!(help.contains("x * x"), "{help}");
}

#[test]
fn cli_errors_name_their_kind_and_exit_1() {
    let node = NodeProc::start("a", &[]);
    let cases: [(&str, &[&str], &str); 5] = [
        ("nope", &[], "error: method_not_found:"),
        ("add", &["\"x\"", "3"], "error: bad_arguments:"),
        (
            "fail",
            &["\"disk full\""],
            "error: application: `fail` failed: disk full",
        ),
        ("crash", &[], "error: panicked:"),
        (
            "add",
            &["9223372036854775807", "1"],
            "error: application: `add` failed: integer overflow",
        ),
    ];
    for (method, args, expected) in cases {
        let out = call(&node.addr, method, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{method}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{method}: expected `{expected}` in {stderr}"
        );
    }
    // The node kept serving through all of it.
    assert_eq!(call_ok(&node.addr, "add", &["1", "1"]), "2");
    let out = call("127.0.0.1:1", "add", &["1", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: peer_unavailable:"));
}

fn peer_count(addr: &str) -> usize {
    let out = call(addr, "system.peers", &[]);
    if !out.status.success() {
        return 0;
    }
    let peers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    peers.as_array().map_or(0, Vec::len)
}

/// How many members `addr` sees up, itself included.
fn up_count(addr: &str) -> usize {
    support::members(addr, &[])
        .values()
        .filter(|status| *status == "up")
        .count()
}

#[test]
fn three_processes_call_each_other_in_both_directions() {
    let a = NodeProc::start("a", &[]);
    let b = NodeProc::start("b", &["--seed", &a.addr]);
    let c = NodeProc::start("c", &["--seed", &a.addr, "--seed", &b.addr]);
    for node in [&a, &b, &c] {
        wait_until(&format!("{} to see the two others up", node.name), || {
            up_count(&node.addr) == 3
        });
    }
    let from_a: serde_json::Value =
        serde_json::from_str(&call_ok(&a.addr, "fanout", &["\"add\"", "[20, 22]"])).unwrap();
    assert_eq!(from_a, serde_json::json!({"b": 42, "c": 42}));
    let from_c: serde_json::Value =
        serde_json::from_str(&call_ok(&c.addr, "fanout", &["\"system.whoami\"", "[]"])).unwrap();
    assert_eq!(from_c["a"]["name"], "a");
    assert_eq!(from_c["b"]["addr"], b.addr.as_str());
    // Errors travel back per peer.
    let failed: serde_json::Value =
        serde_json::from_str(&call_ok(&b.addr, "fanout", &["\"nope\"", "[]"])).unwrap();
    assert_eq!(failed["a"]["error"]["kind"], "method_not_found");
}

#[test]
fn sigterm_stops_a_node_cleanly_and_its_peers_notice() {
    let a = NodeProc::start("a", &[]);
    let mut b = NodeProc::start("b", &["--seed", &a.addr]);
    wait_until("a to see b", || up_count(&a.addr) == 2);
    // Links open on the first call: make one.
    call_ok(&a.addr, "fanout", &["\"add\"", "[1, 1]"]);
    // (When both nodes dialed at once, the link kept may still be settling.)
    wait_until("a to hold a link to b", || peer_count(&a.addr) == 1);
    b.signal("TERM");
    let status = b.wait_exit();
    assert!(status.success(), "b exited with {status}");
    wait_until("a to drop its link to b", || peer_count(&a.addr) == 0);
    assert_eq!(
        support::members(&a.addr, &[]).get("b").map(String::as_str),
        Some("left")
    );
}

#[test]
fn a_node_killed_mid_call_fails_the_call_with_disconnected() {
    let node = NodeProc::start("victim", &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::connect(&node.addr).await.unwrap();
        // The deadline is far away: the call must end because the link dies, not by timing out.
        let options = CallOptions::timeout(Duration::from_secs(60));
        let pending = client.peer().call_with::<u64>("sleep", 60_000u64, options);
        // `join!` polls the call first, which queues its request; whether or not the node
        // has read it when it dies, the caller must see the link drop, not wait 60 s.
        let kill = async {
            tokio::task::yield_now().await;
            node.signal("KILL");
        };
        let (result, ()) =
            tokio::time::timeout(support::PATIENCE, async { tokio::join!(pending, kill) })
                .await
                .expect("the pending call ended");
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Disconnected);
    });
}

fn bench_json(args: &[&str]) -> serde_json::Value {
    let (ok, report) = bench_json_status(args);
    assert!(ok, "bench failed: {report}");
    report
}

/// `meshrpc bench ARGS --json`: whether it exited 0, and the report it printed.
fn bench_json_status(args: &[&str]) -> (bool, serde_json::Value) {
    let out = std::process::Command::new(support::BIN)
        .arg("bench")
        .args(args)
        .args(["--json", "--timeout-ms", "10000"])
        .env("RUST_LOG", "error")
        .output()
        .expect("run meshrpc bench");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "one JSON object, got: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

#[test]
fn bench_reports_calls_latencies_and_errors_by_kind() {
    let a = NodeProc::start("a", &[]);
    let b = NodeProc::start("b", &["--seed", &a.addr]);
    wait_until("a to see b", || up_count(&a.addr) == 2);
    let report = bench_json(&[
        &a.addr,
        "--calls",
        "300",
        "--concurrency",
        "8",
        "--connections",
        "2",
    ]);
    for field in [
        "calls",
        "secs",
        "calls_per_sec",
        "mb_per_sec",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "mean_us",
        "errors",
    ] {
        assert!(report.get(field).is_some(), "{field} missing from {report}");
    }
    assert_eq!(report["calls"], 300);
    assert!(report["p50_us"].as_u64().unwrap() <= report["max_us"].as_u64().unwrap());
    let echo = bench_json(&[&a.addr, "--calls", "50", "--payload", "4096"]);
    assert_eq!(echo["calls"], 50);
    assert!(echo["mb_per_sec"].as_f64().unwrap() > 0.0);
    let (ok, failing) =
        bench_json_status(&[&a.addr, "--calls", "40", "--method", "nope", "--args", "[]"]);
    assert!(!ok, "a bench whose every call failed exits non-zero");
    assert_eq!(failing["calls"], 0);
    assert_eq!(failing["errors"]["method_not_found"], 40);
    // Node to node: a loads b over their link.
    let remote = bench_json(&["--from", &a.addr, "--to", "b", "--calls", "200"]);
    assert_eq!(remote["calls"], 200);
    drop(b);
}

/// Whether some socket on this machine holds an established TCP connection to `port`.
fn connected_to(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| {
            text.lines().skip(1).any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let remote = fields.get(2).and_then(|r| r.rsplit_once(':'));
                let remote_port = remote.and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                fields.get(3) == Some(&"01") && remote_port == Some(port)
            })
        })
    })
}

#[test]
fn bench_reports_cpu_per_call_and_stops_when_its_target_dies() {
    let mut node = NodeProc::start("target", &[]);
    // The node runs here: both sides' CPU per call.
    let report = bench_json(&[&node.addr, "--calls", "3000", "--concurrency", "16"]);
    let client = report["client_cpu_us_per_call"]
        .as_f64()
        .expect("client CPU");
    let served = report["node_cpu_us_per_call"].as_f64().expect("node CPU");
    assert!(client > 0.0 && served > 0.0, "{report}");
    assert!(report.get("lost_after_secs").is_none(), "{report}");

    // A minute-long run whose target is killed: it stops there, says so and fails.
    let port: u16 = node
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let bench = std::process::Command::new(support::BIN)
        .args(["bench", &node.addr, "--duration", "60", "--json"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meshrpc bench");
    let mut bench = Killed(Some(bench));
    wait_until("the bench to connect", || connected_to(port));
    node.signal("KILL");
    node.wait_exit();
    wait_until("the bench to stop after its target died", || {
        bench.child().try_wait().expect("try_wait").is_some()
    });
    let out = bench
        .0
        .take()
        .expect("the bench")
        .wait_with_output()
        .expect("its output");
    assert!(
        !out.status.success(),
        "a bench whose target died exits non-zero"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("its report");
    let lost = report["lost_after_secs"]
        .as_f64()
        .expect("when the target went");
    assert!(lost < 60.0, "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the target went away"), "{stderr}");
}

/// A child process killed when dropped (also when the test fails) unless taken.
struct Killed(Option<std::process::Child>);

impl Killed {
    fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("a running child")
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
