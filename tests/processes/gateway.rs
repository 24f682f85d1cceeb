//! The HTTP gateway with real clients: the Python tutorial's programs (xmlrpc.client, unchanged
//! but for the port), a JSON-RPC client written with urllib, hostile HTTP bodies, /metrics and
//! /health; and meshrpc's Rust client calling the Python tutorial's server.

use crate::support;

use std::process::Stdio;

use meshrpc::remote::{CallError, XmlRpcClient};
use support::{python, NodeProc, PATIENCE};

fn gateway_node() -> NodeProc {
    NodeProc::start("gw", &["--http", "127.0.0.1:0", "--http-max-body", "65536"])
}

fn url(node: &NodeProc) -> String {
    format!(
        "http://{}",
        node.http.as_deref().expect("started with --http")
    )
}

#[test]
fn the_seeds_python_clients_work_unchanged_but_for_the_port() {
    let node = gateway_node();
    // The Python tutorial's first client, then its "two instances" client, as the tutorial prints them.
    let first = python(
        "import sys, xmlrpc.client\nserver = xmlrpc.client.ServerProxy(sys.argv[1])\nresult = server.add(2, 3)\nprint(result)\n",
        &[&url(&node)],
    );
    assert_eq!(first, "5\n");
    let second = python(
        "import sys, xmlrpc.client\nserver = xmlrpc.client.ServerProxy(sys.argv[1])\n\
         result = server.square(5)\nprint(\"The square of 5 is:\", result)\n\
         result = server.cube(3)\nprint(\"The cube of 3 is:\", result)\n",
        &[&format!("{}/RPC2", url(&node))],
    );
    assert_eq!(second, "The square of 5 is: 25\nThe cube of 3 is: 27\n");
}

#[test]
fn xml_rpc_faults_introspection_multicall_and_every_value_type() {
    let node = gateway_node();
    let out = python(
        r#"
import sys, datetime, xmlrpc.client as x
s = x.ServerProxy(sys.argv[1], allow_none=True)
def fault(call):
    try:
        call()
    except x.Fault as f:
        return (f.faultCode, f.faultString)
    raise SystemExit("no fault")
print(fault(lambda: s.nope()))
print(fault(lambda: s.add("two", 3))[0])
print(fault(lambda: s.fail("disk full")))
print(fault(lambda: s.crash())[0])
print(fault(lambda: s.cube(2**21))[0])
assert s.add(1, 1) == 2, "still serving after the faults"
methods = s.system.listMethods()
assert "add" in methods and "system.listMethods" in methods, methods
assert "system.multicall" in methods and "system.methodSignature" in methods, methods
print(repr(s.system.methodHelp("square")))
print(s.system.methodSignature("square"))
print(s.square(2**20))
m = x.MultiCall(s)
m.add(1, 2); m.square(4); m.nope(); m.cube(2)
results = m().results
print(results)
when = datetime.datetime(2023, 2, 13, 10, 30, 0)
sent = [7, -2**31, 2**31 - 1, True, False, "text <&> ünï", 2.5, when, x.Binary(b"hi"), [1, [2, 3]], {"k": {"n": None}}, None]
back = s.mirror(sent)
print(back)
echoed = s.echo(x.Binary(b"hello"))
assert isinstance(echoed, x.Binary) and echoed.data == b"hello", repr(echoed)
assert s.system.methodSignature("echo") == [["base64", "base64"]]
empty = s.echo(x.Binary(b""))
assert isinstance(empty, x.Binary) and empty.data == b"", repr(empty)
"#,
        &[&url(&node)],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "(-32601, 'method `nope` not found')");
    assert_eq!(lines[1], "-32602", "bad arguments");
    assert_eq!(lines[2], "(-32000, '`fail` failed: disk full')");
    assert_eq!(lines[3], "-32603", "a panicking handler");
    assert_eq!(
        lines[4], "-32000",
        "an application error (integer overflow)"
    );
    assert_eq!(
        lines[5],
        r"'square(x: i64) -> i64\n\nx * x; an error when it overflows.'"
    );
    assert_eq!(
        lines[6], "[['int', 'int']]",
        "result type, then each parameter's"
    );
    assert_eq!(
        lines[7], "1099511627776",
        "results beyond 32 bits travel as <i8>"
    );
    assert_eq!(
        lines[8],
        "[[3], [16], {'faultCode': -32601, 'faultString': 'method `nope` not found'}, [8]]"
    );
    // Integers, booleans, strings, doubles, nil, arrays and structs come back as they went;
    // dateTime comes back as its ISO 8601 text and base64 as its bytes.
    assert_eq!(
        lines[9],
        "[7, -2147483648, 2147483647, True, False, 'text <&> ünï', 2.5, '20230213T10:30:00', [104, 105], [1, [2, 3]], {'k': {'n': None}}, None]"
    );
}

const JSON_CLIENT: &str = r#"
import sys, json, urllib.request
url = sys.argv[1]
def post(body, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return r.status, (json.loads(text) if text else None)
"#;

#[test]
fn json_rpc_single_named_notification_batch_and_every_error_code() {
    let node = gateway_node();
    let program = format!(
        "{JSON_CLIENT}{}",
        r#"
print(post({"jsonrpc": "2.0", "method": "add", "params": [2, 3], "id": 1}))
print(post({"jsonrpc": "2.0", "method": "scale", "params": {"value": 2, "factor": 4}, "id": "x"}))
print(post({"jsonrpc": "2.0", "method": "counter.incr", "params": [5]}))
print(post({"jsonrpc": "2.0", "method": "counter.get", "id": 2})[1]["result"])
batch = post([
    {"jsonrpc": "2.0", "method": "square", "params": [3], "id": 1},
    {"jsonrpc": "2.0", "method": "counter.incr", "params": [1]},
    {"jsonrpc": "2.0", "method": "cube", "params": [2], "id": 2},
])
print(batch)
print(post([{"jsonrpc": "2.0", "method": "counter.incr", "params": [1]}]))
codes = [
    post(b"{not json")[1]["error"]["code"],
    post({"jsonrpc": "1.0", "method": "add", "id": 1})[1]["error"]["code"],
    post([])[1]["error"]["code"],
    post({"jsonrpc": "2.0", "method": "nope", "id": 1})[1]["error"]["code"],
    post({"jsonrpc": "2.0", "method": "add", "params": ["x", 1], "id": 1})[1]["error"]["code"],
    post({"jsonrpc": "2.0", "method": "crash", "id": 1})[1]["error"]["code"],
    post({"jsonrpc": "2.0", "method": "fail", "params": ["boom"], "id": 1})[1]["error"]["code"],
]
print(codes)
print(post({"jsonrpc": "2.0", "method": "fail", "params": ["boom"], "id": 9})[1]["error"]["message"])
print(post({"jsonrpc": "2.0", "method": "scale", "params": {"value": 1e308, "factor": 10}, "id": 9})[1]["error"].get("data"))
"#
    );
    let out = python(&program, &[&url(&node)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "(200, {'id': 1, 'jsonrpc': '2.0', 'result': 5})");
    assert_eq!(
        lines[1],
        "(200, {'id': 'x', 'jsonrpc': '2.0', 'result': 8.0})"
    );
    assert_eq!(lines[2], "(204, None)", "a notification gets no body");
    assert_eq!(lines[3], "5", "but it ran");
    assert_eq!(
        lines[4],
        "(200, [{'id': 1, 'jsonrpc': '2.0', 'result': 9}, {'id': 2, 'jsonrpc': '2.0', 'result': 8}])"
    );
    assert_eq!(
        lines[5], "(204, None)",
        "a batch of notifications gets no body"
    );
    assert_eq!(
        lines[6],
        "[-32700, -32600, -32600, -32601, -32602, -32603, -32000]"
    );
    assert_eq!(lines[7], "`fail` failed: boom");
    assert_eq!(
        lines[8], "the product is not a finite number",
        "a registered closure's own error value, in `data`"
    );
}

#[test]
fn bad_http_input_gets_clear_errors_and_the_node_keeps_serving() {
    let node = gateway_node();
    let program = format!(
        "{JSON_CLIENT}{}",
        r#"
import xmlrpc.client, urllib.error
def status(body, content_type):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req) as r:
            return (r.status, r.read().decode().strip()[:80])
    except urllib.error.HTTPError as e:
        return (e.code, e.read().decode().strip())
print(status(b"<methodCall><methodName>add</methodName>", "text/xml"))
print(status(b"hello", "text/plain"))
print(status(b"x" * 70000, "application/json"))
deep_xml = b"<methodCall><methodName>add</methodName><params><param><value>" + b"<array><data><value>" * 200 + b"1" + b"</value></data></array>" * 200 + b"</value></param></params></methodCall>"
print(status(deep_xml, "text/xml"))
print(post(b"[" * 5000 + b"]" * 5000)[1]["error"]["code"])
bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><methodCall><methodName>&a;</methodName></methodCall>'
print(status(bomb, "text/xml"))
print(xmlrpc.client.ServerProxy(url).add(20, 22))
"#
    );
    let out = python(&program, &[&url(&node)]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("(200,") && lines[0].contains("fault"),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].starts_with("(415,") && lines[1].contains("text/xml"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("(413,") && lines[2].contains("65536"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[4], "-32700", "deeply nested JSON is a parse error");
    assert_eq!(lines[6], "42", "still serving");
    // The XML ones are answered as faults (HTTP 200, XML-RPC style); check their text.
    let fault = |body: &str| {
        python(
        &format!("{JSON_CLIENT}\nimport xmlrpc.client\ntry:\n    xmlrpc.client.loads(urllib.request.urlopen(urllib.request.Request(url, data={body}, headers={{'Content-Type': 'text/xml'}})).read())\nexcept xmlrpc.client.Fault as f:\n    print(f.faultCode, f.faultString)\n"),
        &[&url(&node)],
    )
    };
    let malformed = fault("b'<methodCall><methodName>add</methodName>'");
    assert!(malformed.starts_with("-32700 parse error"), "{malformed}");
    let deep = fault("b'<methodCall>' + b'<a>' * 100 + b'</a>' * 100 + b'</methodCall>'");
    assert!(deep.contains("nested deeper"), "{deep}");
    let entity = fault(
        r#"b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><methodCall><methodName>&a;</methodName></methodCall>'"#,
    );
    assert!(entity.contains("DOCTYPE"), "{entity}");
}

#[test]
fn health_and_metrics() {
    let node = gateway_node();
    let program = format!(
        "{JSON_CLIENT}{}",
        r#"
import xmlrpc.client
s = xmlrpc.client.ServerProxy(url)
s.add(1, 2); s.add(3, 4)
try:
    s.nope()
except xmlrpc.client.Fault:
    pass
print(urllib.request.urlopen(url + "/health").read().decode().strip())
print(urllib.request.urlopen(url + "/metrics").read().decode())
"#
    );
    let out = python(&program, &[&url(&node)]);
    assert!(out.starts_with("ok\n"), "{out}");
    for expected in [
        "meshrpc_calls_served_total{method=\"add\",outcome=\"ok\"} 2",
        "meshrpc_calls_served_total{method=\"<unknown>\",outcome=\"method_not_found\"} 1",
        "meshrpc_call_seconds_bucket",
        "meshrpc_members{node=\"gw\",status=\"up\"} 1",
        "meshrpc_membership_stretch{node=\"gw\"} 1",
        "meshrpc_mailbox_depth{node=\"gw\",actor=\"counter\"} 0",
        "meshrpc_client_connections{node=\"gw\"}",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
}

/// The Python tutorial's `square`/`cube` server, as the tutorial writes it but for the port (given on the
/// command line so the test can pick a free one); shared with `examples/python_server.rs`.
const SEED_SERVER: &str = include_str!("../../examples/seed_server.py");

#[tokio::test]
async fn rust_calls_the_seeds_python_server() {
    let dir = std::env::temp_dir().join(format!("meshrpc-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("server.py");
    std::fs::write(&script, SEED_SERVER).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Python tutorial's server");
    let stdout = server.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("server ready in time");
    assert_eq!(ready.unwrap().as_deref(), Some("ready"));

    let client = XmlRpcClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
    assert_eq!(client.call::<_, i64>("square", 5).await.unwrap(), 25);
    assert_eq!(client.call::<_, i64>("cube", (3,)).await.unwrap(), 27);
    match client.call::<_, i64>("nope", ()).await {
        Err(CallError::Fault { code, message, .. }) => {
            assert_eq!(code, 1);
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("expected a fault, got {other:?}"),
    }
    assert!(matches!(
        client.call::<_, String>("square", 5).await,
        Err(CallError::Decode { .. })
    ));
    let _ = server.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
