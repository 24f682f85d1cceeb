//! Identities bound to credentials: the client secret lets a process call but never be a
//! node, and a connection that claims a live member's identity is not believed on the claim
//! alone (the node asks the member at its advertised address). Each was a hole before
//! (issue 21, rows 5 and 6).

mod support;

use std::process::{Command, Output};

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
