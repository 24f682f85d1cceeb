//! A key's state and how a call changes it: built by the factory (and the activate hook),
//! or, for a type that persists on a node with a state store, loaded from the store before
//! the first call and written after each call that changed it — before that call's answer
//! leaves. The write names the version the activation loaded or last wrote, so a second
//! activation of the key elsewhere (a view change, a partition) cannot overwrite it: its
//! write is refused, its caller gets `moved` (nothing was acknowledged, a retry goes to the
//! key's real home) and the activation ends. A call that changed nothing writes nothing.
//!
//! After a view change, before its next call, an activation checks that the store still
//! holds its version: if another activation of the key wrote meanwhile (both sides of a
//! partition served it), this one is stale and ends, and the call goes to a new activation
//! that loads what was written. Until a view change shows it, a duplicate activation may
//! answer a read from a stale state; it can never write one.
//!
//! Stream methods are answered as they run (their items leave as they come); what they do
//! to the state is written with the next call that changes it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::{Call, Kind};
use crate::handlers::build_state;
use crate::link::local;
use crate::link::Responder;
use crate::state::{
    new_version, test_unsafe, StateStore, StoreError, TestUnsafe, Version, Write, Written,
};
use crate::wire::{Encoding, ErrorKind, RemoteError};

/// A call's answer, as a responder sends it.
type Reply = Result<(Encoding, Bytes), RemoteError>;

/// Turns a state into bytes; `None` if it does not encode.
pub(crate) type Encode<S> = Box<dyn Fn(&S) -> Option<Bytes> + Send + Sync>;
/// Turns bytes back into a state; `None` if they are not one.
pub(crate) type Decode<S> = Box<dyn Fn(&[u8]) -> Option<S> + Send + Sync>;

/// How a persistent type's state becomes bytes and back (bincode), from the builder.
pub(crate) struct Codec<S> {
    pub(crate) encode: Encode<S>,
    pub(crate) decode: Decode<S>,
}

/// What the store holds for an activation's key, as far as it knows: the version its next
/// write replaces, and the bytes (to tell whether a call changed the state).
pub(super) struct Saved {
    version: u64,
    bytes: Option<Bytes>,
}

/// Where a persistent type's state goes: the node's store and the type's codec.
pub(super) struct Durable<'a, S> {
    store: &'a Arc<dyn StateStore>,
    codec: &'a Codec<S>,
}

impl<S: Send + 'static> Kind<S> {
    /// The store and codec of a persistent type on a node that has a store.
    pub(super) fn durable(&self) -> Option<Durable<'_, S>> {
        match (&self.ctx.store, &self.spec.persist) {
            (Some(store), Some(codec)) => Some(Durable { store, codec }),
            _ => None,
        }
    }

    /// The key's state from the factory, after the activate hook.
    pub(super) fn build(&self, key: &str) -> Option<S> {
        let state = build_state(&self.name, || (self.spec.factory)(key))?;
        self.activated(key, state)
    }

    /// The key's state as stored (the factory's if none is), after the activate hook; `None`
    /// if the store cannot be read or holds what does not decode (the key is not
    /// activated: its calls are placed again, never served from a blank state).
    pub(super) async fn load(&self, durable: &Durable<'_, S>, key: &str) -> Option<(S, Saved)> {
        let stored = match durable.store.read(&self.name, key).await {
            Ok(stored) => stored,
            Err(e) => {
                warn!(kind = %self.name, %key, error = %e, "cannot load the state; not activated");
                return None;
            }
        };
        let state = match &stored.value {
            Some(bytes) => match (durable.codec.decode)(bytes) {
                Some(state) => state,
                None => {
                    warn!(kind = %self.name, %key, "the stored state does not decode as this type's; not activated");
                    return None;
                }
            },
            None => build_state(&self.name, || (self.spec.factory)(key))?,
        };
        let state = self.activated(key, state)?;
        // A key never written holds the factory's state already: a call that leaves it so
        // writes nothing.
        let bytes = match stored.value {
            Some(bytes) => Some(bytes),
            None => (durable.codec.encode)(&state),
        };
        let saved = Saved {
            version: stored.version,
            bytes,
        };
        Some((state, saved))
    }

    /// Whether the store still holds the version this activation last loaded or wrote. A
    /// view change may mean another node served the key meanwhile (a partition healed, a
    /// member came back): its writes would make this state stale, and a call that only
    /// reads it would answer from the past. `false` too when the store cannot say.
    pub(super) async fn current(&self, durable: &Durable<'_, S>, key: &str, saved: &Saved) -> bool {
        match durable.store.read(&self.name, key).await {
            Ok(stored) => stored.version == saved.version,
            Err(e) => {
                warn!(kind = %self.name, %key, error = %e, "cannot check the state's version");
                false
            }
        }
    }

    /// What the caller of a call whose write failed is told: `moved` when nothing was
    /// written (retrying is safe: the retry activates the key again from the store), or, when
    /// the store may have committed it, `disconnected` — the outcome is unknown, as after a
    /// lost link, so only an idempotent call may be sent again.
    fn not_saved(&self, key: &str, error: &StoreError) -> RemoteError {
        match error {
            StoreError::Unknown(_) => RemoteError::new(
                ErrorKind::Disconnected,
                format!(
                    "the state store (whether `{}/{key}`'s write committed is unknown: {error})",
                    self.name
                ),
            ),
            _ => RemoteError::new(
                ErrorKind::Moved,
                format!(
                    "the state of `{}/{key}` was not saved ({error}); nothing was acknowledged, try again",
                    self.name
                ),
            ),
        }
    }

    fn activated(&self, key: &str, mut state: S) -> Option<S> {
        if let Some(hook) = &self.spec.on_activate {
            if catch_unwind(AssertUnwindSafe(|| hook(key, &mut state))).is_err() {
                warn!(kind = %self.name, %key, "the activate hook panicked; not activated");
                return None;
            }
        }
        Some(state)
    }

    /// Runs one call of a method answered by a future (a binding's): its synchronous part,
    /// then the future, in the key's turn; true if it panicked (the state is rebuilt).
    pub(super) async fn run_awaited(&self, key: &str, state: &mut S, call: Call<S>) -> bool {
        let started = catch_unwind(AssertUnwindSafe(|| {
            call.method.start(state, &call.entry, call.call)
        }));
        match started {
            // Past the shutdown grace the turn stops waiting (its state is dropped).
            Ok(Some(turn)) => tokio::select! {
                panicked = turn => panicked,
                _ = self.ctx.stop.cancelled() => true,
            },
            Ok(None) => false,
            Err(_) => {
                warn!(kind = %self.name, %key, "a method panicked; the key's state is rebuilt");
                true
            }
        }
    }

    /// Runs one call; true if the method panicked (the state is rebuilt then).
    pub(super) fn run(&self, key: &str, state: &mut S, call: Call<S>) -> bool {
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            call.method.invoke(state, &call.entry, call.call)
        }))
        .unwrap_or(true);
        if panicked {
            warn!(kind = %self.name, %key, "a method panicked; the key's state is rebuilt");
        }
        panicked
    }

    /// Runs one call of a persistent type and queues the write of what it changed; its
    /// answer waits in `gate` until that write commits. `Err` when the activation must end:
    /// the method panicked (its state is not to be trusted) or the state does not encode.
    pub(super) async fn run_durable(
        &self,
        durable: &Durable<'_, S>,
        key: &Arc<str>,
        state: &mut S,
        saved: &mut Saved,
        gate: &mut Gate,
        mut call: Call<S>,
    ) -> Result<(), &'static str> {
        if call.method.streams() {
            // Its items leave as they come: only once what they may show is stored.
            if !self.drain(key, gate).await {
                let message = format!(
                    "an earlier write of `{}/{key}` failed; nothing was acknowledged, try again",
                    self.name
                );
                call.call.responder.fail(ErrorKind::Moved, message);
                return Err("an earlier write failed");
            }
            return if self.run(key, state, call) {
                Err("a stream method panicked")
            } else {
                Ok(())
            };
        }
        // A caller already gone gets nothing run for it (as a volatile type's would not).
        if call.call.responder.is_gone() {
            call.call.responder.abandon();
            return Ok(());
        }
        let (answer_to, held) = local::hold(&mut call.call.responder);
        let panicked = self.run(key, state, call);
        let answer = match held.await {
            Ok(answer) => answer,
            Err(_) => Err(RemoteError::new(
                ErrorKind::Shutdown,
                "the method did not answer",
            )),
        };
        if panicked {
            gate.answer(answer_to, answer);
            return Err("a method panicked");
        }
        let bytes = match (durable.codec.encode)(state) {
            // Unchanged: nothing to write, but it may have read what earlier calls wrote.
            Some(bytes) if saved.bytes.as_ref() == Some(&bytes) => {
                gate.answer(answer_to, answer);
                return Ok(());
            }
            Some(bytes) => bytes,
            None => {
                let why = format!(
                    "the state of `{}/{key}` does not encode; nothing was saved",
                    self.name
                );
                gate.answer(
                    answer_to,
                    Err(RemoteError::new(ErrorKind::Application, why)),
                );
                return Err("the state does not encode");
            }
        };
        let switch = test_unsafe();
        // The answer waits for the write (unless a test took that away).
        let answer_to = if switch == TestUnsafe::ReplyBeforeWrite {
            answer_to.reply_raw(answer.clone());
            None
        } else {
            Some(answer_to)
        };
        let expected = if switch == TestUnsafe::NoVersionCheck {
            // The version stored now, whoever wrote it (own writes first: no pipelining).
            Box::pin(self.drain(key, gate)).await;
            match durable.store.read(&self.name, key).await {
                Ok(stored) => stored.version,
                Err(_) => saved.version,
            }
        } else {
            saved.version
        };
        let version = new_version();
        let write = Write {
            kind: self.name.clone(),
            key: key.clone(),
            value: Some(bytes.clone()),
            expected,
            version,
        };
        let written = match durable.store.try_submit(vec![write]) {
            Ok(written) => written,
            Err(writes) => durable.store.submit(writes).await,
        };
        // What the next write replaces, if this one commits. If it does not, the next is
        // refused too — nobody else can make this version — and the activation ends when
        // the gate learns of it.
        *saved = Saved {
            version,
            bytes: Some(bytes),
        };
        gate.push(Held {
            answer_to,
            answer,
            written: Some(written),
        });
        Ok(())
    }

    /// Sends the answer of a call whose write was settled; `Err` once any write of this
    /// activation failed: it must end (what still waits is settled as it comes).
    pub(super) fn settle(&self, key: &str, gate: &mut Gate, settled: Settled) -> Result<(), ()> {
        let Settled {
            answer_to,
            answer,
            written,
        } = settled;
        let reply = match written {
            Some(Ok(_)) => answer,
            Some(Err(error)) => {
                if !gate.failed {
                    warn!(kind = %self.name, %key, %error, "the state was not saved; the activation ends");
                }
                gate.failed = true;
                Err(self.not_saved(key, &error))
            }
            // It changed nothing, but what it saw may never have been written.
            None if gate.failed => Err(RemoteError::new(
                ErrorKind::Moved,
                format!(
                    "an earlier write of `{}/{key}` failed; nothing was acknowledged, try again",
                    self.name
                ),
            )),
            None => answer,
        };
        if let Some(to) = answer_to {
            to.reply_raw(reply);
        }
        if gate.failed {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Waits for every held answer and sends it; false if a write failed.
    pub(super) async fn drain(&self, key: &str, gate: &mut Gate) -> bool {
        while let Some(settled) = gate.next().await {
            let _ = self.settle(key, gate, settled);
        }
        !gate.failed
    }
}

/// The most answers of one activation waiting for their writes: past it, the activation
/// waits for the oldest before it runs another call.
pub(super) const PIPELINE: usize = 64;

/// Answers waiting for their writes, in call order (Cloudflare Durable Objects' output
/// gate): an answer leaves once its own write and every earlier one committed. A call that
/// changed nothing waits behind earlier writes too, as it may have read what they wrote.
/// Writes commit in the order they were queued, so waiting on the oldest is enough.
#[derive(Default)]
pub(super) struct Gate {
    waiting: VecDeque<Held>,
    /// A write failed: what still waits is acknowledged only if its own write committed.
    failed: bool,
}

/// An answer held until its write (if any) is settled.
struct Held {
    /// `None` when it was answered already (a test switch).
    answer_to: Option<Responder>,
    answer: Reply,
    written: Option<Written>,
}

/// A held answer, with how its write ended (`None`: the call wrote nothing).
pub(super) struct Settled {
    answer_to: Option<Responder>,
    answer: Reply,
    written: Option<Result<Version, StoreError>>,
}

impl Gate {
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Gives back the queue's room once it is empty: an idle activation should not keep
    /// room for held answers (a few hundred bytes each) for the rest of its life.
    pub(super) fn release(&mut self) {
        if self.waiting.is_empty() && self.waiting.capacity() > 0 {
            self.waiting = VecDeque::new();
        }
    }

    fn push(&mut self, held: Held) {
        self.waiting.push_back(held);
    }

    /// Answers at once when nothing is held, else behind what is.
    fn answer(&mut self, answer_to: Responder, answer: Reply) {
        if self.is_empty() {
            answer_to.reply_raw(answer);
        } else {
            self.push(Held {
                answer_to: Some(answer_to),
                answer,
                written: None,
            });
        }
    }

    /// The oldest held answer, once settled; `None` when none is held. Cancel-safe: it
    /// stays held until its write's results are in.
    pub(super) async fn next(&mut self) -> Option<Settled> {
        let oldest = self.waiting.front_mut()?;
        let written = match oldest.written.as_mut() {
            Some(written) => Some(written.results().await.pop().unwrap_or_else(|| {
                Err(StoreError::Unknown("the store gave no answer".to_owned()))
            })),
            None => None,
        };
        let held = self.waiting.pop_front()?;
        Some(Settled {
            answer_to: held.answer_to,
            answer: held.answer,
            written,
        })
    }
}
