//! Identities bound to credentials: the client secret lets a process call but never be a
//! node, and a connection that claims a live member's identity is not believed on the claim
//! alone (the node asks the member at its advertised address). Each was a hole before
//! (issue 21, rows 5 and 6).

use crate::support;

use std::process::{Command, Output};
use std::time::Duration;

use meshrpc::wire::{self, Greeting, Hello, Identity, Verdict, Welcome};
use meshrpc::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{NodeProc, BIN};

const COOKIE: &str = "a-cluster-cookie";
const SECRET: &str = "a-client-secret-for-callers";

fn call_as(addr: &str, credential: &[&str], method: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["call", "--timeout-ms", "5000"])
        .args(credential)
        .args([addr, method])
        .args(args)
        .env_remove("MESHRPC_COOKIE")
        .env_remove("MESHRPC_CLIENT_SECRET")
        .output()
        .expect("run meshrpc call")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_client_secret_calls_methods_but_never_makes_a_node() {
    let node = NodeProc::start("n", &["--cookie", COOKIE, "--client-secret", SECRET]);
    let secret = ["--client-secret", SECRET];
    let out = call_as(&node.addr, &secret, "add", &["2", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
    // Node-only methods stay out of a client's reach.
    let out = call_as(&node.addr, &secret, "system.members.sync", &[]);
    assert!(
        stderr(&out).contains("error: forbidden:"),
        "{}",
        stderr(&out)
    );
    // A wrong secret, and no credential at all, are told what the node wants.
    let out = call_as(
        &node.addr,
        &["--client-secret", "not-the-client-secret"],
        "add",
        &["1", "1"],
    );
    assert!(stderr(&out).contains("unauthenticated"), "{}", stderr(&out));
    let out = call_as(&node.addr, &[], "add", &["1", "1"]);
    let said = stderr(&out);
    assert!(said.contains("--client-secret"), "{said}");
    // The cookie still works for callers that hold it.
    let out = call_as(&node.addr, &["--cookie", COOKIE], "add", &["1", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A process holding only the client secret cannot start as a node of this cluster: a
    // client secret without a cookie is refused at start.
    let out = Command::new(BIN)
        .args(["node", "--name", "pose", "--listen", "127.0.0.1:0"])
        .args(["--client-secret", SECRET, "--seed", &node.addr])
        .env_remove("MESHRPC_COOKIE")
        .output()
        .expect("run meshrpc node");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("give the node --cookie too"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_short_client_secret_or_one_equal_to_the_cookie_is_refused_at_start() {
    for (secret, why) in [("short", "at least 16"), (COOKIE, "differ from the cookie")] {
        let out = Command::new(BIN)
            .args(["node", "--name", "n", "--listen", "127.0.0.1:0"])
            .args(["--cookie", COOKIE, "--client-secret", secret])
            .output()
            .expect("run meshrpc node");
        assert!(!out.status.success());
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
    }
}

async fn read_frame(stream: &mut TcpStream) -> Vec<u8> {
    let len = stream.read_u32().await.unwrap() as usize;
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).await.unwrap();
    payload
}

/// What `node` says about itself to anyone who connects: everything an impostor needs.
async fn greeting_of(node: &Node) -> Identity {
    let mut stream = TcpStream::connect(node.addr()).await.unwrap();
    let greeting: Greeting = wire::decode_handshake(&read_frame(&mut stream).await).unwrap();
    greeting.identity
}

/// Dials `node` claiming to be `who`; the verdict it gets.
async fn claim(node: &Node, who: &Identity) -> Verdict {
    let mut stream = TcpStream::connect(node.addr()).await.unwrap();
    let _: Greeting = wire::decode_handshake(&read_frame(&mut stream).await).unwrap();
    let hello = Hello {
        identity: who.clone(),
        nonce: [5; 16],
        proof: None,
    };
    let frame = wire::encode_handshake(&hello).unwrap();
    stream.write_all(&frame).await.unwrap();
    let welcome: Welcome = wire::decode_handshake(&read_frame(&mut stream).await).unwrap();
    welcome.verdict
}

fn config(name: &str, seed: Option<&Node>) -> NodeConfig {
    NodeConfig {
        name: name.into(),
        seeds: seed.map(|s| s.addr().to_string()).into_iter().collect(),
        ..NodeConfig::default()
    }
}

/// Row 6: a connection that claims a live node's id, name, listen address and incarnation
/// (all read from that node's greeting) was believed: A's calls to B went to the impostor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialer_claiming_a_live_nodes_identity_is_refused_with_or_without_a_link() {
    let a = Node::start(config("a", None)).await.unwrap();
    let b = Node::start(config("b", Some(&a))).await.unwrap();
    for n in [&a, &b] {
        let name = n.name().to_owned();
        n.register("who", move |(): ()| name.clone());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !a
        .members()
        .iter()
        .any(|m| m.name == "b" && m.status.is_live())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "b never joined a's view"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stolen = greeting_of(&b).await;
    // Whether or not a and b hold a link at that moment.
    for linked in [false, true] {
        if linked {
            let who: String = a.call("b", "who", ()).await.unwrap();
            assert_eq!(who, "b");
        }
        let verdict = claim(&a, &stolen).await;
        let Verdict::Refuse(why) = &verdict else {
            panic!("the impostor was let in (linked: {linked}): {verdict:?}")
        };
        assert!(why.contains("not the one dialing"), "{why}");
        let who: Result<String, _> = a.call("b", "who", ()).await;
        assert_eq!(
            who.as_deref().map_err(|e| e.to_string()),
            Ok("b"),
            "a's calls to b still reach b (linked: {linked})"
        );
    }
    // Its name alone, with an id of its own and another address: refused too (the node at
    // b's address is another node, and a's link to b holds the name).
    let mut named = stolen.clone();
    named.id = wire::NodeId(stolen.id.0 ^ 1);
    named.listen = Some("127.0.0.1:9".into());
    let verdict = claim(&a, &named).await;
    assert!(matches!(verdict, Verdict::Refuse(_)), "{verdict:?}");
    a.shutdown().await;
    b.shutdown().await;
}
