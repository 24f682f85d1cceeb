//! Stateful services: an actor is a task that owns a value `S` and runs its methods one at a
//! time with `&mut S`, fed by a bounded mailbox.
//!
//! [`ActorBuilder`] registers each method as `actor.method` in the node's table; a request for
//! it is forwarded to the mailbox without waiting (a full mailbox answers `Overloaded`). The
//! actor answers through the request's responder. A method that panics gets `Panicked` and the
//! actor's state is rebuilt from its factory. The task stops when the node stops.

use crate::link::Fault;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tracing::{error, warn};

use super::functions::Handler;
use super::reply::split;
use super::signature::Signature;
use super::streaming::{open, panicked, send_all};
use super::{Entry, Handlers, Incoming};
use crate::link::panic_message;
use crate::wire::ErrorKind;

/// One method of an actor with state `S`, type-erased.
pub(crate) trait ActorMethod<S>: Send + Sync + 'static {
    /// Runs the method on `state` and answers; returns true if it panicked.
    fn invoke(&self, state: &mut S, entry: &Entry, call: Incoming) -> bool;

    /// Whether it is a stream method (opened with `StreamOpen`).
    fn streams(&self) -> bool {
        false
    }

    /// For a method answered by a future (a binding's function on a virtual actor): runs
    /// its synchronous part on `state` and returns the future, which answers and is true
    /// if the method panicked; the key's turn awaits it (`None`: answered already). Every
    /// other method runs with [`ActorMethod::invoke`].
    fn start(
        &self,
        _state: &mut S,
        _entry: &Entry,
        call: Incoming,
    ) -> Option<futures_util::future::BoxFuture<'static, bool>> {
        let message = "internal: a method that answers at once was awaited";
        call.responder.fail(ErrorKind::Protocol, message);
        None
    }

    /// Whether [`ActorMethod::start`] runs it.
    fn awaits(&self) -> bool {
        false
    }
}

pub(crate) struct TypedMethod<F, A, R, E> {
    f: F,
    _types: PhantomData<fn(A) -> Result<R, E>>,
}

impl<F, A, R, E> TypedMethod<F, A, R, E> {
    pub(crate) fn new(f: F) -> Self {
        TypedMethod {
            f,
            _types: PhantomData,
        }
    }
}

impl<S, F, A, R, E> ActorMethod<S> for TypedMethod<F, A, R, E>
where
    F: Fn(&mut S, A) -> Result<R, E> + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    R: Serialize + 'static,
    E: Fault + 'static,
{
    fn invoke(&self, state: &mut S, entry: &Entry, call: Incoming) -> bool {
        // Its caller's link closed while it waited: nobody would hear the answer.
        if call.responder.is_gone() {
            call.responder.abandon();
            return false;
        }
        if call.deadline.is_some_and(|at| Instant::now() >= at) {
            call.responder.fail(
                ErrorKind::Timeout,
                "the call waited in the mailbox past its deadline",
            );
            return false;
        }
        let args = match entry.args::<A>(&call) {
            Ok(args) => args,
            Err(e) => {
                call.responder.reply::<()>(Err(e));
                return false;
            }
        };
        let (responder, trace) = (call.responder, call.trace);
        // Calls the method makes belong to the caller's trace, if any.
        let ran = crate::link::trace::in_context(trace, || {
            catch_unwind(AssertUnwindSafe(|| (self.f)(state, args)))
        });
        let panicked = ran.is_err();
        responder.answer(ran);
        panicked
    }
}

struct Msg<S> {
    method: Arc<dyn ActorMethod<S>>,
    entry: Arc<Entry>,
    call: Incoming,
}

/// The handler registered for each actor method: forwards to the mailbox.
struct Forward<S> {
    actor: Arc<str>,
    capacity: usize,
    method: Arc<dyn ActorMethod<S>>,
    mailbox: mpsc::Sender<Msg<S>>,
}

impl<S: Send + 'static> Handler for Forward<S> {
    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, _ctx: &Handlers) {
        let msg = Msg {
            method: self.method.clone(),
            entry: entry.clone(),
            call,
        };
        match self.mailbox.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => {
                let message = format!(
                    "the mailbox of actor `{}` is full ({} messages)",
                    self.actor, self.capacity
                );
                msg.call.responder.fail(ErrorKind::Overloaded, message);
            }
            Err(TrySendError::Closed(msg)) => {
                let message = format!("actor `{}` has stopped", self.actor);
                msg.call.responder.fail(ErrorKind::Shutdown, message);
            }
        }
    }

    fn streams(&self) -> bool {
        self.method.streams()
    }
}

type Factory<S> = Arc<dyn Fn() -> S + Send + Sync>;

/// Declares an actor's methods, then starts it with [`ActorBuilder::start`].
pub struct ActorBuilder<S> {
    ctx: Handlers,
    name: String,
    factory: Factory<S>,
    mailbox: usize,
    methods: Vec<Declared<S>>,
}

/// A method added to an [`ActorBuilder`], registered at [`ActorBuilder::start`].
/// A method declared on an actor's builder (plain or virtual), registered at `start`.
pub(crate) struct Declared<S> {
    pub(crate) name: String,
    pub(crate) help: String,
    pub(crate) signature: Signature,
    pub(crate) method: Arc<dyn ActorMethod<S>>,
}

impl<S: Send + 'static> Declared<S> {
    /// The declaration of `f` as method `name`.
    pub(crate) fn new<A, R, E, F>(name: &str, f: F) -> Self
    where
        F: Fn(&mut S, A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Fault + 'static,
    {
        Declared {
            name: name.to_owned(),
            help: String::new(),
            signature: Signature::of::<A, R>(),
            method: Arc::new(TypedMethod::new(f)),
        }
    }

    /// The declaration of the server-stream method `f` as method `name`.
    pub(crate) fn stream<A, T, E, St, F>(name: &str, f: F) -> Self
    where
        F: Fn(&mut S, A) -> St + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        St: futures_util::Stream<Item = Result<T, E>> + Send + 'static,
        T: Serialize + Send + 'static,
        E: Fault + Send + 'static,
    {
        Declared {
            name: name.to_owned(),
            help: String::new(),
            signature: Signature::streaming::<A, ()>(Signature::stream_of::<T>()),
            method: Arc::new(ActorStream {
                f,
                _args: PhantomData,
            }),
        }
    }
}

impl<S: Send + 'static> ActorBuilder<S> {
    pub(crate) fn new(ctx: Handlers, name: &str, mailbox: usize, factory: Factory<S>) -> Self {
        ActorBuilder {
            ctx,
            name: name.to_owned(),
            factory,
            mailbox,
            methods: Vec::new(),
        }
    }

    /// Adds a method `name.method`: `f(&mut state, args)` runs in the actor's turn. A
    /// method returning `Result<T, E>` is fallible: its `Err` is the caller's `application`
    /// error.
    pub fn method<A, R, F>(mut self, method: &str, f: F) -> Self
    where
        F: Fn(&mut S, A) -> R + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
    {
        let f = move |state: &mut S, args: A| split(f(state, args));
        self.methods.push(Declared::new(method, f));
        self
    }

    /// Adds a stream method `name.method`: `f(&mut state, args)` runs in the actor's turn
    /// and returns the items, which are sent by a task of their own while the actor goes on
    /// (capture what the stream needs: a copy of the state, or a channel it feeds). An item
    /// that is an `Err` ends the stream with that error.
    pub fn stream_method<A, St, F>(mut self, method: &str, f: F) -> Self
    where
        F: Fn(&mut S, A) -> St + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        St: futures_util::Stream + Send + 'static,
        St::Item: Serialize + Send + 'static,
    {
        use futures_util::StreamExt;
        let f = move |state: &mut S, args: A| f(state, args).map(split);
        self.methods.push(Declared::stream(method, f));
        self
    }

    /// Sets the help text of the method added last.
    pub fn help(mut self, text: &str) -> Self {
        if let Some(last) = self.methods.last_mut() {
            last.help = text.to_owned();
        }
        self
    }

    /// Names the parameters of the method added last (see [`crate::handlers::Registered::params`]).
    pub fn params(mut self, names: &[&str]) -> Self {
        if let Some(last) = self.methods.last_mut() {
            last.signature.name_params(names);
        }
        self
    }

    /// Sets the mailbox capacity (default: the node's `mailbox` setting).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.mailbox = capacity.max(1);
        self
    }

    /// Spawns the actor and registers its methods.
    pub fn start(self) {
        let (tx, rx) = mpsc::channel(self.mailbox);
        let actor: Arc<str> = self.name.as_str().into();
        for declared in self.methods {
            let name = format!("{}.{}", self.name, declared.name);
            let forward = Forward {
                actor: actor.clone(),
                capacity: self.mailbox,
                method: declared.method,
                mailbox: tx.clone(),
            };
            self.ctx
                .methods
                .insert(&name, Arc::new(forward), declared.signature);
            self.ctx.methods.set_help(&name, &declared.help);
        }
        let queued = tx.downgrade();
        let depth = move || {
            queued
                .upgrade()
                .map_or(0, |tx| tx.max_capacity() - tx.capacity())
        };
        let mut mailboxes = self.ctx.mailboxes.lock().unwrap_or_else(|e| e.into_inner());
        mailboxes.push((self.name.clone(), Box::new(depth)));
        drop(mailboxes);
        let stop = self.ctx.stop.clone();
        self.ctx.tasks.spawn(run(actor, self.factory, rx, stop));
    }
}

async fn run<S: 'static>(
    name: Arc<str>,
    factory: Factory<S>,
    mut mailbox: mpsc::Receiver<Msg<S>>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(mut state) = build(&name, &factory) else {
        return;
    };
    loop {
        let msg = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            msg = mailbox.recv() => match msg { Some(msg) => msg, None => break },
        };
        // `invoke` catches the method's own panics; this also covers decoding and encoding
        // (user Serialize/Deserialize code), so no panic can end the actor.
        let panicked = catch_unwind(AssertUnwindSafe(|| {
            msg.method.invoke(&mut state, &msg.entry, msg.call)
        }))
        .unwrap_or(true);
        if panicked {
            warn!(actor = %name, "a method panicked; restarting the actor from its factory");
            match build(&name, &factory) {
                Some(fresh) => state = fresh,
                None => break,
            }
        }
    }
    // Messages still queued are dropped here; their responders answer `Shutdown`.
}

/// Runs a state factory, catching its panic (logged under the actor's `name`).
pub(crate) fn build_state<S>(name: &str, factory: impl FnOnce() -> S) -> Option<S> {
    match catch_unwind(AssertUnwindSafe(factory)) {
        Ok(state) => Some(state),
        Err(payload) => {
            error!(actor = %name, panic = %panic_message(&*payload), "the actor's factory panicked");
            None
        }
    }
}

fn build<S>(name: &str, factory: &Factory<S>) -> Option<S> {
    match catch_unwind(AssertUnwindSafe(|| factory())) {
        Ok(state) => Some(state),
        Err(payload) => {
            error!(actor = %name, panic = %panic_message(&*payload), "the actor's factory panicked; the actor stops");
            None
        }
    }
}

/// An actor's server-stream method: `f(&mut state, args)` runs in the actor's turn and
/// returns the items, which a task of their own sends (the actor goes on with its mailbox).
pub(crate) struct ActorStream<F, A> {
    pub(crate) f: F,
    pub(crate) _args: PhantomData<fn(A)>,
}

impl<S, F, A, St, T, E> ActorMethod<S> for ActorStream<F, A>
where
    F: Fn(&mut S, A) -> St + Send + Sync + 'static,
    A: DeserializeOwned + 'static,
    St: futures_util::Stream<Item = Result<T, E>> + Send + 'static,
    T: Serialize + Send + 'static,
    E: Fault + Send + 'static,
{
    fn invoke(&self, state: &mut S, entry: &Entry, call: Incoming) -> bool {
        if call
            .deadline
            .is_some_and(|at| tokio::time::Instant::now() >= at)
        {
            let message = "the call waited in the mailbox past its deadline";
            call.responder.fail(ErrorKind::Timeout, message);
            return false;
        }
        let Some((args, port, runs, call)) = open::<A>(entry, call) else {
            return false;
        };
        let items = match catch_unwind(AssertUnwindSafe(|| (self.f)(state, args))) {
            Ok(items) => items,
            Err(p) => {
                panicked(call, p);
                return true;
            }
        };
        send_all(items, entry, runs, call, port);
        false
    }

    fn streams(&self) -> bool {
        true
    }
}
