//! Test support: real `meshrpc` processes that are always killed, and bounded waiting.
#![allow(dead_code)]

pub mod lan;
pub mod postgres;
pub mod proxy;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A folder of the test's own, deleted when it ends.
pub struct Folder(pub std::path::PathBuf);

impl Folder {
    pub fn new(what: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!("meshrpc-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        Folder(dir)
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_meshrpc");

/// How long anything in a test may take before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A running `meshrpc node`, killed when dropped (also when the test panics).
pub struct NodeProc {
    pub name: String,
    pub addr: String,
    /// The HTTP gateway's address, when started with `--http`.
    pub http: Option<String>,
    http_wanted: bool,
    /// The node's stdout, line by line.
    stdout: mpsc::Receiver<String>,
    child: Child,
}

/// `n` loopback addresses whose TCP and UDP ports were free a moment ago, for nodes that
/// must be named as seeds before they listen. The ports are below the kernel's ephemeral
/// range (32768 and up here), so no outgoing connection can take one before its node binds
/// it, however many connections the tests open meanwhile.
pub fn free_addrs(n: usize) -> Vec<String> {
    use rand::Rng;
    let mut rng = rand::rng();
    let held: Vec<_> = (0..n)
        .map(|_| loop {
            let port: u16 = rng.random_range(10_000..32_000);
            let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(tcp) = std::net::TcpListener::bind(at) else {
                continue;
            };
            if let Ok(udp) = std::net::UdpSocket::bind(at) {
                break (tcp, udp, at);
            }
        })
        .collect();
    held.iter().map(|(_, _, at)| at.to_string()).collect()
}

impl NodeProc {
    /// Starts `meshrpc node --name NAME --listen 127.0.0.1:0 EXTRA...` and waits for its
    /// `listening on` line.
    pub fn start(name: &str, extra: &[&str]) -> NodeProc {
        Self::start_with(name, "127.0.0.1:0", extra, Stdio::inherit())
    }

    /// Like [`NodeProc::start`] with a listen address, and stderr sent where asked.
    pub fn start_with(
        name: &str,
        listen: &str,
        extra: &[&str],
        stderr: impl Into<Stdio>,
    ) -> NodeProc {
        Self::launch(Command::new(BIN), name, listen, extra, stderr)
    }

    /// Like [`NodeProc::start_with`], inside network namespace `netns` (`ip netns exec`
    /// replaces itself with the node, so killing the child kills the node).
    pub fn start_in(netns: &str, name: &str, listen: &str, extra: &[&str]) -> NodeProc {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, BIN]);
        Self::launch(command, name, listen, extra, Stdio::inherit())
    }

    fn launch(
        command: Command,
        name: &str,
        listen: &str,
        extra: &[&str],
        stderr: impl Into<Stdio>,
    ) -> NodeProc {
        let mut node = Self::spawn_with(command, name, listen, extra, stderr);
        node.wait_listening();
        node
    }

    /// Like [`NodeProc::start`], with another build of `meshrpc` (the previous release's).
    pub fn start_bin(bin: &str, name: &str, extra: &[&str]) -> NodeProc {
        Self::launch(
            Command::new(bin),
            name,
            "127.0.0.1:0",
            extra,
            Stdio::inherit(),
        )
    }

    /// Starts `meshrpc node` listening on `listen` without waiting for it: the way a shell
    /// loop, docker compose or Kubernetes starts nodes. [`NodeProc::wait_listening`] waits.
    pub fn spawn(name: &str, listen: &str, extra: &[&str]) -> NodeProc {
        Self::spawn_with(Command::new(BIN), name, listen, extra, Stdio::inherit())
    }

    /// Like [`NodeProc::spawn`], with another build of `meshrpc`.
    pub fn spawn_bin(bin: &str, name: &str, listen: &str, extra: &[&str]) -> NodeProc {
        Self::spawn_with(Command::new(bin), name, listen, extra, Stdio::inherit())
    }

    /// Like [`NodeProc::spawn`], with `command` (its environment, say) instead of a bare
    /// `meshrpc`, inside network namespace `netns` if one is named.
    pub fn spawn_command(
        mut command: Command,
        netns: Option<&str>,
        name: &str,
        listen: &str,
        extra: &[&str],
    ) -> NodeProc {
        if let Some(netns) = netns {
            let mut wrapped = Command::new("ip");
            wrapped.args(["netns", "exec", netns, BIN]);
            for (key, value) in command.get_envs() {
                if let Some(value) = value {
                    wrapped.env(key, value);
                }
            }
            command = wrapped;
        }
        Self::spawn_with(command, name, listen, extra, Stdio::inherit())
    }

    /// Like [`NodeProc::spawn`], inside network namespace `netns`.
    pub fn spawn_in(netns: &str, name: &str, listen: &str, extra: &[&str]) -> NodeProc {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns, BIN]);
        Self::spawn_with(command, name, listen, extra, Stdio::inherit())
    }

    fn spawn_with(
        mut command: Command,
        name: &str,
        listen: &str,
        extra: &[&str],
        stderr: impl Into<Stdio>,
    ) -> NodeProc {
        let mut child = command
            .args(["node", "--name", name, "--listen", listen])
            .args(extra)
            // MESHRPC_TEST_LOG=debug (say) shows more of what the nodes do.
            .env(
                "RUST_LOG",
                std::env::var("MESHRPC_TEST_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env_remove("MESHRPC_COOKIE")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start meshrpc node");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        NodeProc {
            name: name.to_owned(),
            addr: String::new(),
            http: None,
            http_wanted: extra.contains(&"--http"),
            stdout: rx,
            child,
        }
    }

    /// Waits for the `listening on` line (and `http on`, with `--http`) and records the
    /// addresses; fails the test after [`PATIENCE`].
    pub fn wait_listening(&mut self) {
        let next = |prefix: &str| {
            let line = self
                .stdout
                .recv_timeout(PATIENCE)
                .expect("node printed its address in time");
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| {
                    panic!("expected `{prefix}...` from {}, got {line:?}", self.name)
                })
                .to_owned()
        };
        let addr = next("listening on ");
        let http = self.http_wanted.then(|| next("http on "));
        self.addr = addr;
        self.http = http;
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`TERM`, `KILL`) with the system's `kill`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status();
        assert!(status.expect("run kill").success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit, at most `PATIENCE`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {PATIENCE:?}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `meshrpc members --json ADDR`: one JSON object per member; empty if it fails.
pub fn members_json(addr: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["members", "--json", "--timeout-ms", "5000"])
        .args(extra)
        .arg(addr)
        .env("RUST_LOG", "error")
        .output()
        .expect("run meshrpc members");
    if !out.status.success() {
        return Vec::new();
    }
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Runs `meshrpc members --json ADDR` and returns name -> status; empty if it fails.
pub fn members(addr: &str, extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    statuses(&members_json(addr, extra))
}

/// Name -> status, from what `meshrpc members --json` printed.
pub fn statuses(list: &[serde_json::Value]) -> std::collections::BTreeMap<String, String> {
    list.iter()
        .filter_map(|m| {
            Some((
                m["name"].as_str()?.to_owned(),
                m["status"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// Runs `meshrpc call ADDR METHOD ARGS...`.
pub fn call(addr: &str, method: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(["call", "--timeout-ms", "10000", addr, method])
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run meshrpc call")
}

/// `meshrpc call` that must succeed; returns its stdout, trimmed.
pub fn call_ok(addr: &str, method: &str, args: &[&str]) -> String {
    let out = call(addr, method, args);
    assert!(
        out.status.success(),
        "meshrpc call {method} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// `meshrpc call ADDR METHOD` with `stdin` as its input; (exit ok, stdout, stderr). The
/// call ends by itself: stdin closes, and it gives up after its idle timeout.
pub fn call_with_stdin(addr: &str, method: &str, stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(["call", "--timeout-ms", "10000", addr, method])
        .env("RUST_LOG", "error")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshrpc call");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("meshrpc call ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `check` until it returns true, failing the test after `PATIENCE`: for what has no
/// event to wait on (another process's state, read through its CLI).
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a Python 3 program with `args`; returns its stdout, failing the test on a non-zero exit.
pub fn python(program: &str, args: &[&str]) -> String {
    let mut child = Command::new("python3")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is on every machine here");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(program.as_bytes())
        .expect("write program");
    let out = child.wait_with_output().expect("python ran");
    assert!(
        out.status.success(),
        "python failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Development certificates for `names` in `dir`, signed by the CA there (made if there is
/// none), the way a user makes them: `meshrpc tls-gen DIR NAME...`.
pub fn tls_gen(dir: &std::path::Path, names: &[&str]) {
    let out = Command::new(BIN)
        .arg("tls-gen")
        .arg(dir)
        .args(names)
        .output()
        .expect("run meshrpc tls-gen");
    assert!(
        out.status.success(),
        "tls-gen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The async twin of [`wait_until`], for in-process nodes: polls `check` every 10 ms until it
/// holds, failing the test after `PATIENCE`.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
