//! The actor checker, Jepsen-style: clients increment `vcounter` keys through every node of
//! a real cluster whose state persists, recording each operation and its outcome, while a
//! nemesis kills key owners with SIGKILL and starts them again; then the faults heal, each
//! key's final value is read, and the history is checked ([`history::check`]): no value
//! handed out twice, nothing acknowledged lost, no failed call applied.
//!
//! It passes on the real node, and it catches what a missing protection lets through: with
//! the test-only switch `MESHRPC_TEST_UNSAFE=reply-before-write` (a debug build's; answers
//! leave before their writes commit) a kill loses acknowledged increments, and the checker
//! says so with its witness. The runs with partitions, on PostgreSQL between namespace
//! hosts, are in `tests/checker/partitions.rs`.
//!
//! `MESHRPC_CHECK_SECS` sets how long the faults go on (60 s by default, as in CI); a longer
//! run is `scripts/check_actors.sh`, with its figures in docs/RELIABILITY.md.
//!
//! A test binary of its own, and its tests one at a time ([`one_at_a_time`]): a run loads
//! the machine's two cores for a minute, which would starve the timing-sensitive tests of
//! the processes binary beside it (cargo runs test binaries one after another).

#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshrpc::{CallOptions, Client, ErrorKind};
use support::{free_addrs, members, Folder, NodeProc, BIN, PATIENCE};

pub mod history;
mod partitions;

use history::{check, Fault, History, Op, Outcome, Verdict};

/// Each call's deadline: a call that outlives it is `unknown`.
const DEADLINE: Duration = Duration::from_secs(5);
const KEYS: usize = 12;
const CLIENTS: usize = 8;

/// How long the nemesis runs: `MESHRPC_CHECK_SECS`, 60 s by default.
/// Held by each check while it runs: one at a time.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn check_secs() -> Duration {
    let secs = std::env::var("MESHRPC_CHECK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// The recording: the history so far, and, to stop a run that should fail as soon as it
/// does, whether an acknowledged value has come back twice already.
pub struct Recorder {
    started: Instant,
    history: Mutex<History>,
    acked: Mutex<HashMap<String, HashSet<i64>>>,
    pub duplicate_seen: AtomicBool,
    pub stop: AtomicBool,
}

impl Recorder {
    pub fn new() -> Arc<Recorder> {
        Arc::new(Recorder {
            started: Instant::now(),
            history: Mutex::default(),
            acked: Mutex::default(),
            duplicate_seen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        })
    }

    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn fault(&self, what: String) {
        eprintln!("checker: {:.1} s: {what}", self.now().as_secs_f64());
        let at = self.now();
        self.history.lock().unwrap().faults.push(Fault { at, what });
    }

    fn op(&self, op: Op) {
        if let Outcome::Ok(value) = op.outcome {
            let mut acked = self.acked.lock().unwrap();
            if !acked.entry(op.key.clone()).or_default().insert(value) {
                self.duplicate_seen.store(true, Ordering::Relaxed);
            }
        }
        self.history.lock().unwrap().ops.push(op);
    }

    pub fn history(&self) -> History {
        self.history.lock().unwrap().clone()
    }
}

pub fn key(i: usize) -> String {
    format!("chk-{i}")
}

/// One client: `incr` on a random key through a random node, each call recorded, until
/// told to stop. A node it cannot reach is skipped (no operation was invoked).
pub async fn client(id: usize, nodes: Arc<Vec<(String, String)>>, recorder: Arc<Recorder>) {
    let mut links: Vec<Option<Client>> = (0..nodes.len()).map(|_| None).collect();
    while !recorder.stop.load(Ordering::Relaxed) {
        let at = rand::random_range(0..nodes.len());
        let (via, addr) = &nodes[at];
        let link = match links[at].take() {
            Some(client) if client.peer().is_connected() => client,
            _ => match tokio::time::timeout(Duration::from_secs(1), Client::connect(addr)).await {
                Ok(Ok(client)) => client,
                _ => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let key = key(rand::random_range(0..KEYS));
        let invoked = recorder.now();
        let result = (link.peer())
            .call_with::<i64>(
                &format!("vcounter.incr/{key}"),
                1i64,
                CallOptions::timeout(DEADLINE),
            )
            .await;
        if !matches!(&result, Err(e) if e.kind() == ErrorKind::Disconnected) {
            links[at] = Some(link);
        }
        recorder.op(Op {
            client: id,
            key,
            via: via.clone(),
            invoked,
            completed: recorder.now(),
            outcome: Outcome::of(result),
        });
    }
}

/// Each key's value, read through the first of `nodes` once the cluster is whole and every
/// node places every key alike (each read retried while the view settles, within
/// [`PATIENCE`]). Members are `up` before what each hosts has spread, and until then a node
/// may still route a key to an activation the new owner has moved past: a stale read
/// docs/ACTORS.md allows while two nodes disagree, not a lost write.
pub async fn finals(nodes: &[(String, String)]) -> BTreeMap<String, i64> {
    let deadline = Instant::now() + PATIENCE;
    agree_on_owners(nodes, deadline).await;
    let addr = &nodes[0].1;
    let mut finals = BTreeMap::new();
    let mut link: Option<Client> = None;
    for i in 0..KEYS {
        let key = key(i);
        loop {
            assert!(
                Instant::now() < deadline,
                "could not read {key}'s final value"
            );
            let client = match link.take() {
                Some(client) if client.peer().is_connected() => client,
                _ => match Client::connect(addr).await {
                    Ok(client) => client,
                    Err(_) => continue,
                },
            };
            let read = (client.peer())
                .call_with::<i64>(
                    &format!("vcounter.get/{key}"),
                    (),
                    CallOptions::timeout(DEADLINE),
                )
                .await;
            link = Some(client);
            if let Ok(value) = read {
                finals.insert(key, value);
                break;
            }
        }
    }
    finals
}

/// Waits until every node names the same owner for every key; past `deadline`, fails with
/// what each one said last.
async fn agree_on_owners(nodes: &[(String, String)], deadline: Instant) {
    let mut links: Vec<Option<Client>> = nodes.iter().map(|_| None).collect();
    loop {
        let mut views = Vec::new();
        for ((_, addr), link) in nodes.iter().zip(&mut links) {
            let client = match link.take() {
                Some(client) if client.peer().is_connected() => client,
                _ => match Client::connect(addr).await {
                    Ok(client) => client,
                    Err(_) => {
                        views.push(None);
                        continue;
                    }
                },
            };
            let mut owners = Vec::new();
            for i in 0..KEYS {
                let owner = (client.peer())
                    .call_with::<Option<String>>(
                        "system.actors.owner",
                        ("vcounter", key(i)),
                        CallOptions::timeout(DEADLINE),
                    )
                    .await;
                owners.push(owner.ok().flatten());
            }
            *link = Some(client);
            views.push(Some(owners));
        }
        let first = &views[0];
        let agreed = first
            .as_ref()
            .is_some_and(|owners| owners.iter().all(Option::is_some))
            && views.iter().all(|view| view == first);
        if agreed {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes never agreed on the keys' owners: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three real nodes with default timings, sharing one store: on loopback, or each in a
/// network namespace host of its own.
pub struct Cluster {
    names: Vec<String>,
    addrs: Vec<String>,
    /// The namespace each node runs in, if any.
    netns: Vec<Option<String>>,
    state: String,
    unsafe_switch: Option<&'static str>,
    /// `None` while killed.
    nodes: Vec<Option<NodeProc>>,
}

impl Cluster {
    /// Starts the nodes all at once, each naming the others as seeds.
    pub fn start(
        addrs: Vec<String>,
        netns: Vec<Option<String>>,
        state: String,
        unsafe_switch: Option<&'static str>,
    ) -> Cluster {
        let n = addrs.len();
        let mut cluster = Cluster {
            names: (0..n)
                .map(|i| ((b'a' + i as u8) as char).to_string())
                .collect(),
            addrs,
            netns,
            state,
            unsafe_switch,
            nodes: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            cluster.nodes[i] = Some(cluster.spawn(i));
        }
        for node in cluster.nodes.iter_mut().flatten() {
            node.wait_listening();
        }
        cluster
    }

    fn spawn(&self, i: usize) -> NodeProc {
        let mut command = Command::new(BIN);
        if let Some(switch) = self.unsafe_switch {
            command.env("MESHRPC_TEST_UNSAFE", switch);
        }
        let mut args = vec!["--state", &self.state];
        for (j, addr) in self.addrs.iter().enumerate() {
            if j != i {
                args.extend(["--seed", addr.as_str()]);
            }
        }
        let netns = self.netns[i].as_deref();
        NodeProc::spawn_command(command, netns, &self.names[i], &self.addrs[i], &args)
    }

    /// The (name, address) of each node, for the clients.
    pub fn nodes(&self) -> Vec<(String, String)> {
        (self.names.iter().cloned())
            .zip(self.addrs.iter().cloned())
            .collect()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Every node runs and sees every other one up.
    fn whole(&self) -> bool {
        self.nodes.iter().all(Option::is_some)
            && self.addrs.iter().all(|addr| {
                let view = members(addr, &[]);
                view.len() == self.addrs.len() && view.values().all(|s| s == "up")
            })
    }

    /// Waits until the cluster is [`Cluster::whole`]; past the deadline, fails saying what
    /// each node saw last.
    pub fn wait_whole(&self, what: &str) {
        let deadline = std::time::Instant::now() + PATIENCE;
        while !self.whole() {
            if std::time::Instant::now() > deadline {
                let views: Vec<String> = (self.names.iter().zip(&self.addrs))
                    .map(|(name, addr)| {
                        format!("{name} sees {:?}", support::members_json(addr, &[]))
                    })
                    .collect();
                panic!("timed out waiting for {what}:\n{}", views.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The index of `key`'s owner, as a running node sees it.
    fn owner(&self, key: &str) -> Option<usize> {
        let at = self.nodes.iter().flatten().next()?;
        let out = support::call(
            &at.addr,
            "system.actors.owner",
            &["\"vcounter\"", &format!("\"{key}\"")],
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let name = serde_json::from_str::<Option<String>>(text.trim()).ok()??;
        self.names.iter().position(|n| *n == name)
    }

    /// Kills a random key's owner with SIGKILL, waits up to 3 s, and starts it again with
    /// the same name and address.
    pub fn kill_and_restart(&mut self, recorder: &Recorder) {
        let key = key(rand::random_range(0..KEYS));
        let Some(i) = self.owner(&key) else { return };
        drop(self.nodes[i].take()); // SIGKILL, then reaped
        let name = self.names[i].clone();
        recorder.fault(format!("kill -9 {name} (owner of {key})"));
        // The nemesis's schedule: the cluster meets a restart at any point of its noticing.
        std::thread::sleep(Duration::from_millis(rand::random_range(0..3000)));
        let mut node = self.spawn(i);
        node.wait_listening();
        self.nodes[i] = Some(node);
        recorder.fault(format!("restart {name}"));
    }
}

/// A run: clients against `nodes` while `nemesis` runs for `secs` (or until a duplicate,
/// when `stop_on_duplicate`); then the clients stop, `heal` makes the cluster whole, and
/// the history is checked against the finals read through the first node.
pub fn run(
    nodes: Vec<(String, String)>,
    secs: Duration,
    stop_on_duplicate: bool,
    mut nemesis: impl FnMut(&Recorder),
    heal: impl FnOnce(&Recorder),
) -> Verdict {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let recorder = Recorder::new();
    let nodes = Arc::new(nodes);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| runtime.spawn(client(id, nodes.clone(), recorder.clone())))
        .collect();
    let until = Instant::now() + secs;
    while Instant::now() < until
        && !(stop_on_duplicate && recorder.duplicate_seen.load(Ordering::Relaxed))
    {
        nemesis(&recorder);
    }
    recorder.stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for client in clients {
            client.await.expect("a client task");
        }
    });
    heal(&recorder);
    let finals = runtime.block_on(finals(&nodes));
    let verdict = check(&recorder.history(), &finals);
    eprintln!("checker: {verdict}");
    verdict
}

fn kills(folder: &Folder, unsafe_switch: Option<&'static str>, secs: Duration) -> Verdict {
    let state = format!("sqlite:{}", folder.0.join("state.db").display());
    let cluster = Cluster::start(free_addrs(3), vec![None; 3], state, unsafe_switch);
    cluster.wait_whole("the three nodes to form one cluster");
    let nodes = cluster.nodes();
    let cluster = Mutex::new(cluster);
    run(
        nodes,
        secs,
        unsafe_switch.is_some(),
        |recorder| {
            // Faults every 2 to 5 s: a key's owner goes down while calls to it are on their way.
            std::thread::sleep(Duration::from_millis(rand::random_range(2000..5000)));
            cluster.lock().unwrap().kill_and_restart(recorder);
        },
        |recorder| {
            let cluster = cluster.lock().unwrap();
            cluster.wait_whole("the cluster to be whole again");
            recorder.fault("healed".to_owned());
        },
    )
}

#[test]
fn killed_owners_lose_no_acknowledged_increment_and_hand_out_no_value_twice() {
    let _one = one_at_a_time();
    let folder = Folder::new("check-kills");
    let verdict = kills(&folder, None, check_secs());
    assert!(verdict.valid(), "{verdict}");
    assert!(
        verdict.ok > 1000,
        "too few acknowledged calls to mean much: {verdict}"
    );
    assert!(
        verdict.faults >= 5,
        "too few faults to mean much: {verdict}"
    );
}

#[test]
fn the_checker_catches_answers_that_leave_before_their_write() {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the test-only switch exists in debug builds only");
        return;
    }
    let _one = one_at_a_time();
    let folder = Folder::new("check-unsafe");
    let verdict = kills(&folder, Some("reply-before-write"), Duration::from_secs(60));
    assert!(
        !verdict.valid(),
        "the checker found nothing wrong with replies sent before their writes: {verdict}"
    );
}
