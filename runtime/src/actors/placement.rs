//! Where a virtual actor lives: rendezvous (highest-random-weight) hashing. Every host of a
//! type gets a score for each key, `score(type, key, node)`, and the key lives on the host
//! with the highest. Every node computes the same owner from the same list of hosts, with no
//! directory; a host joining takes only the keys it now scores highest on, and a host
//! leaving gives away only its own keys, each to its runner-up. Pure functions.
//!
//! The score is specified (not `std`'s hasher, which may change between Rust releases):
//! FNV-1a 64 over `type`, a zero byte and `key`, xored with the node id, then SplitMix64's
//! finalizer. docs/ACTORS.md states it for other implementations.

use crate::wire::NodeId;

/// FNV-1a 64 of `type`, a zero byte, then `key`: the part of the score shared by all hosts.
pub(crate) fn key_hash(kind: &str, key: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in kind.as_bytes().iter().chain(&[0u8]).chain(key.as_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// The score of `node` for the key whose [`key_hash`] is `key`.
pub(crate) fn score(key: u64, node: NodeId) -> u64 {
    let mut z = key ^ node.0;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The host with the highest score for `key` (ties, which need equal ids, go to the
/// larger id), or none when there is no host.
pub(crate) fn owner<I: IntoIterator<Item = NodeId>>(key: u64, hosts: I) -> Option<NodeId> {
    hosts
        .into_iter()
        .max_by_key(|&node| (score(key, node), node))
}

/// The host that would own `key` if `without` were not a host: where a key moves when its
/// owner goes, and where it was before `without` joined.
pub(crate) fn runner_up<I: IntoIterator<Item = NodeId>>(
    key: u64,
    hosts: I,
    without: NodeId,
) -> Option<NodeId> {
    owner(key, hosts.into_iter().filter(|&n| n != without))
}

/// The owner of a key hashing to `hash` among the live hosts of type `kind` in
/// `directory`'s current view, with its address.
pub(crate) fn owner_host(
    directory: &crate::cluster::membership::Directory,
    kind: &str,
    hash: u64,
) -> Option<crate::cluster::membership::Host> {
    directory.with_hosts(kind, |hosts| {
        let id = owner(hash, hosts.iter().map(|h| h.id))?;
        hosts.iter().find(|h| h.id == id).copied()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<NodeId> {
        (1..=n)
            .map(|i| NodeId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .collect()
    }

    #[test]
    fn every_node_computes_the_same_owner_whatever_the_order() {
        let hosts = ids(7);
        let mut reversed = hosts.clone();
        reversed.reverse();
        for k in 0..1000 {
            let key = key_hash("vcounter", &format!("user-{k}"));
            assert_eq!(owner(key, hosts.clone()), owner(key, reversed.clone()));
        }
        assert_eq!(owner(1, Vec::new()), None);
    }

    #[test]
    fn keys_spread_evenly_over_the_hosts() {
        let hosts = ids(5);
        let mut counts = std::collections::HashMap::new();
        for k in 0..10_000 {
            let key = key_hash("vcounter", &format!("user-{k}"));
            *counts.entry(owner(key, hosts.clone())).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        for (&host, &n) in &counts {
            assert!((1700..=2300).contains(&n), "{host:?} owns {n} of 10000");
        }
    }

    #[test]
    fn a_host_joining_or_leaving_moves_only_its_own_keys() {
        let hosts = ids(5);
        let newcomer = NodeId(42);
        let mut bigger = hosts.clone();
        bigger.push(newcomer);
        let (mut moved, total) = (0, 10_000);
        for k in 0..total {
            let key = key_hash("t", &k.to_string());
            let before = owner(key, hosts.clone());
            let after = owner(key, bigger.clone());
            if before != after {
                assert_eq!(after, Some(newcomer), "a key moved between two old hosts");
                assert_eq!(before, runner_up(key, bigger.clone(), newcomer));
                moved += 1;
            }
        }
        // About 1/6 of the keys move to the newcomer.
        assert!((1300..=2000).contains(&moved), "{moved} keys moved");
        // And when it leaves, exactly those move back.
        for k in 0..total {
            let key = key_hash("t", &k.to_string());
            if owner(key, bigger.clone()) != Some(newcomer) {
                assert_eq!(owner(key, bigger.clone()), owner(key, hosts.clone()));
            }
        }
    }

    #[test]
    fn the_score_is_the_specified_one() {
        // Fixed values: another implementation must compute the same owners.
        assert_eq!(key_hash("", ""), 0xaf63_bd4c_8601_b7df);
        assert_eq!(score(0, NodeId(0)), 0);
        assert_ne!(
            score(key_hash("a", "b"), NodeId(1)),
            score(key_hash("a", "b"), NodeId(2))
        );
        assert_ne!(key_hash("ab", "c"), key_hash("a", "bc"));
    }
}
