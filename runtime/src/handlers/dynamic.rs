//! Methods whose types are known only at run time: what a binding for another language (the
//! Python package) registers. A [`Method`] declares its parameters and result as [`Type`]s;
//! the arguments reach the handler as [`Value`]s decoded by those types from either encoding
//! — bincode as a typed Rust caller sends them, or JSON from the CLI and the gateways — and
//! the handler's [`Value`] is checked against the result type and encoded exactly as a Rust
//! method of those types would encode it. So no caller can tell such a method from a Rust
//! one: `add(a: i64, b: i64) -> i64` is the same method in either language.
//!
//! The handler runs as a task per call ([`super::functions::spawn_answer`]), with the same
//! deadline, cancellation and shutdown as an async Rust handler.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::FutureExt;

use super::functions::{spawn_answer, Handler};
use super::signature::Signature;
use super::{arguments, ActorMethod, Entry, Handlers, Incoming};
use crate::link::Fault;
use serde::de::DeserializeSeed;

use crate::wire::{Encoding, ErrorKind, RemoteError};

mod types;
mod value;

pub use types::Type;
pub(crate) use types::{Params, Reader, Typed};
pub use value::Value;

/// What a dynamic method takes and answers, and its documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method {
    /// Each parameter's name and type, in order.
    pub params: Vec<(String, Type)>,
    /// The result's type.
    pub result: Type,
    /// Its documentation (`system.methodHelp`).
    pub doc: String,
}

impl Method {
    /// What the method table keeps: the same signature a Rust method of these types has.
    pub(crate) fn signature(&self) -> Signature {
        Signature {
            params: self
                .params
                .iter()
                .map(|(name, ty)| (Some(name.clone()), ty.rust_name()))
                .collect(),
            result: self.result.rust_name(),
            fingerprint: None,
            tuple: true,
            doc: self.doc.trim().to_owned(),
            upload: None,
        }
    }
}

/// A dynamic method and the function that answers it, as `Node::register` takes it: `f` is
/// called with the request's context and the decoded arguments, once per call.
pub struct Function<F> {
    pub(crate) method: Method,
    pub(crate) f: F,
}

impl<F> Function<F> {
    /// `method`, answered by `f`.
    pub fn new(method: Method, f: F) -> Self {
        Function { method, f }
    }
}

/// What a dynamic handler raised: the caller's `application` error with this message, and
/// `data` as its error value (`RpcError::data`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raised {
    /// The text the caller reads.
    pub message: String,
    /// The error as a value (for Python: `{"type": "ValueError", "message": …}`).
    pub data: Option<Value>,
}

impl Raised {
    /// An error with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Raised {
            message: message.into(),
            data: None,
        }
    }
}

impl Fault for Raised {
    fn into_error(self) -> RemoteError {
        let mut error = RemoteError::new(ErrorKind::Application, self.message);
        error.data = self
            .data
            .and_then(|data| serde_json::to_vec(&data).ok())
            .map(bytes::Bytes::from);
        error
    }
}

/// The handler of a dynamic method in the method table.
pub(crate) struct DynamicFn<F> {
    params: Vec<Type>,
    result: Arc<Type>,
    f: F,
}

impl<F> DynamicFn<F> {
    pub(crate) fn new(method: &Method, f: F) -> Self {
        DynamicFn {
            params: method.params.iter().map(|(_, ty)| ty.clone()).collect(),
            result: Arc::new(method.result.clone()),
            f,
        }
    }
}

impl<F> Handler for DynamicFn<F>
where
    F: Fn(&Incoming, Vec<Value>) -> BoxFuture<'static, Result<Value, Raised>>
        + Send
        + Sync
        + 'static,
{
    fn invoke(&self, entry: &Arc<Entry>, call: Incoming, ctx: &Handlers) {
        let decoded = decode_values(
            &entry.name,
            &entry.signature,
            &self.params,
            call.encoding,
            &call.body,
        );
        let args = match decoded {
            Ok(args) => args,
            Err(e) => return call.responder.reply::<()>(Err(e)),
        };
        let built = catch_unwind(AssertUnwindSafe(|| (self.f)(&call, args)));
        let (result, name) = (self.result.clone(), entry.name.clone());
        let built = built.map(|work| async move { typed(&name, result, work.await?) });
        spawn_answer(built, call, ctx);
    }
}

/// Decodes the arguments of the dynamic method `method`, whose parameters are `types`.
/// A dynamic function as a virtual actor's method: its synchronous part runs in the key's
/// turn with the state (for a binding, the handle of the key's instance), and the turn then
/// awaits its future, so a key still runs one call at a time.
pub(crate) struct ActorFunction<F> {
    params: Vec<Type>,
    result: Arc<Type>,
    f: F,
}

impl<F> ActorFunction<F> {
    pub(crate) fn new(method: &Method, f: F) -> Self {
        ActorFunction {
            params: method.params.iter().map(|(_, ty)| ty.clone()).collect(),
            result: Arc::new(method.result.clone()),
            f,
        }
    }
}

impl<S, F, Fut> ActorMethod<S> for ActorFunction<F>
where
    F: Fn(&mut S, Vec<Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Value, Raised>> + Send + 'static,
{
    fn invoke(&self, _state: &mut S, _entry: &Entry, call: Incoming) -> bool {
        // Never called: `awaits` sends its calls to `start`.
        call.responder.fail(
            ErrorKind::Protocol,
            "internal: an awaited method run at once",
        );
        false
    }

    fn awaits(&self) -> bool {
        true
    }

    fn start(
        &self,
        state: &mut S,
        entry: &Entry,
        call: Incoming,
    ) -> Option<BoxFuture<'static, bool>> {
        if call.responder.is_gone() {
            call.responder.abandon();
            return None;
        }
        let Incoming {
            encoding,
            body,
            deadline,
            responder,
            ..
        } = call;
        if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
            responder.fail(
                ErrorKind::Timeout,
                "the call waited in the mailbox past its deadline",
            );
            return None;
        }
        let args = match decode_values(&entry.name, &entry.signature, &self.params, encoding, &body)
        {
            Ok(args) => args,
            Err(e) => {
                responder.reply::<()>(Err(e));
                return None;
            }
        };
        // A panic here is the caller's `panicked`, and the turn's: the activation rebuilds
        // the state.
        let work = match catch_unwind(AssertUnwindSafe(|| (self.f)(state, args))) {
            Ok(work) => work,
            Err(p) => {
                responder.fail(ErrorKind::Panicked, crate::link::panic_message(&*p));
                std::panic::resume_unwind(p);
            }
        };
        let (result, name) = (self.result.clone(), entry.name.clone());
        Some(Box::pin(async move {
            let mut work = std::pin::pin!(AssertUnwindSafe(work).catch_unwind());
            let ran = match deadline {
                Some(at) => match tokio::time::timeout_at(at, work.as_mut()).await {
                    Ok(ran) => ran,
                    Err(_) => {
                        // The caller is told, but the turn waits on for the work: the key
                        // stays held until the binding answers, so its calls never overlap.
                        let message = "the method outlived the caller's deadline";
                        responder.fail(ErrorKind::Timeout, message);
                        return work.await.is_err();
                    }
                },
                None => work.await,
            };
            match ran {
                Err(p) => {
                    responder.fail(ErrorKind::Panicked, crate::link::panic_message(&*p));
                    return true;
                }
                Ok(Ok(value)) => match typed(&name, result, value) {
                    Ok(value) => responder.reply(Ok(&value)),
                    Err(raised) => responder.reply::<()>(Err(raised.into_error())),
                },
                Ok(Err(raised)) => responder.reply::<()>(Err(raised.into_error())),
            }
            false
        }))
    }
}

/// The handler's `value`, checked against the declared `result` type and ready to encode as
/// it; otherwise the caller's error saying what came instead.
fn typed(name: &str, result: Arc<Type>, value: Value) -> Result<Typed, Raised> {
    match result.check(value) {
        Ok(value) => Ok(Typed { ty: result, value }),
        Err(wrong) => Err(Raised::new(format!(
            "`{name}` returned {wrong}, which is not its declared result type {result}"
        ))),
    }
}

fn decode_values(
    method: &str,
    signature: &Signature,
    types: &[Type],
    encoding: Encoding,
    body: &[u8],
) -> Result<Vec<Value>, RemoteError> {
    let bad = |message: String| RemoteError::new(ErrorKind::BadArguments, message);
    match encoding {
        Encoding::Bincode => {
            crate::wire::codec::decode_seed_exact(Params(types), body).map_err(|e| {
                // An unannotated parameter is JSON text to a typed caller: say so.
                let hint = match types.contains(&Type::Any) {
                    true => "; a `json` parameter takes its value's JSON text from a typed caller (or give it a type hint)",
                    false => "",
                };
                bad(format!(
                    "`{method}` takes {}: the arguments sent do not decode as that ({e}){hint}",
                    signature.params_text()
                ))
            })
        }
        Encoding::Json => json_values(method, signature, types, body).map_err(bad),
    }
}

fn json_values(
    method: &str,
    sig: &Signature,
    types: &[Type],
    body: &[u8],
) -> Result<Vec<Value>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the arguments are not UTF-8".to_owned())?;
    let items = match arguments::sent(text) {
        Some(arguments::Sent::Positional(items)) => items,
        Some(arguments::Sent::Named(named)) => match sig.names() {
            Some(names) => arguments::by_name(method, sig, &names, named)?,
            None => return Err(format!("`{method}` takes its arguments by position")),
        },
        None => {
            return Err(format!(
                "`{method}` takes {}: send a JSON array of the arguments, or an object naming them",
                sig.params_text()
            ))
        }
    };
    if items.len() != types.len() {
        return Err(arguments::arity(method, sig, items.len()));
    }
    let each = items.iter().zip(types).enumerate();
    each.map(|(i, (raw, ty))| {
        let mut reader = serde_json::Deserializer::from_str(raw.get());
        Reader(ty)
            .deserialize(&mut reader)
            .map_err(|e| arguments::mismatch(method, sig, i, raw.get(), &e))
    })
    .collect()
}
