//! Typed services: the [`service!`](crate::service) macro turns one definition into a server
//! trait, a `…Server` wrapper that registers an implementation ([`Service`], through a
//! [`Registry`]), and a typed `…Client` whose calls carry each method's fingerprint.
//!
//! Methods are registered by name, one handler each (no enum of requests): adding a method
//! to a service never changes how the others are called. The macro is declarative; the one
//! thing `macro_rules!` cannot do, joining identifiers (`Calc` → `CalcClient`), is done by
//! `pastey`.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use futures_util::{Stream, StreamExt};

use super::signature::{MethodInfo, Signature};
use super::streaming::{BidiStream, ClientStream, Items, ServerStream};
use super::{AsyncFn, Handlers, SyncFn};

mod declare;

/// Something that registers its methods on a node: what [`crate::node::Node::serve`] takes. The
/// `…Server` types [`crate::service!`] generates implement it.
pub trait Service {
    /// Registers every method of the service.
    fn register(self, registry: &Registry<'_>);
}

/// Where a [`Service`] registers its methods.
pub struct Registry<'a> {
    pub(crate) handlers: &'a Handlers,
}

impl Registry<'_> {
    /// Registers a synchronous method declared by `info`: it runs on the connection's reader,
    /// so it must be quick. Its error becomes an `application` error for the caller.
    pub fn sync_method<A, R, E, F>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Display + 'static,
    {
        let signature = Signature::declared(info);
        self.handlers.insert(
            info.name,
            Arc::new(SyncFn::new(move |_: &_, a| f(a))),
            signature,
        );
    }

    /// Registers an async method declared by `info`; each call runs as its own task.
    pub fn async_method<A, R, E, F, Fut>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + 'static,
    {
        let signature = Signature::declared(info);
        self.handlers.insert(
            info.name,
            Arc::new(AsyncFn::new(move |_: &_, a| f(a))),
            signature,
        );
    }

    /// Registers a server stream declared by `info`: `f(args)` returns its items; an `Err`
    /// item ends the stream with an `application` error.
    pub fn stream_method<A, T, E, S, F>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = ServerStream {
            f,
            _args: std::marker::PhantomData,
        };
        let signature = Signature::declared(info);
        self.handlers
            .insert(info.name, Arc::new(handler), signature);
    }

    /// Registers a client stream declared by `info`: `f(args, items)` reads the caller's
    /// items and answers once.
    pub fn upload_method<A, U, R, E, F, Fut>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A, Items<U>) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Display + 'static,
    {
        let handler = ClientStream {
            f,
            _types: std::marker::PhantomData,
        };
        let signature = Signature::declared(info);
        self.handlers
            .insert(info.name, Arc::new(handler), signature);
    }

    /// Registers a bidirectional stream declared by `info`: `f(args, items)` returns a
    /// stream of its own.
    pub fn bidi_method<A, U, T, E, S, F>(&self, info: &'static MethodInfo, f: F)
    where
        F: Fn(A, Items<U>) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        S: Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: Display + Send + 'static,
    {
        let handler = BidiStream {
            f,
            _types: std::marker::PhantomData,
        };
        let signature = Signature::declared(info);
        self.handlers
            .insert(info.name, Arc::new(handler), signature);
    }
}

/// A stream a service method returns: boxed, so a trait method can name its type.
pub type BoxStream<T> = futures_util::stream::BoxStream<'static, T>;

/// Items that cannot fail, as the registration takes them (macro support).
#[doc(hidden)]
pub fn infallible<T>(
    items: BoxStream<T>,
) -> impl Stream<Item = Result<T, std::convert::Infallible>> {
    items.map(Ok)
}
