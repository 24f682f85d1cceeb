//! The handlers of plain functions: synchronous ones run inline on the connection's reader
//! (keep them quick), async ones as one task per request on the node's tracker, stopped by a
//! caller's `Cancel`, its deadline, or the node's `stop` token. Both decode the arguments as
//! the request says (bincode or JSON) and catch panics, which become `panicked` errors.

use crate::link::Fault;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use super::{Entry, Handlers, Incoming};
use crate::link::panic_message;
use crate::wire::ErrorKind;

/// Something that answers requests for one method name.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Starts handling `call` for the method `entry`; the answer goes through
    /// `call.responder`, now or later.
    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, ctx: &Handlers);

    /// Whether this handler uses `call.deadline`; if not, the clock is not read for it.
    fn needs_deadline(&self) -> bool {
        true
    }

    /// Whether the method is called with a key, as `method/KEY` (virtual actors).
    fn keyed(&self) -> bool {
        false
    }

    /// Whether the method streams (it is opened with `StreamOpen`, not called).
    fn streams(&self) -> bool {
        false
    }
}

/// A synchronous function returning `Result<R, E>`, run on the connection's reader. It is
/// handed the request (for a handler that asks for its context) and the arguments.
pub(crate) struct SyncFn<F, A, R, E> {
    f: F,
    _types: PhantomData<fn(A) -> Result<R, E>>,
}

impl<F, A, R, E> SyncFn<F, A, R, E> {
    pub(crate) fn new(f: F) -> Self {
        SyncFn {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, A, R, E> Handler for SyncFn<F, A, R, E>
where
    F: Fn(&Incoming, A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
    E: Fault + 'static,
{
    fn needs_deadline(&self) -> bool {
        false // runs to completion at once
    }

    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, _ctx: &Handlers) {
        match entry.args::<A>(&call) {
            Ok(args) => {
                let ran = catch_unwind(AssertUnwindSafe(|| (self.f)(&call, args)));
                call.responder.answer(ran)
            }
            Err(e) => call.responder.reply::<()>(Err(e)),
        }
    }
}

/// An async function returning `Result<R, E>`; each request runs as its own task.
pub(crate) struct AsyncFn<F, A, Fut> {
    f: F,
    _types: PhantomData<fn(A) -> Fut>,
}

impl<F, A, Fut> AsyncFn<F, A, Fut> {
    pub(crate) fn new(f: F) -> Self {
        AsyncFn {
            f,
            _types: PhantomData,
        }
    }
}

impl<F, A, Fut, R, E> Handler for AsyncFn<F, A, Fut>
where
    F: Fn(&Incoming, A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Fault + 'static,
{
    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, ctx: &Handlers) {
        let args = match entry.args::<A>(&call) {
            Ok(args) => args,
            Err(e) => return call.responder.reply::<()>(Err(e)),
        };
        // Building the future runs user code too.
        let built = catch_unwind(AssertUnwindSafe(|| (self.f)(&call, args)));
        spawn_answer(built, call, ctx);
    }
}

/// Runs a handler's future (`built`, or the panic that building it raised) as its own task
/// on the node's tracker, and answers `call` with its outcome: stopped by the caller's
/// `Cancel`, its deadline (`timeout`), or the node's `stop` token.
pub(crate) fn spawn_answer<Fut, R, E>(
    built: std::thread::Result<Fut>,
    call: Incoming,
    ctx: &Handlers,
) where
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Fault + 'static,
{
    let Incoming {
        deadline,
        responder,
        trace,
        ..
    } = call;
    let work = match built {
        Ok(work) => AssertUnwindSafe(work).catch_unwind(),
        Err(p) => return responder.fail(ErrorKind::Panicked, panic_message(&*p)),
    };
    let stop = ctx.stop.clone();
    // Registered before the task starts, so a `Cancel` arriving at once still finds it.
    let (abort, registration) = AbortHandle::new_pair();
    let tracked = responder.track(abort);
    ctx.tasks
        .spawn(crate::link::trace::future_in(trace, async move {
            let _tracked = tracked;
            let outcome = tokio::select! {
                biased;
                // Dropping the responder answers `Shutdown`.
                _ = stop.cancelled() => return,
                outcome = Abortable::new(run_until(deadline, work), registration) => outcome,
            };
            // The caller cancelled: it waits for nothing.
            let Ok(outcome) = outcome else {
                return responder.abandon();
            };
            match outcome {
                Some(ran) => responder.answer(ran),
                None => responder.fail(
                    ErrorKind::Timeout,
                    "the handler outlived the caller's deadline",
                ),
            }
        }));
}

/// Runs `work` until `deadline` (if any); `None` when the deadline passed first.
async fn run_until<T>(
    deadline: Option<tokio::time::Instant>,
    work: impl Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(at) => tokio::time::timeout_at(at, work).await.ok(),
        None => Some(work.await),
    }
}
