//! A rolling restart under load, the way an operator (or a Kubernetes StatefulSet) does one:
//! five real `meshrpc node` processes with default timings serve a steady load — `add` and
//! virtual-actor calls sent through every node a balancer's pool holds, and `fanout`, which
//! makes the node call every other member — while each node in turn is taken out of the
//! pool, stopped with SIGTERM, started again with the same name and address, and put back
//! once the cluster sees it.
//!
//! Calls through nodes that stay in the pool must all succeed (routed virtual-actor calls
//! included: the forwarding node retries where nothing ran); a node's calls to the member
//! being restarted, and calls through it that were on their way when it left the pool, may
//! fail, but only promptly and with `shutdown`, `peer_unavailable` or `disconnected`. No
//! call may take longer than its deadline.

use crate::support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshrpc::{CallOptions, Client, ErrorKind, RpcError};
use support::{free_addrs, members, wait_until, NodeProc};

const NODES: usize = 5;
const DEADLINE: Duration = Duration::from_secs(5);
const KEYS: usize = 32;
/// Callers running at once.
const CALLERS: usize = 8;

/// The nodes a balancer sends calls to.
#[derive(Default)]
struct Pool {
    members: Mutex<Vec<(String, Arc<Client>)>>,
}

impl Pool {
    fn pick(&self) -> Option<(String, Arc<Client>)> {
        let members = self.members.lock().unwrap();
        if members.is_empty() {
            return None;
        }
        Some(members[rand::random_range(0..members.len())].clone())
    }

    fn remove(&self, name: &str) {
        self.members.lock().unwrap().retain(|(n, _)| n != name);
    }

    fn add(&self, name: &str, client: Client) {
        self.members
            .lock()
            .unwrap()
            .push((name.to_owned(), Arc::new(client)));
    }
}

#[derive(Default, Debug)]
struct Tally {
    ok: u64,
    /// Calls through a node that stayed in the pool that failed: (what, through, error).
    failed: Vec<(String, String, String)>,
    /// Calls through a node that left the pool (and stopped) while they ran that failed,
    /// by kind.
    through_stopping: BTreeMap<String, u64>,
    /// A node's calls to the member being restarted that failed, by kind.
    to_restarting: BTreeMap<String, u64>,
    /// A node's calls to a member not being restarted that failed.
    to_others_failed: Vec<String>,
    slowest: Duration,
}

/// Which member is being restarted now, if any.
type Restarting = Arc<Mutex<Option<String>>>;

async fn caller(
    pool: Arc<Pool>,
    restarting: Restarting,
    tally: Arc<Mutex<Tally>>,
    stop: Arc<AtomicBool>,
) {
    let options = CallOptions::timeout(DEADLINE);
    let mut turn = rand::random_range(0..3u32);
    while !stop.load(Ordering::Relaxed) {
        let Some((through, client)) = pool.pick() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        turn = (turn + 1) % 3;
        let started = Instant::now();
        // Who was being restarted when the call started (or ended): its calls may fail.
        let before = restarting.lock().unwrap().clone();
        let outcome: Result<(), (String, RpcError)> = match turn {
            0 => client
                .peer()
                .call_with::<i64>("add", (2i64, 3i64), options)
                .await
                .map(|sum| assert_eq!(sum, 5))
                .map_err(|e| ("add".to_owned(), e)),
            1 => {
                let method = format!("vcounter.incr/k{}", rand::random_range(0..KEYS));
                match client.peer().call_with::<i64>(&method, 1i64, options).await {
                    Ok(n) => {
                        assert!(n >= 1);
                        Ok(())
                    }
                    Err(e) => Err((method, e)),
                }
            }
            _ => {
                let args = serde_json::json!(["add", [2, 3]]);
                match client.peer().call_json("fanout", &args, options).await {
                    Ok(results) => {
                        let after = restarting.lock().unwrap().clone();
                        let results = results.as_object().cloned().unwrap_or_default();
                        let mut t = tally.lock().unwrap();
                        for (member, result) in results {
                            let Some(error) = result.get("error") else {
                                assert_eq!(result, 5, "{member}");
                                continue;
                            };
                            let kind = error["kind"].as_str().unwrap_or("?").to_owned();
                            let restarting_now = [&before, &after]
                                .iter()
                                .any(|r| r.as_deref() == Some(member.as_str()));
                            let through_stopping = [&before, &after]
                                .iter()
                                .any(|r| r.as_deref() == Some(through.as_str()));
                            if restarting_now || through_stopping {
                                *t.to_restarting.entry(kind).or_default() += 1;
                            } else {
                                t.to_others_failed
                                    .push(format!("{through} -> {member}: {error}"));
                            }
                        }
                        Ok(())
                    }
                    Err(e) => Err(("fanout".to_owned(), e)),
                }
            }
        };
        let took = started.elapsed();
        let after = restarting.lock().unwrap().clone();
        let stopping = [&before, &after]
            .iter()
            .any(|r| r.as_deref() == Some(through.as_str()));
        let mut t = tally.lock().unwrap();
        t.slowest = t.slowest.max(took);
        match outcome {
            Ok(()) => t.ok += 1,
            Err((_, e)) if stopping => {
                *t.through_stopping
                    .entry(e.kind().as_str().to_owned())
                    .or_default() += 1
            }
            Err((what, e)) => t.failed.push((what, through, e.to_string())),
        }
    }
}

/// Successful calls between two restarts: `MESHRPC_ROLLING_LOAD` (a longer run for
/// docs/RELIABILITY.md), 500 by default.
fn load_between_restarts() -> u64 {
    std::env::var("MESHRPC_ROLLING_LOAD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500)
}

/// The nodes run this build, or the one `MESHRPC_ROLLING_BIN` names (an older release, to
/// compare).
fn spawn_node(name: &str, addr: &str, seeds: &[String]) -> NodeProc {
    let mut args = vec!["--threads", "1"];
    for seed in seeds {
        args.extend(["--seed", seed.as_str()]);
    }
    match std::env::var("MESHRPC_ROLLING_BIN") {
        Ok(bin) if !bin.is_empty() => NodeProc::spawn_bin(&bin, name, addr, &args),
        _ => NodeProc::spawn(name, addr, &args),
    }
}

fn one_cluster(nodes: &[NodeProc]) -> bool {
    nodes.iter().all(|node| {
        let view = members(&node.addr, &[]);
        view.len() == nodes.len() && view.values().all(|s| s == "up")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_call_through_the_pool() {
    let addrs = free_addrs(NODES);
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    // As a StatefulSet's pods: every node names the first two as seeds.
    let seeds = vec![addrs[0].clone(), addrs[1].clone()];
    let mut nodes: Vec<NodeProc> = (0..NODES)
        .map(|i| spawn_node(&names[i], &addrs[i], &seeds))
        .collect();
    for node in &mut nodes {
        node.wait_listening();
    }
    let nodes = tokio::task::spawn_blocking(move || {
        wait_until("one cluster of five", || one_cluster(&nodes));
        nodes
    })
    .await
    .unwrap();

    let pool = Arc::new(Pool::default());
    for (name, addr) in names.iter().zip(&addrs) {
        pool.add(name, Client::connect(addr).await.expect("connect"));
    }
    let restarting: Restarting = Arc::default();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|_| {
            tokio::spawn(caller(
                pool.clone(),
                restarting.clone(),
                tally.clone(),
                stop.clone(),
            ))
        })
        .collect();

    let mut nodes = nodes;
    for i in 0..NODES {
        // Out of the balancer's pool, then SIGTERM; in again once everyone sees it back.
        pool.remove(&names[i]);
        *restarting.lock().unwrap() = Some(names[i].clone());
        let (name, addr, seeds) = (names[i].clone(), addrs[i].clone(), seeds.clone());
        nodes = tokio::task::spawn_blocking(move || {
            let mut old = nodes.remove(i);
            old.signal("TERM");
            assert!(old.wait_exit().success(), "{name} stopped cleanly");
            drop(old);
            let mut fresh = spawn_node(&name, &addr, &seeds);
            fresh.wait_listening();
            nodes.insert(i, fresh);
            wait_until("the restarted node back in one cluster", || {
                one_cluster(&nodes)
            });
            nodes
        })
        .await
        .unwrap();
        *restarting.lock().unwrap() = None;
        pool.add(
            &names[i],
            Client::connect(&addrs[i]).await.expect("reconnect"),
        );
        // Some load on the whole cluster before the next restart.
        let load = load_between_restarts();
        let until = tally.lock().unwrap().ok + load;
        // Far more than the load needs (thousands of calls a second), and bounded.
        let deadline = Instant::now() + Duration::from_secs(20 + load / 100);
        while tally.lock().unwrap().ok < until {
            assert!(
                Instant::now() < deadline,
                "the load stalled: {:?}",
                tally.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    let tally = tally.lock().unwrap();
    let mut failed_by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    for (what, _, error) in &tally.failed {
        let what = if what.starts_with("vcounter") {
            "vcounter"
        } else {
            what
        };
        *failed_by_kind.entry(what).or_default() += 1;
        let _ = error;
    }
    eprintln!(
        "rolling restart of {NODES} nodes under load: {} calls ok; failed through nodes in \
         the pool: {failed_by_kind:?}; through a stopping node: {:?}; a node's calls to the \
         restarting one: {:?}; slowest {:?}",
        tally.ok, tally.through_stopping, tally.to_restarting, tally.slowest
    );
    eprintln!("{tally:?}");
    assert!(tally.ok > 2500, "the load ran: {tally:?}");
    assert!(
        tally.failed.is_empty(),
        "calls through the pool failed: {:?}",
        tally.failed
    );
    assert!(
        tally.to_others_failed.is_empty(),
        "calls between members that stayed failed: {:?}",
        tally.to_others_failed
    );
    let allowed = [
        ErrorKind::Shutdown.as_str(),
        ErrorKind::PeerUnavailable.as_str(),
        ErrorKind::Disconnected.as_str(),
    ];
    assert!(
        (tally.to_restarting.keys())
            .chain(tally.through_stopping.keys())
            .all(|k| allowed.contains(&k.as_str())),
        "{tally:?}"
    );
    assert!(tally.slowest < DEADLINE, "a call took {:?}", tally.slowest);
    drop(nodes);
}
