//! How a node's two timing settings become SWIM's: the failure detector waits up to about
//! half of `down_after` for an answer (so a link that is slow but well under `down_after` is
//! not suspected), a suspect has `down_after` to prove it is alive, and news spreads every
//! `heartbeat`. docs/MEMBERSHIP.md has the table.

use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

use foca::{Config, PeriodicParams};

use crate::wire::swim::MAX_SWIM_PAYLOAD;

/// Members down or left for this many `down_after` periods are forgotten (5 minutes with
/// the defaults).
pub(crate) const FORGET_AFTER: u32 = 60;

/// foca's configuration for `heartbeat` and `down_after`.
pub fn swim_config(heartbeat: Duration, down_after: Duration) -> Config {
    // `down_after` is more than twice `heartbeat` (the configuration is checked).
    let probe_period = down_after.mul_f64(0.6);
    let probe_rtt = down_after.mul_f64(0.55).min(probe_period.mul_f64(0.9));
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
        // log10(cluster size) × 4 for a thousand members, as memberlist does.
        max_transmissions: NonZeroU8::new(12).unwrap_or(NonZeroU8::MIN),
        suspect_to_down_after: down_after,
        remove_down_after: down_after * FORGET_AFTER,
        max_packet_size: NonZeroUsize::new(MAX_SWIM_PAYLOAD).unwrap_or(NonZeroUsize::MIN),
        notify_down_members: true,
        // Asking a member for more members: for big clusters, not often (30 s by default).
        periodic_announce: every(heartbeat * 30, 1),
        periodic_announce_to_down_members: every(probe_period * 2, 2),
        // News spreads in about log4(members) heartbeats; there is none to send when idle.
        periodic_gossip: every(heartbeat, 4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_link_under_down_after_is_not_suspected() {
        let ms = Duration::from_millis;
        let fast = swim_config(ms(100), ms(1000));
        assert_eq!(fast.probe_period, ms(600));
        assert_eq!(fast.probe_rtt, ms(540));
        assert!(
            fast.probe_rtt > ms(400),
            "a 400 ms round trip is answered in time"
        );
        assert_eq!(fast.suspect_to_down_after, ms(1000));
        let defaults = swim_config(Duration::from_secs(1), Duration::from_secs(5));
        assert_eq!(defaults.probe_period, Duration::from_secs(3));
        assert!(defaults.probe_rtt < defaults.probe_period);
    }
}
