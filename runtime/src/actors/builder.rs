//! Declaring a virtual-actor type: its state factory, methods, hooks and idle time; then
//! [`VirtualBuilder::start`] registers the methods (`type.method`, called as
//! `type.method/KEY`) and tells the cluster this node hosts the type.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::activation::{Call, Codec, Hook, Kind, Spec};
use super::Actors;
use crate::cluster::membership::hosting::MAX_NAME;
use crate::error::RpcError;
use crate::handlers::dynamic::{ActorFunction, Function, Raised, Value};
use crate::handlers::reply::split;
use crate::handlers::{ActorMethod, Declared, Entry, Handler, Handlers, Incoming};
use crate::wire::codec;
use crate::wire::ErrorKind;

/// How long an activation stays without calls before it is deactivated, by default.
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(300);

/// Declares a virtual-actor type; see [`crate::node::Node::virtual_actor`].
pub struct VirtualBuilder<S> {
    actors: Actors,
    name: String,
    spec: Spec<S>,
    methods: Vec<Declared<S>>,
    /// The `on_reminder` hook, as a node-only method.
    reminder: Option<Declared<S>>,
}

impl<S: Send + 'static> VirtualBuilder<S> {
    pub(crate) fn new(
        actors: Actors,
        name: &str,
        factory: impl Fn(&str) -> S + Send + Sync + 'static,
        mailbox: usize,
    ) -> Self {
        VirtualBuilder {
            actors,
            name: name.to_owned(),
            spec: Spec {
                factory: Arc::new(factory),
                on_activate: None,
                on_deactivate: None,
                idle: Some(DEFAULT_IDLE),
                mailbox,
                persist: None,
            },
            methods: Vec::new(),
            reminder: None,
        }
    }

    /// Adds a method: `f(&mut state, args)` runs in the key's turn. A method returning
    /// `Result<T, E>` is fallible: its `Err` is the caller's `application` error.
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

    /// Adds a stream method (see `ActorBuilder::stream_method`): it runs in the key's
    /// turn and returns the items, which a task of their own sends; an item that is an
    /// `Err` ends the stream with that error.
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

    /// Adds a method whose types are known only at run time (a binding's, see
    /// [`crate::dynamic`]): `f(&mut state, args)` runs in the key's turn and returns the
    /// future that answers, which the turn awaits, so the key still runs one call at a time.
    /// Not for a type that persists (its writes follow synchronous methods).
    #[doc(hidden)]
    pub fn function<F, Fut>(mut self, method: &str, function: Function<F>) -> Self
    where
        F: Fn(&mut S, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Value, Raised>> + Send + 'static,
    {
        let Function {
            method: declared,
            f,
        } = function;
        self.methods.push(Declared {
            name: method.to_owned(),
            help: String::new(),
            signature: declared.signature(),
            method: Arc::new(ActorFunction::new(&declared, f)),
        });
        self
    }

    /// Makes the type's state persist in the node's state store (`NodeConfig::state`,
    /// `--state`): loaded before a key's first call, written (bincode) after each call that
    /// changed it and before that call's answer leaves, compare-and-set so that a second
    /// activation of the key cannot overwrite the first. On a node without a store the
    /// state lives only in its activation, as without this, and the node says so.
    pub fn persist(mut self) -> Self
    where
        S: serde::Serialize + serde::de::DeserializeOwned,
    {
        self.spec.persist = Some(Codec {
            encode: Box::new(|state: &S| {
                let mut bytes = bytes::BytesMut::new();
                codec::encode_into(state, &mut bytes).ok()?;
                Some(bytes.freeze())
            }),
            decode: Box::new(|bytes: &[u8]| codec::decode_exact(bytes).ok()),
        });
        self
    }

    /// Sets the help text of the method added last.
    pub fn help(mut self, text: &str) -> Self {
        if let Some(last) = self.methods.last_mut() {
            last.help = text.to_owned();
        }
        self
    }

    /// Names the parameters of the method added last (`incr(by)`).
    pub fn params(mut self, names: &[&str]) -> Self {
        if let Some(last) = self.methods.last_mut() {
            last.signature.name_params(names);
        }
        self
    }

    /// Runs when a key is activated, after the factory: load the key's state here.
    pub fn on_activate(mut self, hook: impl Fn(&str, &mut S) + Send + Sync + 'static) -> Self {
        self.spec.on_activate = Some(Arc::new(hook) as Hook<S>);
        self
    }

    /// Runs when one of a key's reminders fires: `hook(key, state, name)`, in the key's
    /// turn, on whichever member owns the key (activating it if need be). What it changes
    /// persists like a call's. Reminders are set with [`ActorRef::remind`](super::ActorRef::remind)
    /// (or `system.reminders.set`) and need the node's state store.
    pub fn on_reminder(
        mut self,
        hook: impl Fn(&str, &mut S, &str) + Send + Sync + 'static,
    ) -> Self {
        let f = move |state: &mut S, (key, name): (String, String)| {
            hook(&key, state, &name);
            split(())
        };
        let mut declared = Declared::new(super::reminders::ON_REMINDER, f);
        declared.help =
            "TYPE.on_reminder/KEY(key, name): a reminder of KEY fires (node-only)".to_owned();
        self.reminder = Some(declared);
        self
    }

    /// Runs when an activation ends (idle, handed over, node stopping): save its state here.
    pub fn on_deactivate(mut self, hook: impl Fn(&str, &mut S) + Send + Sync + 'static) -> Self {
        self.spec.on_deactivate = Some(Arc::new(hook) as Hook<S>);
        self
    }

    /// How long an activation may go without calls before it is deactivated (five minutes
    /// by default).
    pub fn idle(mut self, idle: Duration) -> Self {
        self.spec.idle = Some(idle);
        self
    }

    /// Mailbox capacity of each activation (default: the node's `mailbox` setting).
    pub fn mailbox(mut self, capacity: usize) -> Self {
        self.spec.mailbox = capacity.max(1);
        self
    }

    /// Makes the type a cluster singleton: one key, [`ActorRef::SINGLETON`](super::ActorRef::SINGLETON), that runs on
    /// the member owning it from the moment the type starts, never idles out, and moves
    /// when that member goes.
    pub fn singleton(mut self) -> Self {
        self.spec.idle = None;
        self
    }

    /// Registers the methods and tells the cluster this node hosts the type.
    ///
    /// # Errors
    /// `bad_arguments` if the name is empty, too long, has a `/` or `.`, or is registered
    /// already, or if what this node hosts no longer fits in one membership datagram.
    pub async fn start(self) -> Result<(), RpcError> {
        let name = self.name;
        let bad = |detail: String| RpcError::BadArguments {
            method: name.clone(),
            detail,
        };
        if name.is_empty() || name.len() > MAX_NAME || name.contains(['/', '.']) {
            return Err(bad(format!(
                "a virtual actor type is named by 1 to {MAX_NAME} characters without `/` or `.`"
            )));
        }
        if self.spec.persist.is_some() && self.methods.iter().any(|d| d.method.awaits()) {
            return Err(bad(
                "a virtual actor type whose methods are awaited (a binding's) cannot persist"
                    .to_owned(),
            ));
        }
        let kind = Arc::new(Kind::new(&name, self.spec, self.actors.ctx().clone()));
        let handlers: &Handlers = self.actors.handlers();
        let reminder = self.reminder.map(|declared| (declared, true));
        for (declared, internal) in self.methods.into_iter().map(|d| (d, false)).chain(reminder) {
            let full = format!("{name}.{}", declared.name);
            let handler = VirtualMethod {
                kind: kind.clone(),
                method: declared.method,
            };
            let mut registered = handlers.insert(&full, Arc::new(handler), declared.signature);
            if internal {
                registered = registered.internal();
            }
            if !declared.help.is_empty() {
                registered.help(&declared.help);
            }
        }
        self.actors.add_type(&name, Arc::new(kind.clone())).await?;
        self.actors.ctx().tasks.spawn(kind.clone().sweep_idle());
        super::hosted::Hosted::ensure_singleton(&kind);
        Ok(())
    }
}

/// The handler of one method of a virtual-actor type: routes the call by its key.
struct VirtualMethod<S> {
    kind: Arc<Kind<S>>,
    method: Arc<dyn ActorMethod<S>>,
}

impl<S: Send + 'static> Handler for VirtualMethod<S> {
    fn invoke(&self, entry: &Arc<Entry>, mut call: Incoming, _ctx: &Handlers) {
        let Some(key) = call.key.take() else {
            let message = format!(
                "`{0}` is a method of virtual actor type `{1}`: call it as `{0}/KEY`",
                entry.name, self.kind.name
            );
            return call.responder.fail(ErrorKind::BadArguments, message);
        };
        let call = Call {
            method: self.method.clone(),
            entry: entry.clone(),
            call,
            tries: 0,
        };
        self.kind.deliver(key.into(), call);
    }

    fn keyed(&self) -> bool {
        true
    }

    fn streams(&self) -> bool {
        self.method.streams()
    }
}
