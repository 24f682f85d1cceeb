//! One way to register a method by name: [`Node::register`] takes a closure, and the
//! closure's shape says the rest, the way axum reads a handler's signature:
//!
//! | closure | runs |
//! |---|---|
//! | `\|args: A\| value` | at once, on the connection's reader (keep it quick) |
//! | `\|args: A\| async move { value }` | as its own task per call |
//! | `\|cx: RequestContext, args: A\| …` | either of the above, with the request's context |
//!
//! A closure that returns `Result<T, E>` is fallible: `Ok(t)` answers `t`, `Err(e)` is the
//! caller's `application` error with `e`'s text (a string is its own text, anything else its
//! JSON) and `e` itself as data (`RpcError::data`). So `E` is `Serialize`: an error type that
//! is not (`std::io::Error`, `anyhow::Error`) goes through `.map_err(|e| e.to_string())`.
//! Anything else the closure returns is the answer; to answer with a `Result` as data, wrap
//! it in a newtype struct. A closure always takes its arguments, `(): ()` when there are
//! none. Streams have the same two shapes through [`Node::register_stream`].

use std::future::Future;

use futures_util::{FutureExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::{Node, WeakNode};
use crate::error::RpcError;
use crate::handlers::dynamic::{Function, Raised, Value};
use crate::handlers::reply::split;
use crate::handlers::DynamicFn;
use crate::handlers::{Incoming, Items, Registered};
use crate::link::PeerInfo;
use crate::wire::Trace;

/// What a handler may know about the call it answers: who made it, until when the caller
/// waits, the trace it belongs to, and the node it runs on (to call other nodes).
#[derive(Clone)]
pub struct RequestContext {
    node: WeakNode,
    caller: Option<PeerInfo>,
    deadline: Option<Instant>,
    trace: Option<Trace>,
}

impl RequestContext {
    fn of(node: &WeakNode, call: &Incoming) -> Self {
        RequestContext {
            node: node.clone(),
            caller: call.responder.caller().cloned(),
            deadline: call.deadline,
            trace: call.trace.as_ref().map(|context| context.trace),
        }
    }

    /// The node this handler runs on, to call other nodes with.
    ///
    /// # Errors
    /// `Shutdown` once every other handle to the node is gone.
    pub fn node(&self) -> Result<Node, RpcError> {
        self.node
            .upgrade()
            .ok_or_else(|| RpcError::Shutdown("the node this handler ran on is gone".into()))
    }

    /// Who called: the node or client at the other end of the link; `None` for a call this
    /// node made to itself.
    pub fn caller(&self) -> Option<&PeerInfo> {
        self.caller.as_ref()
    }

    /// When the caller stops waiting, if it said; a handler that returns a future is
    /// stopped at that moment (one that answers at once is not given one).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The trace this call belongs to, when the caller traced it; calls the handler makes
    /// carry it already.
    pub fn trace(&self) -> Option<Trace> {
        self.trace
    }
}

/// A closure [`Node::register`] accepts; `M` is inferred (see the module's table).
pub trait IntoHandler<M>: Send + Sync + Sized + 'static {
    #[doc(hidden)]
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n>;
}

/// Which shape of closure a registration is: inferred, never named by callers.
#[allow(unreachable_pub)]
pub(crate) mod shapes {
    use std::marker::PhantomData;

    pub struct Sync<A, R>(PhantomData<fn(A) -> R>);
    pub struct Async<A, R>(PhantomData<fn(A) -> R>);
    pub struct SyncWithContext<A, R>(PhantomData<fn(A) -> R>);
    pub struct AsyncWithContext<A, R>(PhantomData<fn(A) -> R>);
    pub struct Server<A, T>(PhantomData<fn(A) -> T>);
    pub struct Upload<A, U, R>(PhantomData<fn(A, U) -> R>);
    pub struct Bidi<A, U, T>(PhantomData<fn(A, U) -> T>);
    pub struct Dynamic<Fut>(PhantomData<fn() -> Fut>);
}

impl<F, A, R> IntoHandler<shapes::Sync<A, R>> for F
where
    F: Fn(A) -> R + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let f = move |_: &Incoming, args: A| split(self(args));
        node.core.handlers.register_with::<A, R, _, _>(name, f)
    }
}

impl<F, A, Fut> IntoHandler<shapes::Async<A, Fut>> for F
where
    F: Fn(A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Serialize + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let f = move |_: &Incoming, args: A| self(args).map(split);
        let handlers = &node.core.handlers;
        handlers.register_async_with::<A, Fut::Output, _, _, _>(name, f)
    }
}

impl<F, A, R> IntoHandler<shapes::SyncWithContext<A, R>> for F
where
    F: Fn(RequestContext, A) -> R + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let weak = node.downgrade();
        let f = move |call: &Incoming, args: A| split(self(RequestContext::of(&weak, call), args));
        node.core.handlers.register_with::<A, R, _, _>(name, f)
    }
}

impl<F, A, Fut> IntoHandler<shapes::AsyncWithContext<A, Fut>> for F
where
    F: Fn(RequestContext, A) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Serialize + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let weak = node.downgrade();
        let f =
            move |call: &Incoming, args: A| self(RequestContext::of(&weak, call), args).map(split);
        let handlers = &node.core.handlers;
        handlers.register_async_with::<A, Fut::Output, _, _, _>(name, f)
    }
}

/// A method whose types are known only at run time (a binding for another language):
/// its arguments are decoded by its declared types, its result checked against them.
impl<F, Fut> IntoHandler<shapes::Dynamic<Fut>> for Function<F>
where
    F: Fn(RequestContext, Vec<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Raised>> + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let weak = node.downgrade();
        let Function { method, f } = self;
        let call = move |call: &Incoming, args: Vec<Value>| {
            f(RequestContext::of(&weak, call), args).boxed()
        };
        let handler = std::sync::Arc::new(DynamicFn::new(&method, call));
        node.core.handlers.insert(name, handler, method.signature())
    }
}

/// A closure [`Node::register_stream`] accepts; `M` is inferred from its shape.
pub trait IntoStreamHandler<M>: Send + Sync + Sized + 'static {
    #[doc(hidden)]
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n>;
}

/// A server stream: `|args| stream`; an `Err` item ends it with that error.
impl<F, A, S> IntoStreamHandler<shapes::Server<A, S>> for F
where
    F: Fn(A) -> S + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    S: Stream + Send + 'static,
    S::Item: Serialize + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let f = move |args: A| self(args).map(split);
        node.core.handlers.register_try_stream(name, f)
    }
}

/// A client stream: `|args, items| async move { answer }`.
impl<F, A, U, Fut> IntoStreamHandler<shapes::Upload<A, U, Fut>> for F
where
    F: Fn(A, Items<U>) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    U: DeserializeOwned + 'static,
    Fut: Future + Send + 'static,
    Fut::Output: Serialize + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let f = move |args: A, items: Items<U>| self(args, items).map(split);
        node.core.handlers.register_client_stream(name, f)
    }
}

/// A bidirectional stream: `|args, items| stream`.
impl<F, A, U, S> IntoStreamHandler<shapes::Bidi<A, U, S>> for F
where
    F: Fn(A, Items<U>) -> S + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    U: DeserializeOwned + 'static,
    S: Stream + Send + 'static,
    S::Item: Serialize + Send + 'static,
{
    fn register<'n>(self, node: &'n Node, name: &str) -> Registered<'n> {
        let f = move |args: A, items: Items<U>| self(args, items).map(split);
        node.core.handlers.register_bidi_stream(name, f)
    }
}
