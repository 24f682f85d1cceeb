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

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;

use super::{Call, Kind};
use crate::handlers::build_state;
use crate::link::local;
use crate::state::{test_unsafe, StateStore, StoreError, TestUnsafe, Write};
use crate::wire::{ErrorKind, RemoteError};

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

    /// Runs one call of a persistent type and writes what it changed before its answer
    /// leaves. `Err` when the activation must end: the method panicked (its state is not
    /// to be trusted), or the write was refused or failed (another activation wrote, or
    /// the store is down).
    pub(super) async fn run_durable(
        &self,
        durable: &Durable<'_, S>,
        key: &Arc<str>,
        state: &mut S,
        saved: &mut Saved,
        mut call: Call<S>,
    ) -> Result<(), &'static str> {
        if call.method.streams() {
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
            answer_to.reply_raw(answer);
            return Err("a method panicked");
        }
        let bytes = (durable.codec.encode)(state);
        let write = match bytes {
            Some(bytes) if saved.bytes.as_ref() == Some(&bytes) => None,
            Some(bytes) => Some(bytes),
            None => {
                let why = format!(
                    "the state of `{}/{key}` does not encode; nothing was saved",
                    self.name
                );
                answer_to.reply_raw(Err(RemoteError::new(ErrorKind::Application, why)));
                return Err("the state does not encode");
            }
        };
        let Some(bytes) = write else {
            answer_to.reply_raw(answer);
            return Ok(());
        };
        let switch = test_unsafe();
        // The answer waits here until the write commits (unless a test took that away).
        let mut pending = Some((answer_to, answer));
        if switch == TestUnsafe::ReplyBeforeWrite {
            if let Some((to, answer)) = pending.take() {
                to.reply_raw(answer);
            }
        }
        let expected = match switch {
            TestUnsafe::NoVersionCheck => match durable.store.read(&self.name, key).await {
                Ok(stored) => stored.version,
                Err(_) => saved.version,
            },
            _ => saved.version,
        };
        let write = Write {
            kind: self.name.clone(),
            key: key.clone(),
            value: Some(bytes.clone()),
            expected,
        };
        match durable.store.write(vec![write]).await.pop() {
            Some(Ok(version)) => {
                *saved = Saved {
                    version,
                    bytes: Some(bytes),
                };
                if let Some((to, answer)) = pending {
                    to.reply_raw(answer);
                }
                Ok(())
            }
            refused => {
                let error = refused
                    .and_then(Result::err)
                    .unwrap_or_else(|| StoreError::Unknown("the store gave no answer".to_owned()));
                warn!(kind = %self.name, %key, %error, "the state was not saved; the activation ends");
                if let Some((to, _)) = pending {
                    to.reply_raw(Err(self.not_saved(key, &error)));
                }
                Err("its state was not saved")
            }
        }
    }
}
