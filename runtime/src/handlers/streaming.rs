//! The handlers of streaming methods: server streams (a function returning a `Stream`),
//! client streams (an async function reading the caller's [`Items`]) and bidirectional
//! ones (a function from the caller's items to a stream of its own). Each stream runs as
//! one task on the node's tracker, like an async function: it sends an item whenever the
//! caller has credit for one, and its reply — `()` for a stream, the result for a client
//! stream, or the error that ended it — ends the stream. It stops when the caller cancels
//! (its task is aborted), the deadline passes, the link closes, or the node's `stop` token
//! is cancelled.

use crate::link::Fault;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{AbortHandle, Abortable};
use futures_util::{FutureExt, Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::functions::Handler;
use super::signature::Signature;
use super::{Entry, Handlers, Incoming, Registered, Streaming};
use crate::error::RpcError;
use crate::link::{panic_message, Ending, Responder, SendError, StreamPort};
use crate::wire::codec::decode_result;
use crate::wire::{ErrorKind, RemoteError};

/// The items a caller streams to a method: a `Stream` of decoded items, ending cleanly when
/// the caller finishes its upload, or with an error (`disconnected` when the caller went
/// away, `bad_arguments` for an item that does not decode) after which nothing follows.
pub struct Items<T> {
    port: Arc<StreamPort>,
    method: Arc<str>,
    done: bool,
    _item: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Items<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Items({})", self.method)
    }
}

impl<T: DeserializeOwned> Stream for Items<T> {
    type Item = Result<T, RpcError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        let next = match self.port.poll_upload(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        let method = self.method.to_string();
        match next {
            Ok(bytes) => match decode_result::<T>(self.port.encoding(), &bytes) {
                Ok(item) => Poll::Ready(Some(Ok(item))),
                Err(e) => {
                    self.done = true;
                    let detail = format!("an item uploaded to `{method}` does not decode: {e}");
                    Poll::Ready(Some(Err(RpcError::BadArguments { method, detail })))
                }
            },
            Err(Ending::Complete) => {
                self.done = true;
                Poll::Ready(None)
            }
            Err(Ending::Broken(reason)) => {
                self.done = true;
                Poll::Ready(Some(Err(RpcError::Disconnected {
                    peer: reason,
                    method,
                })))
            }
        }
    }
}

/// How the items a handler produces leave.
async fn produce<S, T, E>(items: S, port: &StreamPort, method: &str) -> Outcome<()>
where
    S: Stream<Item = Result<T, E>>,
    T: Serialize,
    E: Fault,
{
    let mut items = std::pin::pin!(items);
    loop {
        // Polling the stream runs user code.
        let next = match AssertUnwindSafe(items.next()).catch_unwind().await {
            Ok(next) => next,
            Err(p) => return Outcome::failed(ErrorKind::Panicked, panic_message(&*p)),
        };
        let item = match next {
            None => return Outcome::Done(()),
            Some(Err(e)) => {
                return Outcome::Failed(e.into_error());
            }
            Some(Ok(item)) => item,
        };
        if port.credit().await.is_err() {
            return Outcome::Gone;
        }
        match port.push(&item, method) {
            Ok(()) => {}
            Err(SendError::Closed) => return Outcome::Gone,
            Err(SendError::Item(e)) => return Outcome::failed(e.kind(), e.to_string()),
        }
    }
}

/// Sends `items` from a task of their own, then answers (see [`spawn`]).
pub(super) fn send_all<S, T, E>(
    items: S,
    entry: &Entry,
    runs: Runs,
    call: Incoming,
    port: Arc<StreamPort>,
) where
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Fault + Send + 'static,
{
    let (method, sender) = (entry.name.clone(), port.clone());
    spawn(runs, call, port, async move {
        produce(items, &sender, &method).await
    });
}

/// How a stream's task ended.
enum Outcome<R> {
    /// Its reply.
    Done(R),
    /// Its error, with the handler's own value when it returned one.
    Failed(RemoteError),
    /// The caller is gone: nobody to answer.
    Gone,
}

impl<R> Outcome<R> {
    fn failed(kind: ErrorKind, message: String) -> Self {
        Outcome::Failed(RemoteError::new(kind, message))
    }
}

/// Runs a stream's `work` as a task: abortable by the caller's `Cancel`, bounded by the
/// deadline, stopped with the node; then answers.
fn spawn<R, W>(runs: Runs, call: Incoming, port: Arc<StreamPort>, work: W)
where
    R: Serialize + Send + 'static,
    W: Future<Output = Outcome<R>> + Send + 'static,
{
    let Incoming {
        deadline,
        responder,
        trace,
        ..
    } = call;
    let Runs { tasks, stop } = runs;
    let (abort, registration) = AbortHandle::new_pair();
    let tracked = responder.track(abort);
    tasks.spawn(crate::link::trace::future_in(trace, async move {
        let _tracked = tracked;
        let run = async {
            match deadline {
                Some(at) => tokio::time::timeout_at(at, work).await.ok(),
                None => Some(work.await),
            }
        };
        let outcome = tokio::select! {
            biased;
            // Dropping the responder answers `shutdown`.
            _ = stop.cancelled() => return,
            // Its link closed (or the caller cancelled): nobody reads what it makes.
            _ = port.gone() => return responder.abandon(),
            outcome = Abortable::new(run, registration) => outcome,
        };
        drop(port);
        match outcome {
            Err(_aborted) => responder.abandon(),
            Ok(None) => responder.fail(
                ErrorKind::Timeout,
                "the stream outlived the caller's deadline",
            ),
            Ok(Some(Outcome::Gone)) => responder.abandon(),
            Ok(Some(Outcome::Failed(error))) => responder.reply::<()>(Err(error)),
            Ok(Some(Outcome::Done(value))) => responder.reply(Ok(&value)),
        }
    }));
}

/// Where a stream's task runs.
pub(super) struct Runs {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

/// The arguments and the stream of a call the dispatcher routed here (it checked the
/// shape); `None` after answering the caller.
pub(super) fn open<A: DeserializeOwned>(
    entry: &Entry,
    mut call: Incoming,
) -> Option<(A, Arc<StreamPort>, Runs, Incoming)> {
    let args = match entry.args::<A>(&call) {
        Ok(args) => args,
        Err(e) => {
            call.responder.reply::<()>(Err(e));
            return None;
        }
    };
    let Some(Streaming { port, tasks, stop }) = call.stream.take() else {
        not_a_stream(call.responder);
        return None;
    };
    Some((args, Arc::new(port), Runs { tasks, stop }, call))
}

fn not_a_stream(responder: Responder) {
    responder.fail(
        ErrorKind::Streaming,
        "streams: open it as a stream; it did not run",
    );
}

pub(super) fn panicked(call: Incoming, p: Box<dyn std::any::Any + Send>) {
    call.responder.fail(ErrorKind::Panicked, panic_message(&*p));
}

/// A server stream: `f(args)` returns the items.
pub(crate) struct ServerStream<F, A> {
    pub(crate) f: F,
    pub(crate) _args: PhantomData<fn(A)>,
}

impl<F, A, S, T, E> Handler for ServerStream<F, A>
where
    F: Fn(A) -> S + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Fault + Send + 'static,
{
    fn streams(&self) -> bool {
        true
    }

    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, _ctx: &Handlers) {
        let Some((args, port, runs, call)) = open::<A>(entry, call) else {
            return;
        };
        let items = match catch_unwind(AssertUnwindSafe(|| (self.f)(args))) {
            Ok(items) => items,
            Err(p) => return panicked(call, p),
        };
        send_all(items, entry, runs, call, port);
    }
}

/// A client stream: `f(args, items)` reads the caller's items and answers once.
pub(crate) struct ClientStream<F, A, U> {
    pub(crate) f: F,
    pub(crate) _types: PhantomData<fn(A, U)>,
}

impl<F, A, U, Fut, R, E> Handler for ClientStream<F, A, U>
where
    F: Fn(A, Items<U>) -> Fut + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    U: DeserializeOwned + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: Serialize + Send + 'static,
    E: Fault + 'static,
{
    fn streams(&self) -> bool {
        true
    }

    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, _ctx: &Handlers) {
        let Some((args, port, runs, call)) = open::<A>(entry, call) else {
            return;
        };
        let items = upload(entry, &port);
        let work = match catch_unwind(AssertUnwindSafe(|| (self.f)(args, items))) {
            Ok(work) => work,
            Err(p) => return panicked(call, p),
        };
        spawn(runs, call, port, async move {
            match AssertUnwindSafe(work).catch_unwind().await {
                Ok(Ok(value)) => Outcome::Done(value),
                Ok(Err(e)) => Outcome::Failed(e.into_error()),
                Err(p) => Outcome::failed(ErrorKind::Panicked, panic_message(&*p)),
            }
        });
    }
}

fn upload<U>(entry: &Entry, port: &Arc<StreamPort>) -> Items<U> {
    port.accept_upload();
    Items {
        port: port.clone(),
        method: entry.name.clone(),
        done: false,
        _item: PhantomData,
    }
}

/// A bidirectional stream: `f(args, items)` returns a stream of its own.
pub(crate) struct BidiStream<F, A, U> {
    pub(crate) f: F,
    pub(crate) _types: PhantomData<fn(A, U)>,
}

impl<F, A, U, S, T, E> Handler for BidiStream<F, A, U>
where
    F: Fn(A, Items<U>) -> S + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    U: DeserializeOwned + 'static,
    S: Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Fault + Send + 'static,
{
    fn streams(&self) -> bool {
        true
    }

    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, _ctx: &Handlers) {
        let Some((args, port, runs, call)) = open::<A>(entry, call) else {
            return;
        };
        let items = upload(entry, &port);
        let out = match catch_unwind(AssertUnwindSafe(|| (self.f)(args, items))) {
            Ok(out) => out,
            Err(p) => return panicked(call, p),
        };
        send_all(out, entry, runs, call, port);
    }
}

/// The error a stream opened on a plain method gets, or a plain call of a stream.
pub(crate) fn wrong_shape(responder: Responder, streams: bool) {
    if streams {
        not_a_stream(responder)
    } else {
        let message = "is a plain method, not a stream: call it as a request; it did not run";
        responder.fail(ErrorKind::Streaming, message)
    }
}

impl Handlers {
    /// Registers a server stream (`Node::register_stream`, `|args| stream`).
    pub(crate) fn register_try_stream<A, T, E, S, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        S: futures_util::Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: Fault + Send + 'static,
    {
        let handler = ServerStream {
            f,
            _args: std::marker::PhantomData,
        };
        let signature = Signature::streaming::<A, ()>(Signature::stream_of::<T>());
        self.insert(name, Arc::new(handler), signature)
    }

    /// Registers a client stream (`Node::register_stream`, `|args, items| future`).
    pub(crate) fn register_client_stream<A, U, R, E, F, Fut>(
        &self,
        name: &str,
        f: F,
    ) -> Registered<'_>
    where
        F: Fn(A, Items<U>) -> Fut + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        Fut: std::future::Future<Output = Result<R, E>> + Send + 'static,
        R: Serialize + Send + 'static,
        E: Fault + 'static,
    {
        let handler = ClientStream {
            f,
            _types: std::marker::PhantomData,
        };
        let result =
            super::signature::friendly(&super::signature::ok_type(std::any::type_name::<R>()));
        self.insert(
            name,
            Arc::new(handler),
            Signature::streaming::<A, U>(result),
        )
    }

    /// Registers a bidirectional stream (`Node::register_stream`, `|args, items| stream`).
    pub(crate) fn register_bidi_stream<A, U, T, E, S, F>(&self, name: &str, f: F) -> Registered<'_>
    where
        F: Fn(A, Items<U>) -> S + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        U: DeserializeOwned + 'static,
        S: futures_util::Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: Fault + Send + 'static,
    {
        let handler = BidiStream {
            f,
            _types: std::marker::PhantomData,
        };
        let signature = Signature::streaming::<A, U>(Signature::stream_of::<T>());
        self.insert(name, Arc::new(handler), signature)
    }
}
