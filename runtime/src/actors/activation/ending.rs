//! How activations are told to end: one key handed over ([`Kind::leave`]), every key this
//! node no longer owns after a view change ([`Kind::rebalance`]), the idle ones (swept every
//! quarter of the idle time), the least recently called when the node holds too many
//! ([`Kind::shed`]), and all of them when the node stops. Each is a `Leave` message in the
//! activation's mailbox; the activation finishes what it runs and ends (`activation.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::{Kind, Leaving, Msg};
use crate::actors::mailbox::Mailbox;
use crate::actors::placement;

impl<S: Send + 'static> Kind<S> {
    /// Ends the activation of `key`, if any, and waits until it is gone.
    pub(crate) async fn leave(&self, key: &str, why: Leaving) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            let Some(mailbox) = self.slots.get(key).map(|slot| slot.mailbox.clone()) else {
                return;
            };
            let _ = mailbox.send_anyway(Msg::Leave(why)); // already closing
            drop(mailbox);
            gone.await;
        }
    }

    /// Hands over every activation whose key another node owns now.
    pub(crate) fn rebalance(&self) {
        let hosts = self.ctx.directory.snapshot().hosts(&self.name);
        let moved: Vec<Arc<Mailbox<Msg<S>>>> = self
            .slots
            .iter()
            .filter(|slot| {
                let hash = placement::key_hash(&self.name, slot.key());
                placement::owner(hash, hosts.iter().map(|h| h.id)) != Some(self.ctx.me)
            })
            .map(|slot| slot.mailbox.clone())
            .collect();
        for mailbox in moved {
            let _ = mailbox.send_anyway(Msg::Leave(Leaving::Moved)); // already closing
        }
    }

    /// Ends every activation (the node stops) and waits for their hooks.
    pub(crate) async fn leave_all(&self) {
        self.stop_all();
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.slots.is_empty() {
                return;
            }
            gone.await;
        }
    }

    /// Tells every activation to end (the node stops), without waiting.
    pub(crate) fn stop_all(&self) {
        for slot in self.slots.iter() {
            let _ = slot.mailbox.send_anyway(Msg::Leave(Leaving::Shutdown)); // already closing
        }
    }

    /// Ends the activations idle for the type's idle time, every quarter of it, until the
    /// node stops (singletons never idle).
    pub(crate) async fn sweep_idle(self: Arc<Self>) {
        let Some(idle) = self.spec.idle else { return };
        let idle_ms = idle.as_millis().min(u128::from(u64::MAX)) as u64;
        let mut tick = tokio::time::interval((idle / 4).max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.ctx.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = self.now_ms();
            for slot in self.slots.iter() {
                if now.saturating_sub(slot.mailbox.touched()) >= idle_ms {
                    let _ = slot.mailbox.send_anyway(Msg::Leave(Leaving::Idle));
                }
            }
        }
    }

    /// Deactivates `keys` (their hooks run; calls already queued are served first).
    pub(crate) fn shed(&self, keys: &[Arc<str>]) {
        for key in keys {
            if let Some(slot) = self.slots.get(key) {
                let _ = slot.mailbox.send_anyway(Msg::Leave(Leaving::Shed)); // already ending
            }
        }
    }
}
