//! Streams through the real binary: `meshrpc call` prints each item of a streaming method
//! as a JSON line as it arrives, uploads stdin to client and bidirectional streams, exits
//! non-zero after a mid-stream error; the HTTP gateways say clearly that a method streams.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use support::{call, call_ok, call_with_stdin, python, NodeProc, BIN};

/// A child process killed when dropped (also when the test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_cli_prints_a_stream_as_json_lines_and_uploads_stdin() {
    let node = NodeProc::start("s1", &[]);
    assert_eq!(call_ok(&node.addr, "count", &["5"]), "0\n1\n2\n3\n4");
    assert_eq!(call_ok(&node.addr, "count", &["n=2"]), "0\n1");
    assert_eq!(
        call_ok(&node.addr, "count", &["0"]),
        "",
        "an empty stream ends cleanly"
    );

    let (ok, out, err) = call_with_stdin(&node.addr, "sum", "1 2\n3\n\n40\n");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "46");
    let (ok, out, err) = call_with_stdin(&node.addr, "running_sum", "1\n2\n3\n");
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1\n3\n6");

    // An error mid-stream: the items before it, then the error and a failing exit.
    let (ok, out, err) = call_with_stdin(&node.addr, "running_sum", "9223372036854775807\n1\n");
    assert!(!ok);
    assert_eq!(out.trim(), "9223372036854775807");
    assert!(
        err.contains("error: application:") && err.contains("overflow"),
        "{err}"
    );

    // Stdin that is not JSON is not taken for the end of the upload.
    let (ok, out, err) = call_with_stdin(&node.addr, "sum", "1 two\n");
    assert!(!ok, "{out}");
    assert!(err.contains("not a sequence of JSON values"), "{err}");
    // Bad arguments are refused before anything streams.
    let out = call(&node.addr, "count", &["\"five\""]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad_arguments"));
}

#[test]
fn items_are_printed_as_they_arrive() {
    let node = NodeProc::start("s2", &[]);
    // A stream far too long to finish: its first lines are read while it runs.
    let child = Command::new(BIN)
        .args(["call", &node.addr, "count", "100000000000"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run meshrpc call");
    let mut child = Killed(child);
    let stdout = child.0.stdout.take().expect("stdout");
    let first: Vec<String> = BufReader::new(stdout)
        .lines()
        .take(3)
        .map(|l| l.expect("a line"))
        .collect();
    assert_eq!(first, ["0", "1", "2"]);
    assert!(
        child.0.try_wait().expect("status").is_none(),
        "still streaming"
    );
}

#[test]
fn the_http_gateways_say_that_a_method_streams() {
    let node = NodeProc::start("s3", &["--http", "127.0.0.1:0"]);
    let url = format!("http://{}", node.http.as_deref().expect("http"));
    let program = r#"
import json, sys, urllib.request, xmlrpc.client
url = sys.argv[1]
body = json.dumps({"jsonrpc": "2.0", "method": "count", "params": [3], "id": 1}).encode()
request = urllib.request.Request(url + "/", data=body, headers={"Content-Type": "application/json"})
error = json.load(urllib.request.urlopen(request))["error"]
print(error["code"])
print(error["message"])
try:
    xmlrpc.client.ServerProxy(url + "/RPC2").count(3)
except xmlrpc.client.Fault as fault:
    print(fault.faultString)
"#;
    let out = python(program, &[&url]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "-32007");
    assert!(
        lines[1].contains("`count` streams: open it as a stream"),
        "{out}"
    );
    assert!(lines[2].contains("open it as a stream"), "{out}");
}

#[test]
fn a_virtual_actors_stream_is_read_through_any_node() {
    use support::{members, wait_until};
    let n1 = NodeProc::start("v1", &[]);
    let n2 = NodeProc::start("v2", &["--seed", &n1.addr]);
    let n3 = NodeProc::start("v3", &["--seed", &n1.addr]);
    let nodes = [&n1, &n2, &n3];
    wait_until(
        "every node to see all three and where vcounter/k lives",
        || {
            nodes.iter().all(|n| {
                members(&n.addr, &[])
                    .values()
                    .filter(|s| *s == "up")
                    .count()
                    == 3
            }) && nodes
                .iter()
                .map(|n| call_ok(&n.addr, "system.actors.owner", &["\"vcounter\"", "\"k\""]))
                .collect::<std::collections::BTreeSet<_>>()
                .len()
                == 1
        },
    );
    for _ in 0..3 {
        call_ok(&n1.addr, "--actor", &["vcounter/k", "incr", "1"]);
    }
    // The owner streams it; the others send the CLI there.
    for node in nodes {
        assert_eq!(
            call_ok(&node.addr, "--actor", &["vcounter/k", "upto"]),
            "0\n1\n2\n3",
            "through {}",
            node.name
        );
    }
}
