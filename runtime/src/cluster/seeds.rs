//! Seeds are rendezvous points, always. While any address a seed resolves to is neither this
//! node nor a live member of its view, the node announces itself there, with capped,
//! jittered exponential backoff: short while it is alone ([`Seeds::reconnect_max`]), longer
//! once it has joined ([`Seeds::rendezvous_max`]). So nodes started all at once, a seed that
//! comes up late, or two groups split at bootstrap end as one cluster: a group that formed
//! without its seed keeps knocking until the seed is in its view. A seed met that way is
//! handed to the state sync, which swaps whole member lists with it: two clusters that meet
//! merge at once rather than one gossip at a time.
//!
//! Once every seed is a member the loop waits for the view to change, resolving names again
//! every [`Seeds::recheck`] (a DNS name may come to stand for new nodes). A seed that does
//! not resolve is reported at once, one that does not answer while the node is alone after
//! [`QUIET_FOR`], and then every [`REPORT_EVERY`]. The first answer marks the node joined
//! (`/ready`). The loop stops with the intake token.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::membership::{Membership, Snapshot};
use super::target::resolve;

/// How often a seed that keeps failing is reported again.
const REPORT_EVERY: Duration = Duration::from_secs(30);

/// A seed silent for this long while this node is alone is worth a warning.
const QUIET_FOR: Duration = Duration::from_secs(10);

/// The first wait between two rounds; doubled after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// What the loop needs.
pub(crate) struct Seeds {
    pub(crate) seeds: Vec<String>,
    pub(crate) membership: Membership,
    /// How long to wait for an answer before calling an announce unanswered.
    pub(crate) answer_within: Duration,
    /// Longest wait between two rounds while this node is alone.
    pub(crate) reconnect_max: Duration,
    /// Longest wait between two announces to a seed that is not a member, once this node
    /// has joined a cluster (it may be the wrong half of one).
    pub(crate) rendezvous_max: Duration,
    /// How often seeds are resolved again while every one is a member.
    pub(crate) recheck: Duration,
    /// This node's addresses (advertised, bound): seeds that resolve only to them mean
    /// this node is the first of its cluster.
    pub(crate) me: Vec<SocketAddr>,
    /// Set once the node has joined (or is the first): what `/ready` reports.
    pub(crate) joined: super::Joined,
    /// Seeds this node has just met, for the state sync to swap member lists with.
    pub(crate) met: mpsc::Sender<SocketAddr>,
}

/// When to report a failing seed: a name that does not resolve at once; a seed that does not
/// answer once it has been silent for [`QUIET_FOR`] (nodes started together wait for each
/// other for a moment, which is no news); then every [`REPORT_EVERY`] while it lasts.
#[derive(Default)]
struct Reports {
    /// The first failure of the current run of failures.
    since: Option<Instant>,
    next: Option<Instant>,
}

impl Reports {
    fn failed(&mut self, seed: &str, error: &dyn std::fmt::Display, after: Duration) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        if now - since >= after && self.next.is_none_or(|at| now >= at) {
            warn!(%seed, %error, "seed not reachable yet; retrying (RUST_LOG=debug shows every attempt)");
            self.next = Some(now + REPORT_EVERY);
        } else {
            debug!(%seed, %error, "seed not reachable yet");
        }
    }

    fn reached(&mut self, seed: &str) {
        self.since = None;
        if self.next.take().is_some() {
            info!(%seed, "joined the cluster through its seeds");
        }
    }
}

/// What the seeds resolved to in one round.
struct Resolved {
    /// Every address, with the index of the seed it came from.
    addrs: Vec<(usize, SocketAddr)>,
    /// Whether each seed resolved.
    ok: Vec<bool>,
}

impl Resolved {
    /// The addresses that are neither this node nor a live member of `view`.
    fn pending(&self, view: &Snapshot, me: &[SocketAddr]) -> HashSet<SocketAddr> {
        let live: HashSet<SocketAddr> = (view.members.iter())
            .filter(|m| m.status.is_live())
            .filter_map(|m| m.addr)
            .collect();
        (self.addrs.iter())
            .map(|(_, addr)| *addr)
            .filter(|addr| !me.contains(addr) && !live.contains(addr))
            .collect()
    }
}

/// Runs until `intake` is cancelled; see the module doc.
pub(crate) async fn run(seeds: Seeds, intake: CancellationToken) {
    let mut reports: Vec<Reports> = seeds.seeds.iter().map(|_| Reports::default()).collect();
    let mut active = seeds.membership.active();
    let mut changes = seeds.membership.directory().changes();
    let mut backoff = FIRST_BACKOFF;
    // Seeds that were not members at the last round: those that are now were just met.
    let mut unmet: HashSet<SocketAddr> = HashSet::new();
    loop {
        let resolved = resolve_all(&seeds.seeds, &mut reports).await;
        // The first node of a cluster (its seeds name only itself, as a StatefulSet's
        // headless service does for its first pod) has joined all there is.
        let alone_by_design = resolved.ok.iter().all(|ok| *ok)
            && !resolved.addrs.is_empty()
            && resolved.addrs.iter().all(|(_, a)| seeds.me.contains(a));
        if alone_by_design && seeds.joined.mark() {
            info!("the seeds name only this node: it is the first of its cluster");
        }
        let pending = resolved.pending(&seeds.membership.directory().snapshot(), &seeds.me);
        let alone = *active.borrow() == 0;
        // Reached by another node (perhaps while this one waited between two rounds): as
        // joined as an answer from a seed would make it.
        if !alone && seeds.joined.mark() {
            for (seed, report) in seeds.seeds.iter().zip(&mut reports) {
                report.reached(seed);
            }
        }
        // A seed that became a member while this node was already in a cluster may have
        // brought a cluster of its own. (One met while alone is a plain join: the sync loop
        // syncs after every join.)
        for addr in unmet.difference(&pending) {
            debug!(%addr, "met a seed after joining: swapping member lists with it");
            let _ = seeds.met.try_send(*addr); // full: the periodic sync will do
        }
        unmet = if alone {
            HashSet::new()
        } else {
            pending.clone()
        };
        let unresolved = resolved.ok.iter().any(|ok| !ok);
        if pending.is_empty() && !unresolved {
            // Every seed is a member (or this node): nothing to do until that changes.
            backoff = FIRST_BACKOFF;
            let until = Instant::now() + seeds.recheck;
            let changed = wait_for_pending(&seeds, &resolved, &mut changes, until);
            tokio::select! {
                _ = intake.cancelled() => return,
                _ = changed => continue,
            }
        }
        if !pending.is_empty() {
            seeds.membership.announce(pending.iter().copied().collect());
        }
        if alone {
            let answered = tokio::time::timeout(seeds.answer_within, active.wait_for(|n| *n > 0));
            tokio::select! {
                _ = intake.cancelled() => return,
                answered = answered => match answered {
                    Ok(Ok(_)) => {
                        seeds.joined.mark();
                        for (seed, report) in seeds.seeds.iter().zip(&mut reports) {
                            report.reached(seed);
                        }
                        continue;
                    }
                    Ok(Err(_)) => return, // membership stopped
                    Err(_) => {}
                },
            }
            for (i, (seed, report)) in seeds.seeds.iter().zip(&mut reports).enumerate() {
                let tried = resolved
                    .addrs
                    .iter()
                    .any(|(s, a)| *s == i && pending.contains(a));
                if tried {
                    report.failed(seed, &"no answer from any of its addresses", QUIET_FOR);
                }
            }
        }
        let jitter = backoff.mul_f64(rand::random::<f64>() * 0.5);
        tokio::select! {
            _ = intake.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
            // Alone again: start over quickly.
            lost = active.wait_for(|n| *n == 0), if !alone => {
                if lost.is_err() { return }
                backoff = FIRST_BACKOFF;
                continue;
            }
        }
        let cap = if alone {
            seeds.reconnect_max
        } else {
            seeds.rendezvous_max
        };
        backoff = (backoff * 2).min(cap.max(FIRST_BACKOFF));
    }
}

/// Resolves every seed (a host name at every round: a headless service or a round-robin
/// DNS name may stand for other nodes each time), reporting those that do not resolve.
async fn resolve_all(seeds: &[String], reports: &mut [Reports]) -> Resolved {
    let mut resolved = Resolved {
        addrs: Vec::new(),
        ok: Vec::with_capacity(seeds.len()),
    };
    for (i, (seed, report)) in seeds.iter().zip(reports).enumerate() {
        match resolve(seed).await {
            Ok(found) => {
                resolved.ok.push(true);
                resolved.addrs.extend(found.into_iter().map(|a| (i, a)));
            }
            Err(error) => {
                resolved.ok.push(false);
                report.failed(seed, &error, Duration::ZERO);
            }
        }
    }
    resolved
}

/// Returns when one of `resolved`'s addresses stops being a live member, or at `until`.
async fn wait_for_pending(
    seeds: &Seeds,
    resolved: &Resolved,
    changes: &mut tokio::sync::watch::Receiver<u64>,
    until: Instant,
) {
    let directory = seeds.membership.directory();
    loop {
        if !resolved
            .pending(&directory.snapshot(), &seeds.me)
            .is_empty()
        {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::{Fake, Member, MemberStatus};
    use crate::wire::NodeId;

    const HEARTBEAT: Duration = Duration::from_secs(1);

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn member(port: u16, status: MemberStatus) -> Member {
        Member {
            name: format!("n{port}"),
            id: NodeId(u64::from(port)),
            incarnation: 1,
            addr: Some(addr(port)),
            status,
        }
    }

    /// A seed loop for a node at port 5000 whose seeds are ports 5001 and 5002.
    fn start() -> (
        Fake,
        mpsc::Receiver<SocketAddr>,
        CancellationToken,
        super::super::Joined,
    ) {
        let (membership, fake) = Membership::fake();
        let joined = super::super::Joined::new(false);
        let (met, met_rx) = mpsc::channel(16);
        let seeds = Seeds {
            seeds: vec!["127.0.0.1:5001".into(), "127.0.0.1:5002".into()],
            membership,
            answer_within: HEARTBEAT * 2,
            reconnect_max: HEARTBEAT * 2,
            rendezvous_max: HEARTBEAT * 10,
            recheck: HEARTBEAT * 30,
            me: vec![addr(5000)],
            joined: joined.clone(),
            met,
        };
        let stop = CancellationToken::new();
        tokio::spawn(run(seeds, stop.clone()));
        (fake, met_rx, stop, joined)
    }

    /// Every announce asked for in the next `span`, with when.
    async fn announces(fake: &mut Fake, span: Duration) -> Vec<(Duration, Vec<SocketAddr>)> {
        let start = Instant::now();
        let mut seen = Vec::new();
        while start.elapsed() < span {
            tokio::time::sleep(Duration::from_millis(10)).await;
            while let Some(mut addrs) = fake.announced() {
                addrs.sort();
                seen.push((start.elapsed(), addrs));
            }
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_node_that_joined_without_its_seed_keeps_knocking_until_the_seed_is_a_member() {
        let (mut fake, mut met, stop, joined) = start();
        // Alone: both seeds, again and again.
        let early = announces(&mut fake, Duration::from_secs(5)).await;
        assert!(early.len() >= 2, "{early:?}");
        assert_eq!(early[0].1, vec![addr(5001), addr(5002)]);
        // Someone else reached this node and 5001 is a member; 5002 is not, yet.
        fake.set_view(
            vec![
                member(5000, MemberStatus::Up),
                member(5001, MemberStatus::Up),
            ],
            1,
        );
        let knocks = announces(&mut fake, Duration::from_secs(120)).await;
        assert!(joined.is(), "reached by another: joined (/ready)");
        assert!(
            knocks.iter().all(|(_, addrs)| *addrs == vec![addr(5002)]),
            "{knocks:?}"
        );
        // Backing off, but never longer than rendezvous_max (+ half of it in jitter).
        let gaps: Vec<Duration> = knocks.windows(2).map(|w| w[1].0 - w[0].0).collect();
        assert!(knocks.len() >= 8, "{knocks:?}");
        assert!(gaps.iter().all(|g| *g <= HEARTBEAT * 15), "{gaps:?}");
        assert!(gaps.last() > gaps.first(), "{gaps:?}");
        // The seed becomes a member: met (for the state sync), and no more announces.
        fake.set_view(
            vec![
                member(5000, MemberStatus::Up),
                member(5001, MemberStatus::Up),
                member(5002, MemberStatus::Up),
            ],
            2,
        );
        let quiet = announces(&mut fake, Duration::from_secs(120)).await;
        assert!(quiet.is_empty(), "{quiet:?}");
        assert_eq!(met.try_recv().ok(), Some(addr(5002)));
        // It goes down: knocking again, from short intervals.
        fake.set_view(
            vec![
                member(5000, MemberStatus::Up),
                member(5001, MemberStatus::Up),
                member(5002, MemberStatus::Down),
            ],
            1,
        );
        let again = announces(&mut fake, Duration::from_secs(3)).await;
        assert!(again.len() >= 3, "{again:?}");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_seed_met_while_alone_is_a_plain_join() {
        let (mut fake, mut met, stop, _) = start();
        announces(&mut fake, Duration::from_secs(1)).await;
        fake.set_view(
            vec![
                member(5000, MemberStatus::Up),
                member(5001, MemberStatus::Up),
                member(5002, MemberStatus::Up),
            ],
            2,
        );
        let quiet = announces(&mut fake, Duration::from_secs(60)).await;
        assert!(quiet.is_empty(), "{quiet:?}");
        assert!(
            met.try_recv().is_err(),
            "the sync loop syncs after a join anyway"
        );
        stop.cancel();
    }
}
