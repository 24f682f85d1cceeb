//! One virtual-actor type on one node ([`Kind`]): its activations, by key, each a task that
//! owns the key's state and reads a bounded mailbox, like any actor. A call for a key this
//! node owns goes to the key's mailbox, activating it first if needed; a call for a key
//! another node owns is refused with `moved` (from a node, which retries at the owner) or
//! forwarded (from a client or the gateway, which cannot place keys themselves).
//!
//! An activation ends when it has been idle for the type's idle time, when it is handed
//! over (this node no longer owns its key), or when the node stops: it finishes the message
//! it runs, answers what is queued (served when idle, `moved` otherwise), runs the
//! deactivate hook, and leaves its slot. A call that finds the slot closing waits for it to
//! go, then activates the key again, so a key never has two activations on one node and a
//! save hook always runs before the next load.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry as SlotEntry;
use dashmap::DashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::mailbox::{Mailbox, Refused};
use super::{placement, Ctx};
use crate::cluster::membership::Host;
use crate::handlers::{ActorMethod, Entry, Incoming};

use crate::wire::ErrorKind;

/// How long a client's call may be placed again when its caller set no deadline.
pub(crate) const NO_DEADLINE: Duration = Duration::from_secs(30);

/// A hook run with the key and its state.
pub(crate) type Hook<S> = Arc<dyn Fn(&str, &mut S) + Send + Sync>;
/// Makes the state of a key.
pub(crate) type Factory<S> = Arc<dyn Fn(&str) -> S + Send + Sync>;

/// What a type is made of (from its builder).
pub(crate) struct Spec<S> {
    pub(crate) factory: Factory<S>,
    pub(crate) on_activate: Option<Hook<S>>,
    pub(crate) on_deactivate: Option<Hook<S>>,
    /// Idle time before deactivation; `None`: never (singletons).
    pub(crate) idle: Option<Duration>,
    pub(crate) mailbox: usize,
    /// For a type whose state persists: how it becomes bytes (`durable`).
    pub(crate) persist: Option<Codec<S>>,
}

/// One virtual-actor type hosted here.
pub(crate) struct Kind<S> {
    pub(crate) name: Arc<str>,
    spec: Spec<S>,
    slots: DashMap<Arc<str>, Slot<S>>,
    /// Woken whenever a slot is removed.
    gone: Notify,
    next_id: AtomicU64,
    /// The clock mailboxes record their last call on (ms since this instant).
    epoch: Instant,
    pub(crate) ctx: Ctx,
}

struct Slot<S> {
    id: u64,
    mailbox: Arc<Mailbox<Msg<S>>>,
}

/// What an activation's mailbox carries. Boxed calls keep an idle mailbox small.
enum Msg<S> {
    Call(Box<Call<S>>),
    Leave(Leaving),
}

pub(crate) struct Call<S> {
    pub(crate) method: Arc<dyn ActorMethod<S>>,
    pub(crate) entry: Arc<Entry>,
    pub(crate) call: Incoming,
    /// How many times this node placed the call again ([`Kind::again`]).
    pub(crate) tries: u32,
}

/// Why an activation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaving {
    Idle,
    /// The node holds too many activations, and this one was among the least recently
    /// called (`actors/shedding.rs`).
    Shed,
    /// Another node owns its key now.
    Moved,
    /// This node is stopping.
    Shutdown,
    /// Its state could not be saved (another activation of the key wrote it, or the store
    /// failed), or a method panicked in a persistent type: it ends, unsaved, and its queued
    /// calls are placed again (a new activation loads the stored state).
    Stale,
}

mod durable;
mod ending;
mod routing;

pub(crate) use durable::Codec;
use durable::{Gate, PIPELINE};

impl<S: Send + 'static> Kind<S> {
    pub(crate) fn new(name: &str, spec: Spec<S>, ctx: Ctx) -> Self {
        Kind {
            name: name.into(),
            spec,
            slots: DashMap::new(),
            gone: Notify::new(),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            ctx,
        }
    }

    /// The owner of `key` in this node's current view, with its address.
    pub(crate) fn owner(&self, key: &str) -> Option<Host> {
        let hash = placement::key_hash(&self.name, key);
        placement::owner_host(&self.ctx.directory, &self.name, hash)
    }

    /// Routes a call for `key`: to its activation here, or away (see the module doc).
    pub(crate) fn deliver(self: &Arc<Self>, key: Arc<str>, call: Call<S>) {
        if self.ctx.closing() {
            let message = "this node is stopping and hands its virtual actors over";
            return call.call.responder.fail(ErrorKind::Moved, message);
        }
        match self.owner(&key) {
            Some(owner) if owner.id == self.ctx.me => self.local(key, Msg::Call(Box::new(call))),
            Some(owner) if call.call.from_node => {
                let message = format!(
                    "`{}/{key}` lives on node {} ({}) in this node's view",
                    self.name, owner.id, owner.addr
                );
                call.call.responder.fail(ErrorKind::Moved, message);
            }
            Some(owner) if call.call.stream.is_some() => {
                let message = format!(
                    "`{}/{key}` lives on {}: streams are not forwarded, open it there (or through an ActorRef)",
                    self.name, owner.addr
                );
                call.call.responder.fail(ErrorKind::Moved, message);
            }
            Some(_) => {
                let kind = self.clone();
                self.ctx
                    .tasks
                    .spawn(async move { kind.forward(key, call).await });
            }
            None => {
                // Only before this node's own hosting is published (just registered).
                let message = format!("no member hosts virtual actor type `{}` yet", self.name);
                self.again(key, call, message);
            }
        }
    }

    /// A call this node could not serve after all: the key was being handed over, or the
    /// previous owner kept it (the views disagree for a moment). A node's call is answered
    /// `moved`, which its caller retries; a client cannot place keys, so its call is placed
    /// again after a short wait (5 ms, doubling to 200 ms), within its deadline.
    fn again(self: &Arc<Self>, key: Arc<str>, mut call: Call<S>, why: String) {
        let wait = Duration::from_millis(5)
            .saturating_mul(1 << call.tries.min(6))
            .min(Duration::from_millis(200));
        let deadline = call
            .call
            .deadline
            .unwrap_or_else(|| Instant::now() + NO_DEADLINE);
        if call.call.from_node || self.ctx.closing() || Instant::now() + wait >= deadline {
            return call.call.responder.fail(ErrorKind::Moved, why);
        }
        call.tries += 1;
        let kind = self.clone();
        self.ctx.tasks.spawn(async move {
            tokio::time::sleep(wait).await;
            kind.deliver(key, call);
        });
    }

    /// Into the key's mailbox, activating it if it has none.
    fn local(self: &Arc<Self>, key: Arc<str>, msg: Msg<S>) {
        let msg = match self.slots.get(&key) {
            Some(slot) => match slot.mailbox.try_send(msg) {
                Ok(()) => return,
                Err(Refused::Full(msg)) => return self.overloaded(msg),
                Err(Refused::Closed(msg)) => msg,
            },
            None => msg,
        };
        match self.slots.entry(key.clone()) {
            // Stopping: no new activation (shutdown waits for the slots to empty).
            SlotEntry::Vacant(_) if self.ctx.closing() => {
                if let Msg::Call(call) = msg {
                    let message = "this node is stopping and hands its virtual actors over";
                    call.call.responder.fail(ErrorKind::Moved, message);
                }
            }
            SlotEntry::Vacant(_) if !self.ctx.budget.take() => {
                if let Msg::Call(call) = msg {
                    let message = format!(
                        "this node holds {} virtual-actor activations, its --max-activations: \
                         the least recently called are being deactivated, try again",
                        self.ctx.budget.max()
                    );
                    call.call.responder.fail(ErrorKind::Overloaded, message);
                }
            }
            SlotEntry::Vacant(vacant) => {
                let mailbox = self.mailbox();
                // A new mailbox has room for one.
                let _ = mailbox.try_send(msg);
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                vacant.insert(Slot {
                    id,
                    mailbox: mailbox.clone(),
                });
                let kind = self.clone();
                self.ctx
                    .tasks
                    .spawn(async move { kind.activation(key, id, mailbox).await });
            }
            SlotEntry::Occupied(slot) => match slot.get().mailbox.try_send(msg) {
                Ok(()) => {}
                Err(Refused::Full(msg)) => self.overloaded(msg),
                Err(Refused::Closed(msg)) => {
                    // Its activation is ending: wait for it to go, then activate anew.
                    drop(slot);
                    let kind = self.clone();
                    self.ctx.tasks.spawn(async move {
                        kind.after_gone(key, msg).await;
                    });
                }
            },
        }
    }

    fn overloaded(&self, msg: Msg<S>) {
        if let Msg::Call(call) = msg {
            let message = format!(
                "the mailbox of virtual actor `{}` is full ({} messages)",
                self.name, self.spec.mailbox
            );
            call.call.responder.fail(ErrorKind::Overloaded, message);
        }
    }

    /// Waits until the closing activation of `key` has left its slot, then delivers again.
    async fn after_gone(self: Arc<Self>, key: Arc<str>, msg: Msg<S>) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            let closing = self
                .slots
                .get(&key)
                .is_some_and(|slot| slot.mailbox.is_closed());
            if !closing {
                break;
            }
            gone.await;
        }
        match msg {
            Msg::Call(call) => self.deliver(key, *call),
            Msg::Leave(_) => {}
        }
    }

    /// Activates the key if this node owns it and it is not active (singletons run always).
    pub(crate) fn ensure(self: &Arc<Self>, key: &str) {
        let owned = self.owner(key).is_some_and(|o| o.id == self.ctx.me);
        if owned && !self.slots.contains_key(key) && !self.ctx.closing() {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if let SlotEntry::Vacant(vacant) = self.slots.entry(key.into()) {
                self.ctx.budget.take_anyway(); // a singleton runs whatever the budget
                let mailbox = self.mailbox();
                vacant.insert(Slot {
                    id,
                    mailbox: mailbox.clone(),
                });
                let kind = self.clone();
                let key: Arc<str> = key.into();
                self.ctx
                    .tasks
                    .spawn(async move { kind.activation(key, id, mailbox).await });
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis().min(u128::from(u64::MAX)) as u64
    }

    fn mailbox(&self) -> Arc<Mailbox<Msg<S>>> {
        Arc::new(Mailbox::new(self.spec.mailbox, self.now_ms()))
    }

    /// A singleton: never idles out, activated by its owner without waiting for a call.
    pub(crate) fn runs_always(&self) -> bool {
        self.spec.idle.is_none()
    }

    /// Each activation's key, with when it was last called.
    pub(crate) fn last_calls(&self) -> Vec<(Instant, Arc<str>)> {
        (self.slots.iter())
            .map(|s| {
                let at = self.epoch + Duration::from_millis(s.mailbox.touched());
                (at, s.key().clone())
            })
            .collect()
    }

    /// The keys active here.
    pub(crate) fn keys(&self) -> Vec<Arc<str>> {
        self.slots.iter().map(|s| s.key().clone()).collect()
    }

    /// How many keys are active here.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))] // read by the gateway
    pub(crate) fn active(&self) -> usize {
        self.slots.len()
    }

    /// One activation: claims the key, builds its state, serves its mailbox, then ends.
    async fn activation(self: Arc<Self>, key: Arc<str>, id: u64, mailbox: Arc<Mailbox<Msg<S>>>) {
        // Boxed: the claim's future (a dial, a request) is large, and an idle activation
        // should not carry its space for its whole life.
        let claimed = Box::pin(self.claim(&key)).await;
        let durable = self.durable();
        // Read before loading: a view change during the load is checked at the first call.
        let mut verified = self.ctx.directory.version();
        let loaded = match (claimed, &durable) {
            // Boxed, as the claim: an idle activation keeps no room for a load or a write.
            (Ok(()), Some(durable)) => {
                (Box::pin(self.load(durable, &key)).await).map(|(s, v)| (s, Some(v)))
            }
            (Ok(()), None) => self.build(&key).map(|state| (state, None)),
            (Err(why), _) => {
                debug!(kind = %self.name, %key, %why, "not activated: the previous owner keeps it");
                None
            }
        };
        let Some((mut state, mut saved)) = loaded else {
            let queued = mailbox.close();
            self.vacate(&key, id);
            for msg in queued {
                if let Msg::Call(call) = msg {
                    let message = format!("`{}/{key}` could not be activated here now", self.name);
                    self.again(key.clone(), *call, message);
                }
            }
            return;
        };
        // A call this activation will not serve (its state turned out stale): re-placed.
        let mut unserved = None;
        // A persistent type's answers waiting for their writes.
        let mut gate = Gate::default();
        let why = loop {
            let msg = if gate.is_empty() {
                gate.release();
                mailbox.recv().await
            } else {
                // Boxed: only a persistent key with answers held waits on both.
                let next = Box::pin(async {
                    tokio::select! {
                        biased;
                        Some(settled) = gate.next() => Err(settled),
                        msg = mailbox.recv() => Ok(msg),
                    }
                });
                match next.await {
                    Ok(msg) => msg,
                    Err(settled) => {
                        if self.settle(&key, &mut gate, settled).is_err() {
                            break Leaving::Stale;
                        }
                        continue;
                    }
                }
            };
            match msg {
                Some(Msg::Call(call)) => {
                    if let (Some(durable), Some(saved)) = (&durable, saved.as_mut()) {
                        let views = self.ctx.directory.version();
                        if views != verified {
                            // Its own writes first: then the stored version is its own.
                            let current = Box::pin(async {
                                self.drain(&key, &mut gate).await
                                    && self.current(durable, &key, saved).await
                            });
                            if !current.await {
                                debug!(kind = %self.name, %key, "another activation wrote since the load: ends");
                                unserved = Some(call);
                                break Leaving::Stale;
                            }
                            verified = views;
                        }
                        if gate.len() >= PIPELINE {
                            let oldest = Box::pin(gate.next()).await;
                            if let Some(settled) = oldest {
                                if self.settle(&key, &mut gate, settled).is_err() {
                                    unserved = Some(call);
                                    break Leaving::Stale;
                                }
                            }
                        }
                        let ran =
                            self.run_durable(durable, &key, &mut state, saved, &mut gate, *call);
                        if let Err(why) = Box::pin(ran).await {
                            debug!(kind = %self.name, %key, why, "ends unsaved");
                            break Leaving::Stale;
                        }
                    } else if call.method.awaits() {
                        if Box::pin(self.run_awaited(&key, &mut state, *call)).await {
                            match self.build(&key) {
                                Some(fresh) => state = fresh,
                                None => break Leaving::Shutdown,
                            }
                        }
                    } else if self.run(&key, &mut state, *call) {
                        match self.build(&key) {
                            Some(fresh) => state = fresh,
                            None => break Leaving::Shutdown,
                        }
                    }
                    mailbox.touch(self.now_ms());
                }
                // The sweeper's verdict may be stale: a call came since.
                Some(Msg::Leave(Leaving::Idle))
                    if self.now_ms().saturating_sub(mailbox.touched())
                        < self.spec.idle.map_or(u64::MAX, |d| d.as_millis() as u64) => {}
                Some(Msg::Leave(why)) => break why,
                None => break Leaving::Shutdown,
            }
        };
        // What is still held leaves as its writes commit (or fail): before the key can be
        // activated anywhere else. A failed one leaves the state stale.
        let mut why = why;
        if !Box::pin(self.drain(&key, &mut gate)).await {
            why = Leaving::Stale;
        }
        let mut handed_over: Vec<Call<S>> = unserved.into_iter().map(|call| *call).collect();
        for msg in mailbox.close() {
            match msg {
                // Idle or shed: these came in the last instant; serve them (a persistent
                // type's go to a new activation, which saves what they change).
                Msg::Call(call)
                    if saved.is_none() && matches!(why, Leaving::Idle | Leaving::Shed) =>
                {
                    if call.method.awaits() {
                        Box::pin(self.run_awaited(&key, &mut state, *call)).await;
                    } else {
                        self.run(&key, &mut state, *call);
                    }
                }
                Msg::Call(call) => handed_over.push(*call),
                Msg::Leave(_) => {}
            }
        }
        // A stale state (its write refused, or a method panicked) is not handed to the hook.
        if let Some(hook) = (self.spec.on_deactivate.as_ref()).filter(|_| why != Leaving::Stale) {
            if catch_unwind(AssertUnwindSafe(|| hook(&key, &mut state))).is_err() {
                warn!(kind = %self.name, %key, "the deactivate hook panicked");
            }
        }
        drop(state);
        debug!(kind = %self.name, %key, ?why, "deactivated");
        self.vacate(&key, id);
        // Saved and gone: the calls that came meanwhile go to the key's new home.
        for call in handed_over {
            let message = format!("`{}/{key}` is being handed over", self.name);
            self.again(key.clone(), call, message);
        }
    }

    fn vacate(&self, key: &str, id: u64) {
        self.slots.remove_if(key, |_, slot| slot.id == id);
        self.ctx.budget.give_back();
        self.gone.notify_waiters();
    }
}
