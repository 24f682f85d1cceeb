//! What a request runs: the method table ([`table`]) of plain functions ([`functions`]),
//! actors ([`actor`]) and declared services ([`service`]), what each method says about
//! itself ([`signature`]) and how its arguments are decoded ([`arguments`]), and the
//! introspection methods every node serves ([`introspection`]).
//!
//! [`Handlers`] is the link layer's [`Dispatch`]: for each request a reader admits it looks
//! the method up, applies the link's bounds through the responder, and invokes the handler,
//! which answers now (sync functions), from a task (async functions) or from an actor's task.
//! Handler tasks and actors run on the node's tracker and stop with its `stop` token.

mod actor;
mod arguments;
pub(crate) mod dynamic;
mod functions;
pub(crate) mod introspection;
pub(crate) mod reply;
pub(crate) mod service;
pub(crate) mod signature;
mod streaming;
mod table;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::link::{trace, Dispatch, Refused, Request, Responder, StreamPort};
use crate::wire::ErrorKind;
use crate::wire::{Encoding, RemoteError};

pub use actor::ActorBuilder;
pub(crate) use actor::{build_state, ActorMethod, Declared};
pub(crate) use dynamic::DynamicFn;
pub(crate) use functions::{AsyncFn, Handler, SyncFn};
pub use service::{infallible, BoxStream, Registry, Service};
pub use signature::{MethodInfo, Param};
pub use streaming::Items;
pub use table::Registered;
pub(crate) use table::{Entry, Methods};

use signature::Signature;

/// One admitted request or cast, handed to its handler with the method's [`Entry`].
pub(crate) struct Incoming {
    pub(crate) encoding: Encoding,
    pub(crate) body: Bytes,
    /// When the caller stops waiting, if it said (and the handler asked to know).
    pub(crate) deadline: Option<Instant>,
    /// For a keyed method called as `method/KEY`: the key.
    pub(crate) key: Option<Box<str>>,
    /// The caller is a node (not a plain client or the gateway).
    pub(crate) from_node: bool,
    pub(crate) responder: Responder,
    /// For a streaming method: the stream, and where its task runs.
    pub(crate) stream: Option<Streaming>,
    /// For a traced request: the context its handler runs in (calls it makes carry it).
    pub(crate) trace: Option<trace::Context>,
}

/// A stream a request opened, with the tracker and stop token its task runs under (an
/// actor's stream method starts it from the actor's task, which has no `Handlers`).
pub(crate) struct Streaming {
    pub(crate) port: StreamPort,
    pub(crate) tasks: TaskTracker,
    pub(crate) stop: CancellationToken,
}

impl Entry {
    /// The arguments of `call`, decoded as this method's argument type; `bad_arguments` in
    /// the method's own words otherwise.
    pub(crate) fn args<A: DeserializeOwned>(&self, call: &Incoming) -> Result<A, RemoteError> {
        arguments::decode(&self.name, &self.signature, call.encoding, &call.body)
    }
}

/// Actor name → a function reading its mailbox depth, for `/metrics`.
pub(crate) type Mailboxes =
    Arc<std::sync::Mutex<Vec<(String, Box<dyn Fn() -> usize + Send + Sync>)>>>;

/// The handlers of one node: its method table and what handlers need to run; cheap to clone
/// (every clone shares the table).
#[derive(Clone)]
pub(crate) struct Handlers {
    pub(crate) methods: Methods,
    /// Every handler task and actor is spawned here, so shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// Cancelled when running handlers must stop (after the shutdown grace).
    pub(crate) stop: CancellationToken,
    /// How to read each actor's mailbox depth.
    pub(crate) mailboxes: Mailboxes,
    /// Default mailbox capacity of a new actor.
    pub(crate) mailbox: usize,
}

impl Handlers {
    pub(crate) fn new(tasks: TaskTracker, stop: CancellationToken, mailbox: usize) -> Self {
        Handlers {
            methods: Methods::default(),
            tasks,
            stop,
            mailboxes: Mailboxes::default(),
            mailbox,
        }
    }

    /// Registers a synchronous function that can fail: its error is the caller's
    /// `application` error. For the node's own methods; users register through `Node::register`.
    pub(crate) fn register_try_fn<A, R, E, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: std::fmt::Display + 'static,
    {
        let handler = SyncFn::new(move |_: &Incoming, args: A| f(args));
        self.insert(name, Arc::new(handler), Signature::of::<A, R>())
    }

    /// Registers a synchronous function that cannot fail.
    pub(crate) fn register_fn<A, R, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        self.register_try_fn(name, move |args: A| {
            Ok::<R, std::convert::Infallible>(f(args))
        })
    }

    /// Registers an async function that can fail (the node's own methods).
    pub(crate) fn register_async<A, R, E, F, Fut>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let handler = AsyncFn::new(move |_: &Incoming, args: A| f(args));
        self.insert(name, Arc::new(handler), Signature::of::<A, R>())
    }

    /// Registers a function that reads its request (`Node::register` builds these): run on
    /// the reader when `f` answers at once, as a task per call when it returns a future.
    /// `R` is what the method says it returns (the `T` of a `Result<T, E>`).
    pub(crate) fn register_with<A, R, F, Out>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(&Incoming, A) -> Result<Out, reply::Failure> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Out: Serialize + 'static,
    {
        self.insert(name, Arc::new(SyncFn::new(f)), Signature::of::<A, R>())
    }

    /// [`Handlers::register_with`] for a function that returns a future.
    pub(crate) fn register_async_with<A, R, F, Fut, Out>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(&Incoming, A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<Out, reply::Failure>> + Send + 'static,
        Out: Serialize + Send + 'static,
    {
        self.insert(name, Arc::new(AsyncFn::new(f)), Signature::of::<A, R>())
    }

    /// Declares an actor (see `Node::actor`).
    pub(crate) fn actor<S: Send + 'static>(
        &self,
        name: &str,
        factory: impl Fn() -> S + Send + Sync + 'static,
    ) -> ActorBuilder<S> {
        ActorBuilder::new(self.clone(), name, self.mailbox, Arc::new(factory))
    }

    pub(crate) fn insert(
        &self,
        name: &str,
        handler: Arc<dyn Handler>,
        signature: Signature,
    ) -> Registered<'_> {
        self.methods.insert(name, handler, signature);
        Registered {
            methods: &self.methods,
            name: name.to_owned(),
        }
    }
}

impl Handlers {
    /// `method/KEY` for a keyed method: its entry and the key.
    #[cold]
    fn lookup_keyed(&self, name: &str) -> (Option<Arc<Entry>>, Option<Box<str>>) {
        let Some((method, key)) = name.split_once('/') else {
            return (None, None);
        };
        match self.methods.lookup(method) {
            Some(entry) if entry.handler.keyed() => (Some(entry), Some(key.into())),
            _ => (None, None),
        }
    }
}

impl Dispatch for Handlers {
    fn dispatch(&self, request: Request<'_>) {
        let Request {
            method,
            encoding,
            timeout_ms,
            retry,
            from_node,
            signature,
            trace,
            body,
            mut responder,
            stream,
        } = request;
        let (found, key) = match self.methods.lookup(method) {
            Some(entry) => (Some(entry), None),
            None => self.lookup_keyed(method),
        };
        if responder.metered() {
            // Only registered names become labels: a caller cannot grow the label set.
            let label = match &found {
                Some(entry) => metrics::SharedString::from(entry.name.clone()),
                None => metrics::SharedString::const_str("<unknown>"),
            };
            responder.meter(label);
        }
        if let Err(refused) = responder.admit() {
            // A virtual actor's call refused by a stopping node ran nothing and has another
            // home: `moved` tells forwarders and `ActorRef`s to try the new owner.
            if key.is_some() && matches!(refused, Refused::Closing) {
                let message = "this node is stopping and hands its virtual actors over";
                return responder.fail(ErrorKind::Moved, message);
            }
            return responder.refuse(refused);
        }
        let Some(entry) = found else {
            return responder.fail(
                ErrorKind::MethodNotFound,
                format!("no method `{method}` is registered"),
            );
        };
        if entry.internal && !from_node {
            let message = "it is node-only: nodes call it on each other, clients and the HTTP gateway may not";
            return responder.fail(ErrorKind::Forbidden, message);
        }
        if let (Some(theirs), Some(ours)) = (signature, entry.signature.fingerprint) {
            if theirs != ours {
                let message = format!(
                    "the callee declares `{}`, which the caller's definition does not match",
                    entry.signature.text(method)
                );
                return responder.fail(ErrorKind::BadArguments, message);
            }
        }
        if stream.is_some() != entry.handler.streams() {
            return streaming::wrong_shape(responder, entry.handler.streams());
        }
        if retry && !entry.idempotent {
            let message = format!("`{method}` is not registered as idempotent, so a call that may have run is not run again");
            return responder.fail(ErrorKind::RetryRefused, message);
        }
        // A request (not a stream) runs at most the node's `max_call`, deadline or not.
        let timeout = timeout_ms.map(Duration::from_millis);
        let timeout = if stream.is_none() {
            responder.bound(timeout)
        } else {
            timeout
        };
        let deadline = match timeout {
            Some(t) if entry.handler.needs_deadline() => Instant::now().checked_add(t),
            _ => None,
        };
        // A traced request is a hop of its caller's trace; its handler runs in that context.
        let trace = trace.map(|parent| responder.trace(parent, &entry.name));
        let context = trace.clone();
        let call = Incoming {
            encoding,
            body,
            deadline,
            key,
            from_node,
            trace,
            responder,
            stream: stream.map(|port| Streaming {
                port,
                tasks: self.tasks.clone(),
                stop: self.stop.clone(),
            }),
        };
        trace::in_context(context, || entry.handler.invoke(&entry, call, self));
    }
}
