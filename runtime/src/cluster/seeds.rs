//! Seed loops: each keeps the node linked to every address one seed resolves to (a DNS name
//! may stand for many nodes), redialing with capped, jittered exponential backoff. A seed
//! that does not resolve or does not answer is reported at its first failure and then every
//! [`REPORT_EVERY`] while it lasts. A loop stops when the node stops taking new work (the
//! intake token).

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::links::{Links, WeakLinks};
use super::target::resolve;
use crate::link::Connection;
use crate::RpcError;

/// How often a seed that keeps failing is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// When to report a failing seed next: at once, then every [`REPORT_EVERY`].
struct Reports {
    next: Option<Instant>,
}

impl Reports {
    fn failed(&mut self, seed: &str, error: &dyn std::fmt::Display) {
        let now = Instant::now();
        if self.next.is_none_or(|at| now >= at) {
            warn!(%seed, %error, "seed not reachable yet; retrying (RUST_LOG=debug shows every attempt)");
            self.next = Some(now + REPORT_EVERY);
        } else {
            debug!(%seed, %error, "seed not reachable yet");
        }
    }

    fn reached(&mut self, seed: &str) {
        if self.next.take().is_some() {
            info!(%seed, "seed reached");
        }
    }
}

/// Dials `seed` with exponential backoff and jitter, capped at `reconnect_max`, waits while
/// linked, and starts over when a link drops, until the node stops.
pub(crate) async fn seed_loop(links: WeakLinks, seed: String) {
    let mut backoff = Duration::from_millis(50);
    let mut reports = Reports { next: None };
    loop {
        let Some(node) = links.upgrade() else { return };
        let intake = node.intake().clone();
        if intake.is_cancelled() {
            return;
        }
        let max = node.config().reconnect_max;
        let linked = link_all(&node, &seed, &mut reports).await;
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
async fn link_all(links: &Links, seed: &str, reports: &mut Reports) -> Vec<Connection> {
    let addrs = match resolve(seed).await {
        Ok(addrs) => addrs,
        Err(error) => {
            reports.failed(seed, &error);
            return Vec::new();
        }
    };
    let dials = addrs.into_iter().map(|addr| links.dial(addr));
    let mut linked = Vec::new();
    let mut failure = None;
    for result in futures_util::future::join_all(dials).await {
        match result {
            Ok(conn) => linked.push(conn),
            // A refusal will not go away by itself: say it every time.
            Err(error @ (RpcError::Refused { .. } | RpcError::Unauthenticated { .. })) => {
                warn!(%seed, %error, "seed refused this node")
            }
            Err(error) => failure = Some(error),
        }
    }
    match (linked.is_empty(), failure) {
        (true, Some(error)) => reports.failed(seed, &error),
        (false, _) => reports.reached(seed),
        (true, None) => {}
    }
    linked
}
