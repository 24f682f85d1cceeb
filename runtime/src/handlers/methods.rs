//! The method table of a node: name → handler and help text. Owned by one node (never a
//! static), written by registration, read by every incoming request.
//!
//! Three kinds of handlers implement [`Handler`]: plain synchronous functions (run inline on
//! the connection's reader: keep them quick), async functions (one task per request, spawned
//! through the node's tracker) and actor methods (forwarded to the actor's mailbox, see
//! [`super::actor`]). All of them decode the arguments as the request says (bincode or JSON)
//! and catch panics, which become `Panicked` errors.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use std::hash::BuildHasherDefault;

use dashmap::DashMap;
use futures_util::future::{AbortHandle, Abortable};
use futures_util::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Handlers, Incoming};
use crate::link::{panic_message, FastHasher};
use crate::wire::{codec, Encoding, RemoteError};
use crate::ErrorKind;

/// Something that answers requests for one method name.
pub(crate) trait Handler: Send + Sync + 'static {
    /// Starts handling `call`; the answer goes through `call.responder`, now or later.
    fn invoke(&self, call: Incoming, ctx: &Handlers);

    /// Whether this handler uses `call.deadline`; if not, the clock is not read for it.
    fn needs_deadline(&self) -> bool {
        true
    }
}

struct Entry {
    handler: Arc<dyn Handler>,
    help: String,
    /// Safe to run twice: retries (`Header::Retry`) are accepted.
    idempotent: bool,
    /// Node-only: refused unless the caller is a node.
    internal: bool,
}

/// What a request needs from the table to be run.
pub(crate) struct Route {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) idempotent: bool,
    pub(crate) internal: bool,
}

type Table = DashMap<String, Entry, BuildHasherDefault<FastHasher>>;

/// The method table; cheap to clone (all clones share one table).
#[derive(Clone, Default)]
pub(crate) struct Methods {
    table: Arc<Table>,
}

/// A handle to the method table that does not keep it alive (for methods about methods).
pub(crate) struct WeakMethods(std::sync::Weak<Table>);

impl WeakMethods {
    pub(crate) fn upgrade(&self) -> Option<Methods> {
        self.0.upgrade().map(|table| Methods { table })
    }
}

impl Methods {
    pub(crate) fn downgrade(&self) -> WeakMethods {
        WeakMethods(Arc::downgrade(&self.table))
    }

    pub(crate) fn insert(&self, name: &str, handler: Arc<dyn Handler>) {
        self.table.insert(
            name.to_owned(),
            Entry {
                handler,
                help: String::new(),
                idempotent: false,
                internal: false,
            },
        );
    }

    pub(crate) fn set_help(&self, name: &str, help: &str) {
        self.update(name, |e| e.help = help.to_owned());
    }

    /// The handler of `name` and how it may be called.
    pub(crate) fn lookup(&self, name: &str) -> Option<Route> {
        self.table.get(name).map(|entry| Route {
            handler: entry.handler.clone(),
            idempotent: entry.idempotent,
            internal: entry.internal,
        })
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut Entry)) {
        if let Some(mut entry) = self.table.get_mut(name) {
            change(&mut entry);
        }
    }

    pub(crate) fn help(&self, name: &str) -> Option<String> {
        self.table.get(name).map(|entry| entry.help.clone())
    }

    /// Every registered name, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.table.iter().map(|e| e.key().clone()).collect();
        names.sort();
        names
    }
}

/// A method's name together with its argument and result types, so that the server and its
/// callers share one definition and a type mistake is a compile error:
///
/// ```
/// use meshrpc::Method;
/// pub const ADD: Method<(i64, i64), i64> = Method::new("add");
/// ```
pub struct Method<A, R> {
    name: &'static str,
    _types: PhantomData<fn(A) -> R>,
}

impl<A, R> Method<A, R> {
    /// Declares a method called `name` taking `A` and returning `R`.
    pub const fn new(name: &'static str) -> Self {
        Method {
            name,
            _types: PhantomData,
        }
    }

    /// The method's registered name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A, R> Clone for Method<A, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A, R> Copy for Method<A, R> {}

/// Returned by registration, to attach the help text shown by `system.methodHelp`.
pub struct Registered<'a> {
    pub(crate) methods: &'a Methods,
    pub(crate) name: String,
}

impl Registered<'_> {
    /// Sets the method's help text.
    pub fn help(self, text: &str) -> Self {
        self.methods.set_help(&self.name, text);
        self
    }

    /// Declares the method safe to run more than once with the same arguments: callers
    /// that opt in ([`crate::CallOptions::retries`]) may then resend a call that timed out or
    /// lost its link. Other methods refuse such resends (`retry_refused`).
    pub fn idempotent(self) -> Self {
        self.methods.update(&self.name, |e| e.idempotent = true);
        self
    }

    /// Declares the method node-only: nodes call it on each other (membership, placement),
    /// and a plain client or the HTTP gateway calling it gets `forbidden`. Without a cluster
    /// cookie any process can claim to be a node, so only a cookie (or TLS) makes this a
    /// boundary; see docs/SECURITY.md.
    pub fn internal(self) -> Self {
        self.methods.update(&self.name, |e| e.internal = true);
        self
    }
}

/// A synchronous function returning `Result<R, E>`, run on the connection's reader.
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
    F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
    E: Display + 'static,
{
    fn needs_deadline(&self) -> bool {
        false // runs to completion at once
    }

    fn invoke(&self, call: Incoming, _ctx: &Handlers) {
        match decode_args::<A>(call.encoding, &call.body) {
            Ok(args) => call
                .responder
                .answer(catch_unwind(AssertUnwindSafe(|| (self.f)(args)))),
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
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Display + 'static,
{
    fn invoke(&self, call: Incoming, ctx: &Handlers) {
        let Incoming {
            encoding,
            body,
            deadline,
            responder,
        } = call;
        let args = match decode_args::<A>(encoding, &body) {
            Ok(args) => args,
            Err(e) => return responder.reply::<()>(Err(e)),
        };
        // Building the future runs user code too.
        let work = match catch_unwind(AssertUnwindSafe(|| (self.f)(args))) {
            Ok(work) => AssertUnwindSafe(work).catch_unwind(),
            Err(p) => return responder.fail(ErrorKind::Panicked, panic_message(&*p)),
        };
        let stop = ctx.stop.clone();
        // Registered before the task starts, so a `Cancel` arriving at once still finds it.
        let (abort, registration) = AbortHandle::new_pair();
        let tracked = responder.track(abort);
        ctx.tasks.spawn(async move {
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
        });
    }
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

/// Decodes a request's arguments; failures become `BadArguments` naming what did not fit.
pub(crate) fn decode_args<A: DeserializeOwned>(
    encoding: Encoding,
    body: &[u8],
) -> Result<A, RemoteError> {
    codec::decode_args(encoding, body).map_err(|e| {
        RemoteError::new(
            ErrorKind::BadArguments,
            format!("expected {}: {e}", std::any::type_name::<A>()),
        )
    })
}
