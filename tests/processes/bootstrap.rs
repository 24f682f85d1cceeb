//! One cluster however nodes start: real `meshrpc node` processes started all at once, the
//! way a shell loop, docker compose or Kubernetes starts them, with default timings and
//! seeds that are not listening yet. Whatever the order, they must end as one cluster.

use crate::support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{free_addrs, members, NodeProc};

/// Default timings are slower than the other tests' and the machine is busy starting many
/// processes: convergence gets this long.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// Starts `names[i]` at `addrs[i]` with `seeds[i]`, all without waiting, then waits until
/// each prints its address.
fn spawn_all(names: &[String], addrs: &[String], seeds: &[Vec<String>]) -> Vec<NodeProc> {
    let mut nodes: Vec<NodeProc> = (names.iter().zip(addrs).zip(seeds))
        .map(|((name, addr), seeds)| {
            let mut args = vec!["--threads", "1"];
            for seed in seeds {
                args.extend(["--seed", seed.as_str()]);
            }
            NodeProc::spawn(name, addr, &args)
        })
        .collect();
    for node in &mut nodes {
        node.wait_listening();
    }
    nodes
}

/// The members each node sees `up`, grouped: one entry per distinct view, with the nodes
/// that hold it.
fn views(nodes: &[NodeProc]) -> BTreeMap<Vec<String>, Vec<String>> {
    let mut views: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for node in nodes {
        let up = members(&node.addr, &[])
            .into_iter()
            .filter(|(_, status)| status == "up")
            .map(|(name, _)| name)
            .collect();
        views.entry(up).or_default().push(node.name.clone());
    }
    views
}

/// Waits until every node lists all of `nodes` up; on timeout, fails naming the islands.
fn wait_for_one_cluster(nodes: &[NodeProc], within: Duration) -> Duration {
    let started = Instant::now();
    let n = nodes.len();
    let mut pending: Vec<&NodeProc> = nodes.iter().collect();
    while let Some(node) = pending.last() {
        let up = members(&node.addr, &[])
            .values()
            .filter(|s| *s == "up")
            .count();
        if up == n {
            pending.pop();
            continue;
        }
        if started.elapsed() > within {
            let islands: Vec<String> = views(nodes)
                .into_iter()
                .map(|(view, holders)| {
                    format!(
                        "{} nodes see {} up: {:?}",
                        holders.len(),
                        view.len(),
                        holders
                    )
                })
                .collect();
            panic!(
                "{n} nodes are not one cluster after {within:?}:\n{}",
                islands.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Each node was seen complete once; all of them again, together.
    let views = views(nodes);
    assert_eq!(views.len(), 1, "views diverged again: {views:?}");
    started.elapsed()
}

#[test]
fn forty_nodes_started_at_once_form_one_cluster() {
    const NODES: usize = 40;
    let seed: u64 = rand::random();
    let mut rng = StdRng::seed_from_u64(seed);
    eprintln!("seeds drawn with rng seed {seed}");
    let addrs = free_addrs(NODES);
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i}")).collect();
    // Each node names one random earlier node as its seed; they start last first, so most
    // seeds are not listening yet when their nodes first try them.
    let seeds: Vec<Vec<String>> = (0..NODES)
        .map(|i| match i {
            0 => Vec::new(),
            i => vec![addrs[rng.random_range(0..i)].clone()],
        })
        .collect();
    let order = |v: &[String]| -> Vec<String> { v.iter().rev().cloned().collect() };
    let seeds_last_first: Vec<Vec<String>> = seeds.into_iter().rev().collect();
    let nodes = spawn_all(&order(&names), &order(&addrs), &seeds_last_first);
    let took = wait_for_one_cluster(&nodes, CONVERGE_WITHIN);
    eprintln!("{NODES} nodes started at once: one cluster after {took:?}");
}

#[test]
fn a_seed_that_comes_up_late_merges_two_groups() {
    const GROUP: usize = 8;
    let addrs = free_addrs(2 * GROUP);
    let (a, b) = addrs.split_at(GROUP);
    // Group a: a0 first of its cluster; the others name a0 and b0, which is not up yet.
    let a_names: Vec<String> = (0..GROUP).map(|i| format!("a{i}")).collect();
    let a_seeds: Vec<Vec<String>> = (0..GROUP)
        .map(|i| match i {
            0 => Vec::new(),
            _ => vec![a[0].clone(), b[0].clone()],
        })
        .collect();
    let mut nodes = spawn_all(&a_names, a, &a_seeds);
    wait_for_one_cluster(&nodes, CONVERGE_WITHIN);
    // Group b, later: b0 first of its own cluster, the others name only b0.
    let b_names: Vec<String> = (0..GROUP).map(|i| format!("b{i}")).collect();
    let b_seeds: Vec<Vec<String>> = (0..GROUP)
        .map(|i| match i {
            0 => Vec::new(),
            _ => vec![b[0].clone()],
        })
        .collect();
    nodes.extend(spawn_all(&b_names, b, &b_seeds));
    let took = wait_for_one_cluster(&nodes, CONVERGE_WITHIN);
    eprintln!("the two groups merged {took:?} after the second started");
}
