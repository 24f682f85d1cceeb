//! Calls from Python: to a member by name or address, to a virtual actor, or through a
//! [`NativeClient`] that is no node. Arguments go as JSON (every method reads JSON, whatever
//! its language), a positional list or a dict of named arguments. A blocking call releases
//! the GIL while it waits; an asyncio call ([`complete`]) is handed back through tokio's
//! blocking pool, so a worker never waits for the GIL.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use meshrpc::dynamic::Value;
use meshrpc::{CallOptions, Client, ErrorKind, Node, NodeConfig, NodeId, Peer, RpcError};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::time::Instant;

use crate::values::{from_args, json_to_py};
use crate::{rpc_fault, runtime};

/// Whom a call goes to.
pub(crate) enum To {
    /// A member, by name or `host:port`.
    Member(String),
    /// The virtual actor `(type, key)`, wherever it lives.
    Actor(String, String),
}

/// A call's result, and whether the method declares it `bytes` (JSON carries bytes as an
/// array of numbers; Python gets `bytes`).
pub(crate) struct Answer {
    value: serde_json::Value,
    bytes: bool,
}

/// Sends one call and waits for its result.
pub(crate) async fn send(
    node: &Node,
    to: To,
    method: &str,
    args: &Value,
    timeout: Duration,
) -> Result<Answer, RpcError> {
    let deadline = Instant::now() + timeout;
    let options = CallOptions::timeout(timeout);
    match to {
        To::Member(target) => {
            let value = node
                .call_json(target.as_str(), method, args, options)
                .await?;
            let bytes = looks_like_bytes(&value)
                && match node.peer(target.as_str()).await {
                    Ok(peer) => declares_bytes(&peer, method, deadline).await,
                    Err(_) => false,
                };
            Ok(Answer { value, bytes })
        }
        To::Actor(kind, key) => {
            let actor = node.actor_ref(&kind, &key);
            let value = actor.call_json(method, args, timeout).await?;
            Ok(Answer {
                value,
                bytes: false,
            })
        }
    }
}

/// An array of byte values (empty included): a result that may be `bytes`.
fn looks_like_bytes(value: &serde_json::Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| (items.iter()).all(|item| item.as_u64().is_some_and(|n| n <= 255)))
}

/// Whether `method` of `peer` declares a `bytes` result (XML-RPC's `base64` in its
/// `system.methodSignature`), asked within the call's deadline. Remembered per run of the
/// peer (its id is new at every start) and method, when the peer gave an answer.
async fn declares_bytes(peer: &Peer, method: &str, deadline: Instant) -> bool {
    static KNOWN: OnceLock<Mutex<HashMap<(NodeId, String), bool>>> = OnceLock::new();
    let known = KNOWN.get_or_init(Mutex::default);
    // A virtual actor's `TYPE.method/KEY` is declared as `TYPE.method`.
    let method = method
        .split_once('/')
        .map_or(method, |(declared, _)| declared);
    let id = (peer.info().id, method.to_owned());
    if let Some(bytes) = known.lock().ok().and_then(|k| k.get(&id).copied()) {
        return bytes;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let options = CallOptions::timeout(left);
    let bytes = match peer.call_json(SIGNATURE, &[method], options).await {
        // `[[result, param, ...]]`.
        Ok(signature) => signature[0][0] == "base64",
        // It cannot say: the JSON is the answer (and is remembered as such).
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::MethodNotFound | ErrorKind::BadArguments
            ) =>
        {
            false
        }
        // Not now (a lost link, a timeout): the JSON this time, and ask again next time.
        Err(_) => return false,
    };
    if let Ok(mut known) = known.lock() {
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(id, bytes);
    }
    bytes
}

/// How many (peer run, method) answers are remembered before starting afresh.
const REMEMBERED: usize = 4096;

const SIGNATURE: &str = "system.methodSignature";

/// A timeout in seconds, as Python gives it.
pub(crate) fn seconds(timeout: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| PyValueError::new_err(format!("timeout must be positive, not {timeout}")))
}

/// Runs `call` on this Python thread with the GIL released (the future is polled here, so
/// its answer wakes this thread directly), waking every 100 ms to let Python handle its
/// signals: Ctrl-C abandons the call and raises `KeyboardInterrupt` here.
pub(crate) fn wait<T: Send>(
    py: Python<'_>,
    call: impl std::future::Future<Output = T> + Send,
) -> PyResult<T> {
    let mut call = std::pin::pin!(call);
    loop {
        // The timer is made inside the runtime: it needs its clock.
        let step = py.detach(|| {
            runtime().block_on(async { tokio::time::timeout(SIGNALS, call.as_mut()).await })
        });
        match step {
            Ok(value) => return Ok(value),
            Err(_) => py.check_signals()?,
        }
    }
}

/// How often a Python thread waiting for a call looks at its signals.
const SIGNALS: Duration = Duration::from_millis(100);

/// The Python result of a finished call: its value, or the `Fault` to raise.
pub(crate) fn finish(py: Python<'_>, result: Result<Answer, RpcError>) -> PyResult<Py<PyAny>> {
    match result {
        Ok(Answer { value, bytes: true }) => {
            let bytes: Vec<u8> = (value.as_array().into_iter().flatten())
                .filter_map(|n| n.as_u64().and_then(|n| u8::try_from(n).ok()))
                .collect();
            Ok(PyBytes::new(py, &bytes).into_any().unbind())
        }
        Ok(Answer { value, .. }) => Ok(json_to_py(py, &value)?.unbind()),
        Err(e) => Err(rpc_fault(py, e)),
    }
}

/// Runs `call` on the runtime and, when it ends, calls `done(value, None)` or
/// `done(None, fault)` from tokio's blocking pool.
pub(crate) fn complete(
    call: impl std::future::Future<Output = Result<Answer, RpcError>> + Send + 'static,
    done: Py<PyAny>,
) {
    runtime().spawn(async move {
        let result = call.await;
        let handed = tokio::task::spawn_blocking(move || {
            Python::attach(|py| {
                let outcome = match finish(py, result) {
                    Ok(value) => done.call1(py, (value, py.None())),
                    Err(error) => done.call1(py, (py.None(), error.into_value(py))),
                };
                if let Err(e) = outcome {
                    e.print(py);
                }
            })
        });
        let _ = handed.await;
    });
}

/// A connection to one node from a program that is not one: `meshrpc.ServerProxy`.
#[pyclass(module = "meshrpc._native", frozen)]
pub(crate) struct NativeClient {
    client: Client,
}

#[pymethods]
impl NativeClient {
    /// Connects to the node at `addr` (`host:port`).
    #[new]
    #[pyo3(signature = (addr, cookie=None, timeout=10.0))]
    fn new(py: Python<'_>, addr: String, cookie: Option<String>, timeout: f64) -> PyResult<Self> {
        let config = NodeConfig {
            name: "python-client".to_owned(),
            cookie,
            default_timeout: seconds(timeout)?,
            ..NodeConfig::default()
        };
        let connected = py.detach(|| runtime().block_on(Client::connect_with(addr, &config)));
        match connected {
            Ok(client) => Ok(NativeClient { client }),
            Err(e) => Err(rpc_fault(py, e)),
        }
    }

    /// Calls `method` with `args` (a list, or a dict of named arguments).
    fn call(
        &self,
        py: Python<'_>,
        method: String,
        args: &Bound<'_, PyAny>,
        timeout: f64,
    ) -> PyResult<Py<PyAny>> {
        let (args, timeout) = (from_args(args)?, seconds(timeout)?);
        let peer = self.client.peer().clone();
        let call = async move {
            let deadline = Instant::now() + timeout;
            let options = CallOptions::timeout(timeout);
            let value = peer.call_json(&method, &args, options).await?;
            let bytes = looks_like_bytes(&value) && declares_bytes(&peer, &method, deadline).await;
            Ok(Answer { value, bytes })
        };
        let result = wait(py, call)?;
        finish(py, result)
    }

    /// False once the connection has closed (the proxy then connects again).
    #[getter]
    fn connected(&self) -> bool {
        self.client.peer().is_connected()
    }
}
