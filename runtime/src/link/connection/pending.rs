//! The calls waiting for replies on one link: request id → waiter and deadline.
//!
//! Callers insert, the link's reader completes entries as responses arrive, and a sweeper
//! task fails entries whose deadline has passed with `timeout`. One sweeper per link,
//! asleep while nothing is pending, replaces a runtime timer per call (registering and
//! clearing a timer per call cost more than a sixth of a small call's CPU time under load);
//! deadlines are kept to within [`SWEEP_EVERY`]. When the link closes, [`Pending::clear`]
//! drops every waiter, which its caller sees as `disconnected`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Reply;
use crate::wire::ErrorKind;
use crate::wire::RemoteError;

/// How often the sweeper looks for expired calls while any are pending.
const SWEEP_EVERY: Duration = Duration::from_millis(5);

struct Waiter {
    tx: oneshot::Sender<Reply>,
    deadline: Instant,
}

type Map = HashMap<u64, Waiter, BuildHasherDefault<FastHasher>>;

/// See the module doc.
pub(crate) struct Pending {
    /// One short lock per operation: cheaper here than a sharded map, whose shard locks cost
    /// more than the brief contention between a link's callers and its reader.
    map: Mutex<Map>,
    /// Set by the sweeper before it sleeps with nothing pending; the next insert wakes it.
    idle: AtomicBool,
    wake: Notify,
}

impl Pending {
    pub(crate) fn new() -> Self {
        Pending {
            map: Mutex::new(Map::default()),
            idle: AtomicBool::new(true),
            wake: Notify::new(),
        }
    }

    pub(crate) fn insert(&self, id: u64, tx: oneshot::Sender<Reply>, deadline: Instant) {
        self.lock().insert(id, Waiter { tx, deadline });
        // The plain load keeps the common case (sweeper awake) free of a write to a shared
        // line; the map's lock orders it after the sweeper's `store(true)`.
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::SeqCst) {
            // `notify_one` keeps a permit if the sweeper is not waiting yet: no lost wake-up.
            self.wake.notify_one();
        }
    }

    /// Hands a response to its caller; false if nobody waits for it any more.
    pub(crate) fn complete(&self, id: u64, reply: Reply) {
        let waiter = self.lock().remove(&id);
        if let Some(waiter) = waiter {
            let _ = waiter.tx.send(reply); // the caller gave up
        }
    }

    /// Forgets a call; true if it was still waiting (neither answered nor expired).
    pub(crate) fn remove(&self, id: u64) -> bool {
        let waiter = self.lock().remove(&id);
        waiter.is_some() // dropped outside the lock
    }

    /// Drops every waiter: their callers see the link as closed.
    pub(crate) fn clear(&self) {
        let all = std::mem::take(&mut *self.lock());
        drop(all); // outside the lock: dropping a sender wakes its caller
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // A panic while holding this lock leaves the map consistent (single operations).
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fails expired calls until `stop` is cancelled; `expired(id)` is told of each.
    pub(crate) async fn sweep(&self, stop: &CancellationToken, expired: impl Fn(u64)) {
        loop {
            // Announce idleness first, then look: an insert in between sees `idle` and wakes us.
            self.idle.store(true, Ordering::SeqCst);
            if self.lock().is_empty() {
                tokio::select! {
                    _ = stop.cancelled() => return self.clear(),
                    _ = self.wake.notified() => {}
                }
            }
            self.idle.store(false, Ordering::SeqCst);
            tokio::select! {
                // The link is closing: nobody will answer these calls any more.
                _ = stop.cancelled() => return self.clear(),
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
            }
            for id in self.expire(Instant::now()) {
                expired(id);
            }
        }
    }

    fn expire(&self, now: Instant) -> Vec<u64> {
        let expired: Vec<(u64, Waiter)> = {
            let mut map = self.lock();
            let ids: Vec<u64> = map
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            ids.into_iter()
                .filter_map(|id| Some((id, map.remove(&id)?)))
                .collect()
        };
        expired
            .into_iter()
            .map(|(id, waiter)| {
                let _ = waiter.tx.send(timeout_reply()); // the caller is gone
                id
            })
            .collect()
    }
}

/// A cheap multiplicative hash for the hot maps (request ids here, method names in the
/// method table) instead of SipHash, which costs more than the lookup itself. Neither map
/// grows from network input (ids are ours; the method table only from registration), so
/// hash flooding is not a concern.
#[derive(Default)]
pub(crate) struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn timeout_reply() -> Reply {
    Err(RemoteError::new(
        ErrorKind::Timeout,
        "no reply before the deadline",
    ))
}
