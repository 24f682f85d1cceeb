//! What a newcomer runs into in the first hour, with the real binary: mistakes refused at
//! start with a clear word, the wrong port recognised at once, named arguments, argument
//! errors in the method's own words over the CLI and both gateways, a bench that fails when
//! its calls do, and logs that read well.

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{call, call_ok, python, wait_until, NodeProc, BIN};

/// Runs `meshrpc ARGS` to its end; returns (success, stdout, stderr).
fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("MESHRPC_COOKIE")
        .output()
        .expect("run meshrpc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_seed_without_a_port_is_refused_at_start() {
    let (ok, _, stderr) = run(&["node", "--name", "a", "--seed", "127.0.0.1"]);
    assert!(!ok);
    assert!(
        stderr.contains("seed `127.0.0.1` has no port") && stderr.contains("HOST:PORT"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_seed_is_named_in_the_log_at_its_first_failure() {
    let log = std::env::temp_dir().join(format!("meshrpc-seedlog-{}.log", std::process::id()));
    let node = NodeProc::start_with(
        "a",
        "127.0.0.1:0",
        &["--seed", "no-such-host.invalid:4000"],
        std::fs::File::create(&log).unwrap(),
    );
    wait_until("the warning about the seed", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("seed not reachable yet") && text.contains("no-such-host.invalid:4000")
    });
    drop(node);
    let _ = std::fs::remove_file(&log);
}

#[test]
fn listen_takes_a_host_name() {
    let node = NodeProc::start_with("a", "localhost:0", &[], Stdio::inherit());
    assert_eq!(call_ok(&node.addr, "add", &["2", "3"]), "5");
}

#[test]
fn an_os_error_is_said_once() {
    let first = NodeProc::start("a", &[]);
    let (ok, _, stderr) = run(&["node", "--name", "b", "--listen", &first.addr]);
    assert!(!ok);
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr)),
        "{stderr}"
    );
}

#[test]
fn the_tutorials_client_on_the_binary_port_is_told_where_the_gateway_is() {
    // `ServerProxy("http://…")` aimed at the binary port, as the tutorial's reader may.
    let client = r#"
import sys, xmlrpc.client
try:
    xmlrpc.client.ServerProxy("http://" + sys.argv[1]).add(2, 3)
    print("answered")
except xmlrpc.client.ProtocolError as e:
    print(e.errcode, e.errmsg)
"#;
    let node = NodeProc::start("a", &["--http", "127.0.0.1:0"]);
    let http = node.http.clone().unwrap();
    let said = support::python(client, &[&node.addr]);
    assert_eq!(
        said.trim(),
        format!(
            "400 Bad Request: this is a meshrpc binary port; its HTTP gateway is http://{http}/"
        )
    );
    // Through the gateway, the same call works; and the binary port still takes links.
    assert_eq!(support::python(client, &[&http]).trim(), "answered");
    let (ok, stdout, _) = run(&["call", &node.addr, "add", "2", "3"]);
    assert!(ok && stdout.trim() == "5", "{stdout}");
    // A node without a gateway says so.
    let bare = NodeProc::start("b", &[]);
    let said = support::python(client, &[&bare.addr]);
    assert!(
        said.contains("400") && said.contains("no HTTP gateway (--http)"),
        "{said}"
    );
}

#[test]
fn the_wrong_kind_of_port_is_recognised_before_the_timeout() {
    let node = NodeProc::start("a", &["--http", "127.0.0.1:0"]);
    let http = node.http.clone().unwrap();
    let started = Instant::now();
    let (ok, _, stderr) = run(&["call", "--timeout-ms", "20000", &http, "add", "1", "2"]);
    assert!(!ok);
    assert!(
        stderr.contains(&format!("{http} answered HTTP")),
        "{stderr}"
    );
    assert!(stderr.contains("--http port"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the 20 s timeout instead of recognising HTTP"
    );
    // A TLS node, called without TLS.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("first-hour-{}", std::process::id()));
    support::tls_gen(&dir, &["t"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let tls = NodeProc::start(
        "t",
        &[
            "--cookie",
            "c00kie",
            "--tls-cert",
            &file("t.pem"),
            "--tls-key",
            &file("t-key.pem"),
            "--tls-ca",
            &file("ca.pem"),
        ],
    );
    let (ok, _, stderr) = run(&["call", "--timeout-ms", "20000", &tls.addr, "add", "1", "2"]);
    assert!(!ok);
    assert!(
        stderr.contains("answered with TLS") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
    // And TLS on a plain node.
    let (ok, _, stderr) = run(&[
        "call",
        "--tls-cert",
        &file("t.pem"),
        "--tls-key",
        &file("t-key.pem"),
        "--tls-ca",
        &file("ca.pem"),
        &node.addr,
        "add",
        "1",
        "2",
    ]);
    assert!(!ok);
    assert!(stderr.contains("plain text, not TLS"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn arguments_go_by_name_options_go_anywhere_and_errors_speak_of_the_method() {
    let node = NodeProc::start("a", &["--http", "127.0.0.1:0"]);
    assert_eq!(call_ok(&node.addr, "add", &["a=40", "b=2"]), "42");
    let (ok, stdout, stderr) = run(&["call", &node.addr, "square", "5", "--timeout-ms", "5000"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "25");
    let expect = |method: &str, args: &[&str], message: &str| {
        let out = call(&node.addr, method, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(message), "{method} {args:?}: {stderr}");
    };
    expect(
        "add",
        &["1", "2", "3"],
        "`add` takes 2 arguments (a: i64, b: i64), got 3",
    );
    expect(
        "fail",
        &[],
        "`fail` takes 1 argument (message: string), got none",
    );
    expect(
        "add",
        &["99999999999999999999", "1"],
        "argument `a` of `add`: 99999999999999999999 does not fit in i64",
    );
    // The same words through JSON-RPC (named parameters included) and XML-RPC.
    let out = python(
        r#"
import sys, json, urllib.request, xmlrpc.client
url = sys.argv[1]
def rpc(method, params):
    body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read())
print(rpc("add", {"a": 40, "b": 2})["result"])
e = rpc("add", [1, 2, 3])["error"]; print(e["code"], e["message"])
req = urllib.request.Request(url, data=b'{"jsonrpc":"2.0","method":"add","params":[99999999999999999999,1],"id":2}', headers={"Content-Type": "application/json"})
print(json.loads(urllib.request.urlopen(req).read())["error"]["message"])
try:
    xmlrpc.client.ServerProxy(url).fail()
except xmlrpc.client.Fault as f:
    print(f.faultCode, f.faultString)
"#,
        &[&format!("http://{}/", node.http.as_deref().unwrap())],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "42");
    assert_eq!(
        lines[1],
        "-32602 `add` takes 2 arguments (a: i64, b: i64), got 3"
    );
    assert_eq!(
        lines[2],
        "argument `a` of `add`: 99999999999999999999 does not fit in i64"
    );
    assert_eq!(
        lines[3],
        "-32602 `fail` takes 1 argument (message: string), got none"
    );
}

#[test]
fn a_bench_whose_calls_fail_fails_and_says_why() {
    let node = NodeProc::start("a", &[]);
    let (ok, stdout, stderr) = run(&["bench", &node.addr, "--method", "nope", "--calls", "50"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("method_not_found"), "{stderr}");
    let (ok, _, stderr) = run(&["bench", &node.addr, "--duration", "0"]);
    assert!(!ok);
    assert!(
        stderr.contains("--duration must be more than 0"),
        "{stderr}"
    );
    let (ok, stdout, _) = run(&["bench", &node.addr, "--calls", "100"]);
    assert!(ok, "{stdout}");
}

#[test]
fn logs_read_as_words_and_a_node_named_like_its_seed_is_told_what_to_do() {
    let a_log = std::env::temp_dir().join(format!("meshrpc-a-{}.log", std::process::id()));
    let twin_log = std::env::temp_dir().join(format!("meshrpc-twin-{}.log", std::process::id()));
    let a = NodeProc::start_with(
        "a",
        "127.0.0.1:0",
        &[],
        std::fs::File::create(&a_log).unwrap(),
    );
    let b = NodeProc::start("b", &["--seed", &a.addr]);
    let twin = NodeProc::start_with(
        "a",
        "127.0.0.1:0",
        &["--seed", &a.addr],
        std::fs::File::create(&twin_log).unwrap(),
    );
    wait_until("the twin to be told to choose another name", || {
        std::fs::read_to_string(&twin_log)
            .unwrap_or_default()
            .contains("it is itself named `a`: choose another --name for this node")
    });
    wait_until("the seed to log the refusal", || {
        std::fs::read_to_string(&a_log)
            .unwrap_or_default()
            .contains("is named `a` like this node")
    });
    drop((b, twin));
    let a_says = std::fs::read_to_string(&a_log).unwrap_or_default();
    assert!(!a_says.contains("Some("), "{a_says}");
    let _ = (
        std::fs::remove_file(&a_log),
        std::fs::remove_file(&twin_log),
    );
}
