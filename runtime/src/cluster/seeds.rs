//! Seed loops: each keeps the node linked to every address one seed resolves to (a DNS name
//! may stand for many nodes), redialing with capped, jittered exponential backoff. A loop
//! stops when the node stops taking new work (the intake token).

use std::time::Duration;

use tracing::{debug, warn};

use super::links::{Links, WeakLinks};
use super::target::resolve;
use crate::link::Connection;
use crate::RpcError;

/// Dials `seed` with exponential backoff and jitter, capped at `reconnect_max`, waits while
/// linked, and starts over when a link drops, until the node stops.
pub(crate) async fn seed_loop(links: WeakLinks, seed: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(node) = links.upgrade() else { return };
        let intake = node.intake().clone();
        if intake.is_cancelled() {
            return;
        }
        let max = node.config().reconnect_max;
        let linked = link_all(&node, &seed).await;
        drop(node);
        if linked.is_empty() {
            let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(max);
        } else {
            backoff = Duration::from_millis(50);
            let any_closed =
                futures_util::future::select_all(linked.iter().map(|c| Box::pin(c.closed())));
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = any_closed => {}
            }
        }
    }
}

/// Dials every address `seed` resolves to; returns the links it has.
async fn link_all(links: &Links, seed: &str) -> Vec<Connection> {
    let addrs = match resolve(seed).await {
        Ok(addrs) => addrs,
        Err(error) => {
            debug!(%seed, %error, "seed not resolvable yet");
            return Vec::new();
        }
    };
    let dials = addrs.into_iter().map(|addr| links.dial(addr));
    let mut linked = Vec::new();
    for result in futures_util::future::join_all(dials).await {
        match result {
            Ok(conn) => linked.push(conn),
            // A refusal will not go away by itself: say it where an operator looks.
            Err(error @ RpcError::Refused { .. }) => warn!(%seed, %error, "seed refused this node"),
            Err(error) => debug!(%seed, %error, "seed not reachable yet"),
        }
    }
    linked
}
