//! The node's budget of virtual-actor activations ([`Budget`], `--max-activations`): a
//! caller that names a new key with every call would otherwise grow a node's memory until
//! the idle timer, minutes later. Past nine tenths of the budget, the shedding loop
//! ([`shed`]) deactivates the least recently called down to eight tenths (at least a tenth
//! of the budget at a time; their deactivate hooks run, as Orleans and Akka passivate
//! under pressure); a new activation that finds the budget full
//! is refused `overloaded` until shedding has made room. The loop stops with the node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::hosted::Hosted;
use crate::link::LogLimit;

/// How many activations this node may hold, and how many it holds.
pub(crate) struct Budget {
    held: AtomicUsize,
    max: usize,
    /// Woken when the budget runs low.
    pressure: Notify,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Budget {
            held: AtomicUsize::new(0),
            max: max.max(1),
            pressure: Notify::new(),
        }
    }

    /// Takes room for one activation; false when the budget is full (shedding is asked for
    /// either way once it runs low).
    pub(crate) fn take(&self) -> bool {
        let held = self.held.fetch_add(1, Ordering::Relaxed);
        if held >= self.max {
            self.held.fetch_sub(1, Ordering::Relaxed);
            self.pressure.notify_one();
            return false;
        }
        if held + 1 >= self.high_water() {
            self.pressure.notify_one();
        }
        true
    }

    /// Takes room whatever the budget says (a singleton must run).
    pub(crate) fn take_anyway(&self) {
        self.held.fetch_add(1, Ordering::Relaxed);
    }

    /// An activation ended.
    pub(crate) fn give_back(&self) {
        self.held.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// Shedding starts past nine tenths of the budget.
    fn high_water(&self) -> usize {
        (self.max / 10 * 9).max(1)
    }
}

/// While the node runs: whenever the budget runs low, deactivates the least recently called
/// activations across every hosted type, down to eight tenths of the budget.
pub(crate) async fn shed(
    budget: Arc<Budget>,
    types: impl Fn() -> Vec<Arc<dyn Hosted>>,
    stop: CancellationToken,
) {
    let reports = LogLimit::default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = budget.pressure.notified() => {}
        }
        if budget.held() < budget.high_water() {
            continue;
        }
        let want = (budget.held())
            .saturating_sub(budget.max / 10 * 8)
            .max(budget.max / 10)
            .max(1);
        let mut all: Vec<(Instant, usize, Arc<str>)> = Vec::new();
        let hosted = types();
        for (i, kind) in hosted.iter().enumerate() {
            all.extend(kind.last_calls().into_iter().map(|(at, key)| (at, i, key)));
        }
        if all.len() > want {
            all.select_nth_unstable_by_key(want, |(at, _, _)| *at);
            all.truncate(want);
        }
        let shed = all.len();
        for (i, kind) in hosted.iter().enumerate() {
            let keys: Vec<Arc<str>> = (all.iter())
                .filter(|(_, k, _)| *k == i)
                .map(|(_, _, key)| key.clone())
                .collect();
            kind.shed(&keys);
        }
        let held = budget.held();
        match reports.admit() {
            Some(more) => info!(
                shed,
                held,
                max = budget.max,
                more,
                "deactivating the least recently called virtual actors: the node holds nearly its --max-activations"
            ),
            None => debug!(shed, held, "deactivating the least recently called virtual actors"),
        }
        // Their hooks run meanwhile; a pressure that lasts is looked at again shortly.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
}
