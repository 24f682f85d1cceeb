//! The checker across hosts: three network namespaces on one switch, each running a real
//! node, their state in a PostgreSQL server this test starts and every host reaches. The
//! nemesis takes turns: it cuts one host off from the other two — both sides go on, each
//! serving the keys it now thinks it owns, so two activations of a key write at once — and
//! joins it again, or it kills a key's owner and starts it again. The clients call from the
//! test's own namespace, plugged into the same switch.
//!
//! With the test-only switch `MESHRPC_TEST_UNSAFE=no-version-check` (a write names the
//! version stored just before it, not the one its activation loaded) the stale side of a
//! partition overwrites the other's increments, and the checker finds values handed out
//! twice. Where namespaces or PostgreSQL are missing, the tests say so and skip.

use std::sync::Mutex;
use std::time::Duration;

use super::{check_secs, one_at_a_time, run, Cluster, Verdict};
use crate::support::lan::Lan;
use crate::support::postgres::Server;

const HOSTS: usize = 3;

/// The switch, the store and the nodes; `None` (saying why) where they cannot be had.
fn hosts(test: &str, unsafe_switch: Option<&'static str>) -> Option<(Lan, Server, Cluster)> {
    let mut lan = Lan::build(HOSTS)?;
    let at = lan.plug_in_the_test();
    let server = match Server::start_on(&at, Some(&lan.network())) {
        Ok(server) => server,
        Err(why) => {
            eprintln!("SKIPPED {test}: cannot start PostgreSQL: {why}");
            return None;
        }
    };
    let addrs = (1..=HOSTS)
        .map(|i| format!("{}:4000", lan.addr(i)))
        .collect();
    let netns = (1..=HOSTS).map(|i| Some(lan.host(i).to_owned())).collect();
    let cluster = Cluster::start(addrs, netns, server.url.clone(), unsafe_switch);
    cluster.wait_whole("the three hosts to form one cluster");
    Some((lan, server, cluster))
}

/// Partitions and kills, in turns, for `secs` (or until a duplicate, with a switch).
fn faults(test: &str, unsafe_switch: Option<&'static str>, secs: Duration) -> Option<Verdict> {
    let (lan, server, cluster) = hosts(test, unsafe_switch)?;
    let nodes = cluster.nodes();
    let cluster = Mutex::new(cluster);
    let mut round = 0u32;
    let verdict = run(
        nodes,
        secs,
        unsafe_switch.is_some(),
        |recorder| {
            std::thread::sleep(Duration::from_millis(rand::random_range(2000..4000)));
            round += 1;
            // Partitions twice as often as kills, which the loopback runs cover.
            if !round.is_multiple_of(3) {
                let alone = rand::random_range(1..=HOSTS);
                let others: Vec<usize> = (1..=HOSTS).filter(|h| *h != alone).collect();
                for &other in &others {
                    lan.cut(alone, other, true);
                }
                let name = cluster.lock().unwrap().name(alone - 1).to_owned();
                recorder.fault(format!("partition: {name} cut off from the others"));
                // Long enough, often, for each side to find the other down (2 s by default).
                std::thread::sleep(Duration::from_millis(rand::random_range(1000..8000)));
                for &other in &others {
                    lan.cut(alone, other, false);
                }
                recorder.fault(format!("partition healed: {name} joined again"));
            } else {
                cluster.lock().unwrap().kill_and_restart(recorder);
            }
        },
        |recorder| {
            let cluster = cluster.lock().unwrap();
            cluster.wait_whole("the cluster to be whole again");
            recorder.fault("healed".to_owned());
        },
    );
    drop(cluster);
    drop(server);
    drop(lan);
    Some(verdict)
}

#[test]
fn partitions_and_kills_on_postgresql_lose_nothing_acknowledged() {
    let _one = one_at_a_time();
    let test = "partitions_and_kills_on_postgresql_lose_nothing_acknowledged";
    let Some(verdict) = faults(test, None, check_secs()) else {
        return;
    };
    assert!(verdict.valid(), "{verdict}");
    assert!(
        verdict.ok > 500,
        "too few acknowledged calls to mean much: {verdict}"
    );
    assert!(
        verdict.faults >= 5,
        "too few faults to mean much: {verdict}"
    );
}

#[test]
fn the_checker_catches_a_stale_activation_without_the_version_check() {
    if !cfg!(debug_assertions) {
        eprintln!("SKIPPED: the test-only switch exists in debug builds only");
        return;
    }
    let _one = one_at_a_time();
    let test = "the_checker_catches_a_stale_activation_without_the_version_check";
    let Some(verdict) = faults(test, Some("no-version-check"), Duration::from_secs(60)) else {
        return;
    };
    assert!(
        !verdict.valid(),
        "the checker found nothing wrong without the version check: {verdict}"
    );
}
