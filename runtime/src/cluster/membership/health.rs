//! This node's own health as its failure detector sees it: Lifeguard's "local health
//! awareness" (memberlist's `awareness`). A node starved of CPU — a thousand processes
//! starting on two cores, a long GC-like pause, a stalled VM — answers probes late and hears
//! the answers to its own probes late, and without this it would blame the others for its
//! own slowness: suspect them, declare them down, and make them rejoin, which is more news
//! to spread and more CPU spent, which starves everyone further.
//!
//! The evidence is direct: how late the actor's own timers fire. Each probe period ends
//! with a verdict: if a timer fired later than a quarter of `probe_rtt`, the score rises by
//! one, or at once to the lag in quarter round trips if that is more; a period without such
//! lag lowers it by one. foca's probe, indirect-probe and suspicion timers are scheduled
//! `score + 1` times later, up to [`MAX_MULTIPLIER`] times: a starved node waits longer
//! before it suspects and before it declares down, so the member it probes gets time to
//! answer and to refute. A healthy node's score is 0 and its timings are exactly the
//! configured ones. Plain data, no clock of its own: the actor feeds it lags, the tests
//! drive it directly.
//!
//! (Counting only lags over half a round trip, as noise-proof as it sounds, let a
//! thousand-node start flap five to ten times as much: docs/MEMBERSHIP.md, "At scale".)

use std::time::Duration;

use foca::Timer;

/// The most foca's failure-detection timers are stretched (memberlist's default too).
pub(crate) const MAX_MULTIPLIER: u32 = 8;

/// See the module doc.
#[derive(Debug)]
pub(crate) struct Health {
    /// 0 (healthy) to `MAX_MULTIPLIER - 1`.
    score: u32,
    /// A timer later than this is evidence of starvation.
    threshold: Duration,
    /// The latest a timer fired in the current period.
    worst: Duration,
}

/// What a period's verdict changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// The score left 0: the node is slow.
    Degraded,
    /// The score is back at 0.
    Recovered,
}

impl Health {
    /// Health for a detector that waits `probe_rtt` for an answer.
    pub(crate) fn new(probe_rtt: Duration) -> Self {
        Health {
            score: 0,
            threshold: probe_rtt / 4,
            worst: Duration::ZERO,
        }
    }

    /// A timer (or the period's own tick) fired `lag` after it was due.
    pub(crate) fn late(&mut self, lag: Duration) {
        self.worst = self.worst.max(lag);
    }

    /// Ends a probe period: its worst lag raises or lowers the score.
    pub(crate) fn period(&mut self) -> Option<Change> {
        let was = self.score;
        let worst = std::mem::take(&mut self.worst);
        let lag = if self.threshold.is_zero() {
            0
        } else {
            u32::try_from(worst.as_nanos() / self.threshold.as_nanos()).unwrap_or(u32::MAX)
        };
        self.score = if lag > 0 {
            (self.score + 1).max(lag).min(MAX_MULTIPLIER - 1)
        } else {
            self.score.saturating_sub(1)
        };
        match (was, self.score) {
            (0, 1..) => Some(Change::Degraded),
            (1.., 0) => Some(Change::Recovered),
            _ => None,
        }
    }

    /// How many times foca's failure-detection timers are stretched now.
    pub(crate) fn multiplier(&self) -> u32 {
        self.score + 1
    }

    /// When foca asked for `timer` in `after`: failure detection later when this node is
    /// slow, everything else (gossip, announces, forgetting) as asked.
    pub(crate) fn delay<T>(&self, timer: &Timer<T>, after: Duration) -> Duration {
        match timer {
            Timer::ProbeRandomMember(_)
            | Timer::SendIndirectProbe { .. }
            | Timer::ChangeSuspectToDown { .. } => after.saturating_mul(self.multiplier()),
            _ => after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(1000);

    fn probe() -> Timer<u8> {
        Timer::ProbeRandomMember(0)
    }

    #[test]
    fn a_healthy_node_keeps_the_configured_timings() {
        let mut health = Health::new(RTT);
        health.late(Duration::from_millis(200));
        assert_eq!(health.period(), None);
        assert_eq!(health.multiplier(), 1);
        let second = Duration::from_secs(1);
        assert_eq!(health.delay(&probe(), second), second);
    }

    #[test]
    fn lag_stretches_failure_detection_and_fades_a_period_at_a_time() {
        let mut health = Health::new(RTT);
        // A timer a second late (four quarter round trips): at once four levels up.
        health.late(Duration::from_millis(1000));
        assert_eq!(health.period(), Some(Change::Degraded));
        assert_eq!(health.multiplier(), 5);
        let second = Duration::from_secs(1);
        assert_eq!(health.delay(&probe(), second), second * 5);
        let suspect = Timer::ChangeSuspectToDown {
            member_id: 1u8,
            incarnation: 0,
            token: 0,
        };
        assert_eq!(health.delay(&suspect, second), second * 5);
        // Gossip and announces are not failure detection.
        assert_eq!(
            health.delay(&Timer::<u8>::PeriodicGossip(0), second),
            second
        );
        // A little late again: still one more.
        health.late(Duration::from_millis(300));
        assert_eq!(health.period(), None);
        assert_eq!(health.multiplier(), 6);
        for expected in (1..=5).rev() {
            assert_eq!(health.multiplier(), expected + 1);
            let change = health.period();
            assert_eq!(change.is_some(), expected == 1, "{change:?}");
        }
        assert_eq!(health.multiplier(), 1);
    }

    #[test]
    fn the_stretch_is_bounded() {
        let mut health = Health::new(RTT);
        health.late(Duration::from_secs(3600));
        health.period();
        assert_eq!(health.multiplier(), MAX_MULTIPLIER);
        for _ in 0..10 {
            health.late(RTT);
            health.period();
        }
        assert_eq!(health.multiplier(), MAX_MULTIPLIER);
    }
}
