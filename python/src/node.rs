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
use pyo3::types::PyList;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::calls::{self, seconds, To};
use crate::values::{from_args, from_py, to_py};
use crate::{fault, runtime};

/// A call waiting for Python: which registered function, its arguments, where the answer
/// goes.
struct Queued {
    handler: usize,
    args: Vec<Value>,
    reply: oneshot::Sender<Result<Value, Raised>>,
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
    #[pyo3(signature = (name, listen, seeds, cookie=None, timeout=10.0))]
    fn new(
        py: Python<'_>,
        name: String,
        listen: String,
        seeds: Vec<String>,
        cookie: Option<String>,
        timeout: f64,
    ) -> PyResult<Self> {
        let config = NodeConfig {
            name,
            listen,
            seeds,
            cookie,
            default_timeout: seconds(timeout)?,
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
        let parse = |what: String, ty: &str| {
            Type::parse(ty).map_err(|e| PyValueError::new_err(format!("{what} of `{name}`: {e}")))
        };
        let params = params
            .into_iter()
            .map(|(param, ty)| parse(format!("parameter `{param}`"), &ty).map(|ty| (param, ty)))
            .collect::<PyResult<Vec<_>>>()?;
        let method = Method {
            params,
            result: parse("the result".to_owned(), result)?,
            doc: doc.to_owned(),
        };
        let sender = self.sender.clone();
        let answer = move |_cx, args| {
            let sender = sender.clone();
            async move {
                let (reply, answer) = oneshot::channel();
                let queued = Queued {
                    handler,
                    args,
                    reply,
                };
                if sender.send(queued).await.is_err() {
                    return Err(Raised::new("the Python node is closing"));
                }
                answer.await.unwrap_or_else(|_| {
                    Err(Raised::new("the Python handler ended without answering"))
                })
            }
        };
        self.node.register(name, Function::new(method, answer));
        Ok(())
    }

    /// The next call for Python: `(handler, args, pending)`, or `None` once the node is
    /// closed (or after `timeout` seconds without one).
    fn next_call<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
    ) -> PyResult<Option<(usize, Bound<'py, PyList>, PendingCall)>> {
        let wait = seconds(timeout)?;
        let (queue, closed) = (self.queue.clone(), self.closed.clone());
        let next = py.detach(|| {
            runtime().block_on(async move {
                // A call whose caller gave up (its deadline, a cancel) is not run.
                let live = async {
                    let mut queue = queue.lock().await;
                    loop {
                        match queue.recv().await {
                            Some(call) if call.reply.is_closed() => continue,
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
        let Some(Queued {
            handler,
            args,
            reply,
        }) = next
        else {
            return Ok(None);
        };
        let list = PyList::empty(py);
        for arg in &args {
            list.append(to_py(py, arg)?)?;
        }
        let pending = PendingCall {
            reply: Mutex::new(Some(reply)),
        };
        Ok(Some((handler, list, pending)))
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
