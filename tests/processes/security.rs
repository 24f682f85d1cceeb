//! Who gets in: the gateway token (Basic and Bearer, nothing dispatched without it), the
//! start-time refusal of an open gateway on a protected node, HTTPS with the node's
//! certificate, the method allowlist, node-only methods, bounded HTTP and handshakes, and
//! `tls-gen` keeping its CA. Each of these was a hole before it was closed here.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use meshrpc::{CallOptions, Client, ErrorKind, Node, NodeConfig};
use support::{call, python, NodeProc, BIN, PATIENCE};

/// A Python JSON-RPC call with an optional `Authorization` header; prints the HTTP status,
/// then the body.
const JSON_CALL: &str = r#"
import sys, json, urllib.request, urllib.error
url, method, params, auth = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params, "id": 1}).encode()
headers = {"Content-Type": "application/json"}
if auth:
    headers["Authorization"] = auth
try:
    r = urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers))
    print(r.status); print(r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code); print(e.headers.get("WWW-Authenticate")); print(e.read().decode())
"#;

fn json_call(http: &str, method: &str, params: &str, auth: &str) -> (u16, String) {
    let out = python(
        JSON_CALL,
        &[&format!("http://{http}/"), method, params, auth],
    );
    let (status, rest) = out.split_once('\n').expect("status line");
    (status.trim().parse().expect("a status"), rest.to_owned())
}

/// A scratch directory under the target dir, fresh for `name`.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("security-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn the_gateway_asks_for_its_token_and_runs_nothing_without_it() {
    let node = NodeProc::start(
        "gw",
        &[
            "--cookie",
            "c00kie",
            "--http",
            "127.0.0.1:0",
            "--http-token",
            "t0ken-s3cret-2026",
        ],
    );
    let http = node.http.clone().expect("http");
    for auth in ["", "Bearer wrong", "Basic bWVzaHJwYzp3cm9uZw=="] {
        let (status, rest) = json_call(&http, "counter.incr", "[1]", auth);
        assert_eq!(status, 401, "{auth:?}: {rest}");
        assert!(rest.starts_with("Basic realm=\"meshrpc\""), "{rest}");
    }
    // Nothing ran: the counter is still 0, read with the token as a Bearer token.
    let (status, body) = json_call(&http, "counter.get", "[]", "Bearer t0ken-s3cret-2026");
    assert_eq!(status, 200);
    assert!(body.contains("\"result\":0"), "{body}");
    // And as the password of Basic authentication, as xmlrpc.client sends it from the URL.
    let sum = python(
        "import sys, xmlrpc.client\nprint(xmlrpc.client.ServerProxy(sys.argv[1]).add(2, 3))\n",
        &[&format!("http://meshrpc:t0ken-s3cret-2026@{http}/")],
    );
    assert_eq!(sum.trim(), "5");
    // Probes need no credentials; metrics do.
    let probe = python(
        "import sys, urllib.request, urllib.error\nfor p in ('/health', '/metrics'):\n    try: print(urllib.request.urlopen(sys.argv[1] + p).status)\n    except urllib.error.HTTPError as e: print(e.code)\n",
        &[&format!("http://{http}")],
    );
    assert_eq!(probe, "200\n401\n");
}

#[test]
fn a_protected_node_will_not_open_its_gateway_to_anyone_unless_told() {
    let out = Command::new(BIN)
        .args([
            "node",
            "--name",
            "n",
            "--cookie",
            "c",
            "--http",
            "127.0.0.1:0",
        ])
        .env_remove("MESHRPC_HTTP_TOKEN")
        .output()
        .expect("run meshrpc node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--http-token") && stderr.contains("--http-open"),
        "{stderr}"
    );
    // The explicit choice of a public gateway starts, and serves without credentials.
    let node = NodeProc::start(
        "open",
        &["--cookie", "c", "--http", "127.0.0.1:0", "--http-open"],
    );
    let (status, body) = json_call(node.http.as_deref().unwrap(), "add", "[1, 2]", "");
    assert_eq!(
        (status, body.contains("\"result\":3")),
        (200, true),
        "{body}"
    );
}

#[test]
fn https_serves_the_gateway_with_the_nodes_certificate() {
    let dir = scratch("https");
    support::tls_gen(&dir, &["a"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let node = NodeProc::start(
        "a",
        &[
            "--cookie",
            "c00kie",
            "--tls-cert",
            &file("a.pem"),
            "--tls-key",
            &file("a-key.pem"),
            "--tls-ca",
            &file("ca.pem"),
            "--http",
            "127.0.0.1:0",
            "--http-tls",
            "--http-token",
            "t0ken-s3cret-2026",
        ],
    );
    let http = node.http.clone().unwrap();
    let out = python(
        "import sys, ssl, xmlrpc.client\nctx = ssl.create_default_context(cafile=sys.argv[2])\nprint(xmlrpc.client.ServerProxy(sys.argv[1], context=ctx).add(40, 2))\n",
        &[&format!("https://meshrpc:t0ken-s3cret-2026@{http}/"), &file("ca.pem")],
    );
    assert_eq!(out.trim(), "42");
    // Plain HTTP on the HTTPS port gets no answer worth the name.
    let plain = python(
        "import sys, urllib.request\ntry:\n    urllib.request.urlopen(sys.argv[1], timeout=5); print('answered')\nexcept Exception as e: print('refused')\n",
        &[&format!("http://{http}/health")],
    );
    assert_eq!(plain.trim(), "refused");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_allowlist_limits_what_http_may_call() {
    let node = NodeProc::start(
        "gw",
        &[
            "--http",
            "127.0.0.1:0",
            "--http-methods",
            "add",
            "--http-methods",
            "counter.*",
        ],
    );
    let http = node.http.clone().unwrap();
    let (_, ok) = json_call(&http, "add", "[2, 3]", "");
    assert!(ok.contains("\"result\":5"), "{ok}");
    let (_, ok) = json_call(&http, "counter.get", "[]", "");
    assert!(ok.contains("\"result\":0"), "{ok}");
    let (_, refused) = json_call(&http, "square", "[3]", "");
    assert!(
        refused.contains("-32004") && refused.contains("forbidden"),
        "{refused}"
    );
    let (_, names) = json_call(&http, "system.listMethods", "[]", "");
    assert!(
        names.contains("\"add\"") && names.contains("counter.incr"),
        "{names}"
    );
    assert!(names.contains("system.listMethods"), "{names}");
    assert!(
        !names.contains("square") && !names.contains("fanout"),
        "{names}"
    );
}

#[test]
fn node_only_methods_are_refused_to_clients_and_the_gateway_with_or_without_a_cookie() {
    for cookie in [None, Some("c00kie")] {
        let mut extra = vec!["--http", "127.0.0.1:0"];
        if let Some(cookie) = cookie {
            extra.extend(["--cookie", cookie, "--http-token", "a-gateway-token-1"]);
        }
        let node = NodeProc::start("n", &extra);
        let mut args = vec!["[]"];
        let out = match cookie {
            Some(cookie) => Command::new(BIN)
                .args(["call", "--cookie", cookie, &node.addr, "system.gossip"])
                .args(&args)
                .output()
                .expect("run meshrpc call"),
            None => call(&node.addr, "system.gossip", &args),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cookie:?}");
        assert!(stderr.contains("error: forbidden:"), "{cookie:?}: {stderr}");
        let auth = if cookie.is_some() {
            "Bearer a-gateway-token-1"
        } else {
            ""
        };
        args.clear();
        let (_, body) = json_call(node.http.as_deref().unwrap(), "system.gossip", "[[]]", auth);
        assert!(body.contains("-32004"), "{cookie:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_rumor_makes_the_node_dial_nothing() {
    let config = NodeConfig {
        name: "victim".into(),
        heartbeat: Duration::from_millis(50),
        down_after: Duration::from_millis(500),
        ..NodeConfig::default()
    };
    let node = Node::start(config).await.unwrap();
    // Where the rumor points: a listener of ours that must never see the node.
    let bait = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rumor = serde_json::json!([[{
        "name": "evil", "id": 7, "incarnation": 1, "addr": bait.local_addr().unwrap().to_string()
    }]]);
    let client = Client::connect(&node.addr().to_string()).await.unwrap();
    let err = client
        .peer()
        .call_json("system.gossip", &rumor, CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    // As a cast too (what nodes send): refused without a word. Then a call on the same link
    // is answered, so the cast has been dispatched by then.
    client.peer().cast("system.gossip", ()).unwrap();
    let _: Vec<String> = client.peer().call("system.listMethods", ()).await.unwrap();
    // Before node-only methods, the dial came within a millisecond; give it ten gossip
    // rounds.
    let dialed = tokio::time::timeout(Duration::from_millis(500), bait.accept()).await;
    assert!(
        dialed.is_err(),
        "the node dialed the address a stranger named"
    );
    client.close().await;
    node.shutdown().await;
}

/// Opens `n` connections to `addr` and writes `prefix` on each.
fn open_many(addr: &str, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(prefix).expect("write");
            s
        })
        .collect()
}

/// True once the peer has closed `s` (EOF or reset); false if it is still open after
/// `PATIENCE`.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    use std::io::ErrorKind::{TimedOut, WouldBlock};
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Err(e) if matches!(e.kind(), WouldBlock | TimedOut) => return false,
            Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

/// A whole HTTP request on a fresh connection; returns the response's status line.
fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.lines().next().unwrap_or("").to_owned()
}

#[test]
fn stalled_http_requests_are_closed_while_real_callers_are_served() {
    let _ = rlimit::increase_nofile_limit(16_384);
    let node = NodeProc::start(
        "gw",
        &["--http", "127.0.0.1:0", "--http-header-timeout-ms", "2000"],
    );
    let http = node.http.clone().unwrap();
    let started = Instant::now();
    let mut stalled = open_many(&http, 3000, b"POST / HTTP/1.1\r\nHost: x\r\nContent-");
    assert_eq!(http_get(&http, "/health"), "HTTP/1.1 200 OK");
    for s in &mut stalled {
        assert!(closed_by_peer(s), "a stalled request was left open");
    }
    assert!(started.elapsed() < PATIENCE);
    assert_eq!(http_get(&http, "/health"), "HTTP/1.1 200 OK");
}

#[test]
fn http_connections_beyond_the_cap_are_closed_at_once() {
    let node = NodeProc::start(
        "gw",
        &["--http", "127.0.0.1:0", "--http-max-connections", "20"],
    );
    let http = node.http.clone().unwrap();
    let held = open_many(&http, 20, b"");
    // Accepted and closed at once: the cap bounds descriptors, it does not queue.
    let mut over = TcpStream::connect(&http).unwrap();
    assert!(closed_by_peer(&mut over));
    drop(held);
    // Slots free again once the held connections are gone.
    support::wait_until("a free HTTP slot", || {
        http_get(&http, "/health") == "HTTP/1.1 200 OK"
    });
}

#[test]
fn silent_sockets_on_the_binary_port_are_bounded_and_do_not_keep_callers_out() {
    let _ = rlimit::increase_nofile_limit(16_384);
    // Thousands of silent sockets under the default cap: a real caller still gets in.
    let node = NodeProc::start("n", &[]);
    let silent = open_many(&node.addr, 4000, b"");
    assert_eq!(support::call_ok(&node.addr, "add", &["2", "3"]), "5");
    drop(silent);
    // With a small cap, the one over it is closed without a greeting.
    let capped = NodeProc::start("capped", &["--max-handshakes", "50"]);
    let mut held = open_many(&capped.addr, 50, b"");
    for s in &mut held {
        // Each was greeted: it holds a handshake slot.
        let mut len = [0u8; 4];
        s.read_exact(&mut len).expect("a greeting");
    }
    let mut over = TcpStream::connect(&capped.addr).unwrap();
    over.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(over.read(&mut buf), Ok(0) | Err(_)),
        "closed, not greeted"
    );
    drop(held);
    support::wait_until("a free handshake slot", || {
        call(&capped.addr, "add", &["1", "1"]).status.success()
    });
}

#[test]
fn tls_gen_keeps_its_ca_so_older_certificates_still_verify_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch("tlsgen");
    let gen = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("tls-gen")
            .arg(&dir)
            .args(args)
            .output()
            .expect("run tls-gen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    gen(&["a"]);
    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    gen(&["client"]);
    assert_eq!(
        std::fs::read(dir.join("ca.pem")).unwrap(),
        ca,
        "the CA was kept"
    );
    for key in ["ca-key.pem", "a-key.pem", "client-key.pem"] {
        let mode = std::fs::metadata(dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    // The certificate made first and the one made second trust each other.
    let file = |f: &str| dir.join(f).display().to_string();
    let node = NodeProc::start(
        "a",
        &[
            "--cookie",
            "c00kie",
            "--tls-cert",
            &file("a.pem"),
            "--tls-key",
            &file("a-key.pem"),
            "--tls-ca",
            &file("ca.pem"),
        ],
    );
    let out = Command::new(BIN)
        .args([
            "call",
            "--cookie",
            "c00kie",
            "--tls-cert",
            &file("client.pem"),
            "--tls-key",
            &file("client-key.pem"),
        ])
        .args(["--tls-ca", &file("ca.pem"), &node.addr, "add", "2", "3"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --force replaces the CA, and says what that breaks.
    let warning = gen(&["b", "--force"]);
    assert!(warning.contains("no longer verify"), "{warning}");
    assert_ne!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A raw HTTP request on `s`: the status line of the answer.
fn status_line(s: &mut TcpStream) -> String {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn a_body_trickled_byte_by_byte_gets_408_within_the_timeout() {
    let node = NodeProc::start(
        "gw",
        &["--http", "127.0.0.1:0", "--http-header-timeout-ms", "1000"],
    );
    let http = node.http.clone().unwrap();
    let mut s = TcpStream::connect(&http).unwrap();
    let started = Instant::now();
    write!(
        s,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    // One more byte now and then, for longer than the timeout: the headers were on time,
    // the body is not.
    let trickle = std::thread::spawn({
        let mut s = s.try_clone().unwrap();
        move || {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b" ").is_err() {
                    break;
                }
            }
        }
    });
    assert_eq!(status_line(&mut s), "HTTP/1.1 408 Request Timeout");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let _ = trickle.join();
}

#[test]
fn a_short_token_is_refused_at_start() {
    let out = Command::new(BIN)
        .args([
            "node",
            "--name",
            "a",
            "--http",
            "127.0.0.1:0",
            "--http-token",
            "a",
        ])
        .env_remove("MESHRPC_HTTP_TOKEN")
        .output()
        .expect("run meshrpc node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
}

#[test]
fn wrong_tokens_from_one_address_are_held_off_with_429() {
    const TOKEN: &str = "the-right-token-0123";
    let node = NodeProc::start("gw", &["--http", "127.0.0.1:0", "--http-token", TOKEN]);
    let http = node.http.clone().unwrap();
    // A guesser: after a handful of wrong tokens, 429 with Retry-After, its guesses unchecked.
    let program = r#"
import sys, json, urllib.request, urllib.error
url, n = sys.argv[1], int(sys.argv[2])
body = json.dumps({"jsonrpc": "2.0", "method": "add", "params": [1, 1], "id": 1}).encode()
codes = {}
for i in range(n):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", "Authorization": "Bearer guess-%d" % i})
    try:
        code = urllib.request.urlopen(req).status
    except urllib.error.HTTPError as e:
        code = e.code
        if code == 429:
            assert e.headers.get("Retry-After") == "1", e.headers
    codes[code] = codes.get(code, 0) + 1
print(json.dumps(codes))
"#;
    let codes: serde_json::Value =
        serde_json::from_str(python(program, &[&format!("http://{http}/"), "200"]).trim()).unwrap();
    let tried = codes["401"].as_u64().unwrap_or(0);
    let held_off = codes["429"].as_u64().unwrap_or(0);
    assert_eq!(tried + held_off, 200, "{codes}");
    assert!(held_off > 0, "{codes}");
    // Ten candidates a second at most (the guesses took more than a second if more got in).
    assert!(tried <= 60, "{codes}");
    // The right token works again once the window is over.
    support::wait_until("the token to be accepted", || {
        json_call(&http, "add", "[2, 3]", &format!("Bearer {TOKEN}")).0 == 200
    });
}

#[test]
fn a_json_rpc_batch_or_multicall_of_more_than_1000_calls_is_refused_whole() {
    let node = NodeProc::start("gw", &["--http", "127.0.0.1:0"]);
    let http = node.http.clone().unwrap();
    let program = r#"
import sys, json, urllib.request, xmlrpc.client
url = sys.argv[1]
batch = [{"jsonrpc": "2.0", "method": "add", "params": [1, 1], "id": i} for i in range(1001)]
req = urllib.request.Request(url, data=json.dumps(batch).encode(), headers={"Content-Type": "application/json"})
print(json.dumps(json.loads(urllib.request.urlopen(req).read())))
proxy = xmlrpc.client.ServerProxy(url)
try:
    proxy.system.multicall([{"methodName": "add", "params": [1, 1]}] * 1001)
    print("multicall ran")
except xmlrpc.client.Fault as f:
    print(f.faultString)
"#;
    let out = python(program, &[&format!("http://{http}/")]);
    let (batch, multicall) = out.trim().split_once('\n').unwrap();
    let batch: serde_json::Value = serde_json::from_str(batch).unwrap();
    assert!(
        batch["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 1000"),
        "{batch}"
    );
    assert!(multicall.contains("at most 1000"), "{multicall}");
}

#[test]
fn a_node_with_tls_and_no_cookie_refuses_to_start() {
    // Membership datagrams are sealed by the cookie alone; TLS does not cover them.
    let dir = scratch("tls-no-cookie");
    support::tls_gen(&dir, &["a"]);
    let file = |f: &str| dir.join(f).display().to_string();
    let out = Command::new(BIN)
        .args(["node", "--name", "a", "--listen", "127.0.0.1:0"])
        .args([
            "--tls-cert",
            &file("a.pem"),
            "--tls-key",
            &file("a-key.pem"),
        ])
        .args(["--tls-ca", &file("ca.pem")])
        .env_remove("MESHRPC_COOKIE")
        .output()
        .expect("run meshrpc node");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a cluster cookie too"), "{stderr}");
}
