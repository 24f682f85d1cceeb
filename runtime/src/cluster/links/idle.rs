//! Closing idle links: a link on which no call ran either way for `link_idle` is closed
//! with a goodbye that does not say leaving; the next call opens a new one. Stops with the
//! intake token.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;
use tracing::debug;

use super::Links;

impl Links {
    /// Closes links to nodes on which no call went either way for `idle`, until the intake
    /// token is cancelled. A link is looked at four times per `idle`, so it closes between
    /// 0.75 × `idle` and 1.25 × `idle` after its last call ended (a call is seen running
    /// at one look and gone at the next).
    pub(crate) async fn reap_idle(self, idle: Duration) {
        let mut tick = tokio::time::interval(idle / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Connection id → (activity count, since when it has not changed).
        let mut seen: HashMap<u64, (u64, Instant)> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.inner.intake.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let mut next = HashMap::with_capacity(seen.len());
            for conn in self.peers().list() {
                let id = conn.id();
                let (count, busy) = conn.activity();
                // A call still running is activity: idleness counts from its end.
                let since = match seen.get(&id) {
                    Some((last, since)) if *last == count && !busy => *since,
                    _ => now,
                };
                if now.duration_since(since) >= idle && conn.close_if_idle() {
                    debug!(peer = %conn.peer().name, ?idle, "closed an idle link");
                    continue;
                }
                next.insert(id, (count, since));
            }
            seen = next;
        }
    }
}
