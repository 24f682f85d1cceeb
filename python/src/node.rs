//! [`NativeNode`]: a meshrpc node in a Python process. Its Python methods are dynamic
//! methods of the runtime whose handler only queues the call ([`Queued`]) and awaits the
//! answer; Python threads take calls with [`NativeNode::next_call`] (the GIL released while
//! they wait) and answer through the [`PendingCall`] they got. A call whose answer never
//! comes (its `PendingCall` dropped) fails at once; the queue is bounded, so a Python side
//! that falls behind makes callers wait within their deadlines rather than fill memory.
//!
//! `close` leaves the cluster gracefully, answering what was queued, then wakes every
//! waiting Python thread.

use std::sync::{Arc, Mutex};

use meshrpc::dynamic::{Function, Method, Raised, Type, Value};
use meshrpc::{Node, NodeConfig};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyTuple};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::calls::{self, seconds, To};
use crate::values::{from_args, from_py, to_py};
use crate::{fault, runtime};

/// What waits for a Python thread.
pub(crate) enum Queued {
    /// A call: which registered function, for which virtual-actor activation (its key and
    /// id) if it is an actor's method, its arguments, where the answer goes.
    Call {
        handler: usize,
        actor: Option<(String, u64)>,
        args: Vec<Value>,
        reply: oneshot::Sender<Result<Value, Raised>>,
    },
    /// The activation `id` of a Python virtual actor ended: its instance goes.
    Forget(u64),
}

/// Queues a call for Python and waits for its answer.
pub(crate) async fn ask(
    sender: &mpsc::Sender<Queued>,
    handler: usize,
    actor: Option<(String, u64)>,
    args: Vec<Value>,
) -> Result<Value, Raised> {
    let (reply, answer) = oneshot::channel();
    let queued = Queued::Call {
        handler,
        actor,
        args,
        reply,
    };
    if sender.send(queued).await.is_err() {
        return Err(Raised::new("the Python node is closing"));
    }
    answer
        .await
        .unwrap_or_else(|_| Err(Raised::new("the Python handler ended without answering")))
}

/// A method as the Python half declares it: `(name, [(param, type)], result, doc, handler)`.
pub(crate) type Declared = (String, Vec<(String, String)>, String, String, usize);

/// The runtime's declaration of a method from the Python half's.
pub(crate) fn method(
    name: &str,
    params: Vec<(String, String)>,
    result: &str,
    doc: &str,
) -> PyResult<Method> {
    let parse = |what: String, ty: &str| {
        Type::parse(ty).map_err(|e| PyValueError::new_err(format!("{what} of `{name}`: {e}")))
    };
    let params = params
        .into_iter()
        .map(|(param, ty)| parse(format!("parameter `{param}`"), &ty).map(|ty| (param, ty)))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Method {
        params,
        result: parse("the result".to_owned(), result)?,
        doc: doc.to_owned(),
    })
}

/// How many calls may wait for a Python thread before callers wait to queue theirs.
const QUEUE: usize = 1024;

#[pyclass(module = "meshrpc._native", frozen)]
pub(crate) struct NativeNode {
    node: Node,
    sender: mpsc::Sender<Queued>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    closed: CancellationToken,
}

#[pymethods]
impl NativeNode {
    /// Starts a node and, with `seeds`, joins their cluster.
    #[new]
    #[pyo3(signature = (name, listen, seeds, cookie=None, timeout=10.0, http=None, http_token=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments, one to one
    fn new(
        py: Python<'_>,
        name: String,
        listen: String,
        seeds: Vec<String>,
        cookie: Option<String>,
        timeout: f64,
        http: Option<String>,
        http_token: Option<String>,
    ) -> PyResult<Self> {
        let http = match http {
            Some(at) => Some(at.parse().map_err(|e| {
                PyValueError::new_err(format!("http must be IP:PORT, not {at:?}: {e}"))
            })?),
            None => None,
        };
        let config = NodeConfig {
            name,
            listen,
            seeds,
            cookie,
            default_timeout: seconds(timeout)?,
            http,
            http_token,
            ..NodeConfig::default()
        };
        let started = py.detach(|| runtime().block_on(Node::start(config)));
        let node = started.map_err(|e| PyRuntimeError::new_err(format!("{e}")))?;
        let (sender, receiver) = mpsc::channel(QUEUE);
        Ok(NativeNode {
            node,
            sender,
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            closed: CancellationToken::new(),
        })
    }

    /// The address it listens on (the port actually bound).
    #[getter]
    fn addr(&self) -> String {
        self.node.addr().to_string()
    }

    /// Where its HTTP gateway listens (XML-RPC, JSON-RPC), if it has one.
    #[getter]
    fn http_addr(&self) -> Option<String> {
        self.node.http_addr().map(|addr| addr.to_string())
    }

    /// Its name.
    #[getter]
    fn name(&self) -> String {
        self.node.name().to_owned()
    }

    /// Registers `name`, answered by the Python function numbered `handler`: its parameters
    /// and result as Python annotates them (`int`, `list[str]`, `any` when unannotated).
    fn register(
        &self,
        name: &str,
        params: Vec<(String, String)>,
        result: &str,
        doc: &str,
        handler: usize,
    ) -> PyResult<()> {
        let method = method(name, params, result, doc)?;
        let sender = self.sender.clone();
        let answer = move |_cx, args| {
            let sender = sender.clone();
            async move { ask(&sender, handler, None, args).await }
        };
        self.node.register(name, Function::new(method, answer));
        Ok(())
    }

    /// What is next for Python: `("call", handler, args, pending, actor)` with `actor`
    /// None or `(key, activation id)`, `("forget", activation id)` once an activation of a
    /// Python virtual actor ended, or `None` once the node is closed (or after `timeout`
    /// seconds without anything).
    fn next_call<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
    ) -> PyResult<Option<Bound<'py, PyTuple>>> {
        let wait = seconds(timeout)?;
        let (queue, closed) = (self.queue.clone(), self.closed.clone());
        let next = py.detach(|| {
            runtime().block_on(async move {
                // A call whose caller gave up (its deadline, a cancel) is not run.
                let live = async {
                    let mut queue = queue.lock().await;
                    loop {
                        match queue.recv().await {
                            Some(Queued::Call { reply, .. }) if reply.is_closed() => continue,
                            next => return next,
                        }
                    }
                };
                tokio::select! {
                    _ = closed.cancelled() => None,
                    next = live => next,
                    _ = tokio::time::sleep(wait) => None,
                }
            })
        });
        let next = match next {
            None => return Ok(None),
            Some(Queued::Forget(id)) => ("forget", id).into_pyobject(py)?,
            Some(Queued::Call {
                handler,
                actor,
                args,
                reply,
            }) => {
                let list = PyList::empty(py);
                for arg in &args {
                    list.append(to_py(py, arg)?)?;
                }
                let pending = PendingCall {
                    reply: Mutex::new(Some(reply)),
                };
                ("call", handler, list, pending, actor).into_pyobject(py)?
            }
        };
        Ok(Some(next))
    }

    /// Hosts the virtual-actor type `kind`, whose methods are Python's (`methods`, as
    /// `register` takes them): the cluster places its keys on this node as on any host.
    fn virtual_actor(&self, py: Python<'_>, kind: String, methods: Vec<Declared>) -> PyResult<()> {
        let declare = crate::actors::declare(&self.node, &self.sender, &kind, methods)?;
        let started = py.detach(|| runtime().block_on(declare));
        started.map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// Every member this node knows: `(name, addr, status)`.
    fn members(&self) -> Vec<(String, Option<String>, &'static str)> {
        let members = self.node.members();
        let each = members.into_iter();
        each.map(|m| (m.name, m.addr.map(|a| a.to_string()), m.status.as_str()))
            .collect()
    }

    /// Calls `method` of the member `target` (a name or `host:port`) and waits.
    fn call(
        &self,
        py: Python<'_>,
        target: String,
        method: String,
        args: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        self.blocking(py, To::Member(target), method, args, timeout)
    }

    /// Calls `method` of the virtual actor `kind`/`key` and waits.
    fn call_actor(
        &self,
        py: Python<'_>,
        kind: String,
        key: String,
        method: String,
        args: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        self.blocking(py, To::Actor(kind, key), method, args, timeout)
    }

    /// Starts a call to a member (`kind` None) or a virtual actor, and returns at once:
    /// `done(value, None)` or `done(None, fault)` is called when it ends.
    #[pyo3(signature = (target, key, method, args, timeout, done))]
    fn call_then(
        &self,
        target: String,
        key: Option<String>,
        method: String,
        args: &Bound<'_, PyAny>,
        timeout: f64,
        done: Py<PyAny>,
    ) -> PyResult<()> {
        let (args, timeout) = (from_args(args)?, seconds(timeout)?);
        let to = match key {
            Some(key) => To::Actor(target, key),
            None => To::Member(target),
        };
        let node = self.node.clone();
        calls::complete(
            async move { calls::send(&node, to, &method, &args, timeout).await },
            done,
        );
        Ok(())
    }

    /// Leaves the cluster gracefully and stops: the calls already taken or queued are
    /// answered first (the Python threads serve on until the node has stopped), then
    /// waiting Python threads get `None`.
    fn close(&self, py: Python<'_>) {
        let node = self.node.clone();
        py.detach(|| runtime().block_on(node.shutdown()));
        self.closed.cancel();
    }

    /// True once `close` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.closed.is_cancelled()
    }
}

impl NativeNode {
    fn blocking(
        &self,
        py: Python<'_>,
        to: To,
        method: String,
        args: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        let (args, timeout) = (from_args(args)?, seconds(timeout)?);
        let node = self.node.clone();
        let call = async move { calls::send(&node, to, &method, &args, timeout).await };
        let result = calls::wait(py, call)?;
        calls::finish(py, result)
    }
}

/// A call a Python thread took: answer it once, with `reply` or `fail`.
#[pyclass(module = "meshrpc._native", frozen)]
pub(crate) struct PendingCall {
    reply: Mutex<Option<oneshot::Sender<Result<Value, Raised>>>>,
}

impl PendingCall {
    fn answer(&self, answer: Result<Value, Raised>) {
        let taken = match self.reply.lock() {
            Ok(mut reply) => reply.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(reply) = taken {
            // The caller may have gone (cancelled, timed out): nothing waits then.
            let _ = reply.send(answer);
        }
    }
}

#[pymethods]
impl PendingCall {
    /// Answers with `value`. A value that cannot travel answers the caller with an error
    /// saying so, and raises it here too.
    fn reply(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        match from_py(value) {
            Ok(value) => {
                self.answer(Ok(value));
                Ok(())
            }
            Err(e) => {
                let message = format!("the handler's result cannot be sent: {}", e.value(py));
                self.answer(Err(Raised::new(message.clone())));
                Err(fault(py, "application", message, None))
            }
        }
    }

    /// Answers with the exception `kind` (its type's name) and its message.
    fn fail(&self, kind: String, message: String) {
        let text = match message.as_str() {
            "" => kind.clone(),
            _ => format!("{kind}: {message}"),
        };
        let data = Value::Map(vec![
            ("type".to_owned(), Value::Str(kind)),
            ("message".to_owned(), Value::Str(message)),
        ]);
        self.answer(Err(Raised {
            message: text,
            data: Some(data),
        }));
    }
}
