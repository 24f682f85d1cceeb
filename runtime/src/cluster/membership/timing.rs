//! How a node's two timing settings become SWIM's: a random member is probed every half of
//! `down_after`, the failure detector waits up to 0.45 of it for an answer (so a link that is
//! slow but well under `down_after` is not suspected), a suspect has `down_after` to prove it
//! is alive, and news spreads every [`GOSSIP_EVERY`] (or every `heartbeat`, if shorter).
//! docs/MEMBERSHIP.md has the table.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Config, PeriodicParams};

use crate::wire::swim::MAX_SWIM_PAYLOAD;

/// Members down or left for this many `down_after` periods are forgotten (5 minutes with
/// the defaults).
pub(crate) const FORGET_AFTER: u32 = 150;

/// News waits at most this long before it is pushed to a few members (memberlist's LAN
/// gossip interval): there is none to push in an idle cluster, so it costs nothing then, and
/// a verdict reaches a thousand members in about log4(1000) = 5 rounds, one second.
pub(crate) const GOSSIP_EVERY: Duration = Duration::from_millis(200);

/// foca's configuration for `heartbeat` and `down_after`.
pub fn swim_config(heartbeat: Duration, down_after: Duration) -> Config {
    // `down_after` is more than twice `heartbeat` (the configuration is checked).
    let probe_period = down_after / 2;
    let probe_rtt = down_after.mul_f64(0.45).min(probe_period.mul_f64(0.9));
    let every = |frequency: Duration, members: usize| {
        Some(PeriodicParams {
            frequency,
            num_members: NonZeroUsize::new(members).unwrap_or(NonZeroUsize::MIN),
        })
    };
    Config {
        probe_period,
        probe_rtt,
        num_indirect_probes: NonZeroUsize::new(3).unwrap_or(NonZeroUsize::MIN),
        // Raised with the cluster's size by the membership actor (`transmissions`).
        max_transmissions: transmissions(0),
        suspect_to_down_after: down_after,
        remove_down_after: down_after * FORGET_AFTER,
        max_packet_size: NonZeroUsize::new(MAX_SWIM_PAYLOAD).unwrap_or(NonZeroUsize::MIN),
        notify_down_members: true,
        // Asking a member for more members: for big clusters, not often (15 s by default).
        periodic_announce: every(heartbeat * 30, 1),
        periodic_announce_to_down_members: every(probe_period * 2, 2),
        // News spreads in about log4(members) rounds; there is none to send when idle.
        periodic_gossip: every(heartbeat.min(GOSSIP_EVERY), 4),
    }
}

/// How many times each node piggybacks an update, for a cluster of `members`.
///
/// Every node that knows an update sends it this many times to random members, so a member
/// receives it about that many times and misses it with probability about e^-T. In a join
/// storm of N members there are N² (member, update) pairs; T = 2 ln N + 3 keeps the expected
/// number of missed pairs, N² e^-T, under 0.05 — a miss waits for a state sync to be
/// repaired. memberlist scales the same way (4 log10 N); 12 at the least, 40 at the most:
/// 15 at 300 members, 17 at 1000, 22 at 10 000.
pub fn transmissions(members: usize) -> NonZeroU8 {
    let t = (2.0 * (members as f64 + 1.0).ln() + 3.0).ceil();
    NonZeroU8::new(t.clamp(12.0, 40.0) as u8).unwrap_or(NonZeroU8::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_link_under_down_after_is_not_suspected() {
        let ms = Duration::from_millis;
        let fast = swim_config(ms(100), ms(1000));
        assert_eq!(fast.probe_period, ms(500));
        assert_eq!(fast.probe_rtt, ms(450));
        assert!(
            fast.probe_rtt > ms(400),
            "a 400 ms round trip is answered in time"
        );
        assert_eq!(fast.suspect_to_down_after, ms(1000));
        let defaults = swim_config(ms(500), ms(2000));
        assert_eq!(defaults.probe_period, ms(1000));
        assert_eq!(defaults.probe_rtt, ms(900));
        assert!(defaults.probe_rtt < defaults.probe_period);
        let gossip = |c: &Config| c.periodic_gossip.as_ref().map(|p| p.frequency);
        assert_eq!(gossip(&defaults), Some(GOSSIP_EVERY));
        assert_eq!(
            gossip(&fast),
            Some(ms(100)),
            "never slower than the heartbeat"
        );
    }

    #[test]
    fn updates_are_sent_more_times_in_bigger_clusters() {
        let t = |n| transmissions(n).get();
        assert_eq!(t(0), 12);
        assert_eq!(t(100), 13);
        assert_eq!(t(300), 15);
        assert_eq!(t(1000), 17);
        assert_eq!(t(10_000), 22);
        assert_eq!(t(usize::MAX), 40);
        // Expected missed pairs in a storm of N joins stay under 0.05.
        for n in [300usize, 1000, 10_000] {
            let missed = (n * n) as f64 * (-f64::from(t(n))).exp();
            assert!(missed < 0.05, "{n} members: {missed}");
        }
    }
}
