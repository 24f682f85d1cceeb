//! The shutdown sequence of a node, run once by [`super::Node::shutdown`]: tell the cluster
//! it leaves, stop taking new work, let running requests finish within the grace period, stop
//! the rest, say goodbye on every link, cancel every task and wait for all of them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::{info, warn};

use super::Core;

impl Core {
    /// True while any link has requests running here (or replies not yet written).
    fn busy(&self) -> bool {
        self.limits.node_inbound.load(Ordering::Relaxed) > 0
    }

    pub(super) async fn shutdown_sequence(&self) {
        info!(name = %self.config.name, "shutting down");
        // Virtual actors are handed over first (their save hooks run), so the next owners
        // load what this node saved; calls meanwhile are answered `moved` and retried.
        let grace = self.config.shutdown_grace;
        if tokio::time::timeout(grace, self.actors.close())
            .await
            .is_err()
        {
            warn!(
                ?grace,
                "virtual actors still deactivating after the grace period"
            );
        }
        // Members learn of the leave at once, so they stop sending work here.
        self.membership.leave().await;
        self.links.intake().cancel();
        let idle = async {
            while self.busy() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        if tokio::time::timeout(self.config.shutdown_grace, idle)
            .await
            .is_err()
        {
            warn!(grace = ?self.config.shutdown_grace, "requests still running after the grace period; stopping them");
        }
        self.handlers.stop.cancel();
        self.links.close_all("node shutting down", true);
        self.root.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        info!(name = %self.config.name, "stopped");
    }
}
