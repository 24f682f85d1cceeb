//! Joining through seeds: while this node knows no live member, it announces itself to every
//! address its seeds resolve to (a DNS name may stand for many nodes), with capped, jittered
//! exponential backoff; once one answers (the node has joined: `/ready`), membership takes over (SWIM spreads the rest of
//! the cluster), and the loop waits until the node is alone again. A seed that does not
//! resolve or does not answer is reported at its first failure and then every
//! [`REPORT_EVERY`] while it lasts. The loop stops with the intake token.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::membership::Membership;
use super::target::resolve;

/// How often a seed that keeps failing is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// What the loop needs.
pub(crate) struct Seeds {
    pub(crate) seeds: Vec<String>,
    pub(crate) membership: Membership,
    /// How long to wait for an answer before calling an announce unanswered.
    pub(crate) answer_within: Duration,
    /// Longest wait between two rounds.
    pub(crate) reconnect_max: Duration,
    /// This node's addresses (advertised, bound): seeds that resolve only to them mean
    /// this node is the first of its cluster.
    pub(crate) me: Vec<SocketAddr>,
    /// Set once the node has joined (or is the first): what `/ready` reports.
    pub(crate) joined: Arc<AtomicBool>,
}

/// When to report a failing seed next: at once, then every [`REPORT_EVERY`].
#[derive(Default)]
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
            info!(%seed, "joined the cluster through its seeds");
        }
    }
}

/// Runs until `intake` is cancelled; see the module doc.
pub(crate) async fn run(seeds: Seeds, intake: CancellationToken) {
    let mut reports: Vec<Reports> = seeds.seeds.iter().map(|_| Reports::default()).collect();
    let mut active = seeds.membership.active();
    let mut backoff = Duration::from_millis(50);
    loop {
        // Joined: nothing to do until this node is alone again.
        let alone = active.wait_for(|n| *n == 0);
        tokio::select! {
            _ = intake.cancelled() => return,
            alone = alone => if alone.is_err() { return },
        }
        let mut addrs: Vec<SocketAddr> = Vec::new();
        let mut resolved = Vec::with_capacity(seeds.seeds.len());
        for (seed, report) in seeds.seeds.iter().zip(&mut reports) {
            match resolve(seed).await {
                Ok(found) => {
                    resolved.push(true);
                    addrs.extend(found);
                }
                Err(error) => {
                    resolved.push(false);
                    report.failed(seed, &error);
                }
            }
        }
        // The first node of a cluster (its seeds name only itself, as a StatefulSet's
        // headless service does for its first pod) has joined all there is.
        let alone_by_design = resolved.iter().all(|ok| *ok)
            && !addrs.is_empty()
            && addrs.iter().all(|a| seeds.me.contains(a));
        if alone_by_design && !seeds.joined.swap(true, Ordering::SeqCst) {
            info!("the seeds name only this node: it is the first of its cluster");
        }
        if !addrs.is_empty() {
            seeds.membership.announce(addrs);
        }
        let answered = tokio::time::timeout(seeds.answer_within, active.wait_for(|n| *n > 0));
        tokio::select! {
            _ = intake.cancelled() => return,
            answered = answered => match answered {
                Ok(Ok(_)) => {
                    seeds.joined.store(true, Ordering::SeqCst);
                    backoff = Duration::from_millis(50);
                    for (seed, report) in seeds.seeds.iter().zip(&mut reports) {
                        report.reached(seed);
                    }
                    continue;
                }
                Ok(Err(_)) => return, // membership stopped
                Err(_) => {}
            },
        }
        for ((seed, report), ok) in seeds.seeds.iter().zip(&mut reports).zip(resolved) {
            if ok {
                report.failed(seed, &"no answer from any of its addresses");
            }
        }
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
        tokio::select! {
            _ = intake.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(seeds.reconnect_max);
    }
}
