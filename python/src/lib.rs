//! `meshrpc._native`: the Rust runtime, bound for the Python package in `python/meshrpc/`.
//! This half owns what must be Rust — the node, its links, the calls and the threads they
//! run on — and the Python half owns what must be Python: reading type hints, calling
//! handlers, the proxies' `__getattr__`.
//!
//! The rule that keeps both sides fast and safe: Python code never runs on a tokio worker,
//! and no tokio worker ever waits for the GIL. A Python method's calls are queued by the
//! runtime ([`node`]); Python threads take them with the GIL released while they wait. A
//! blocking call from Python releases the GIL for as long as it waits ([`calls`]); an
//! asyncio call's completion is handed to Python from tokio's blocking pool, never from a
//! worker.

use std::sync::Mutex;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

mod actors;
mod calls;
mod node;
mod values;

/// The runtime every node and client of this process runs on: two workers, like the
/// machines it is measured on; Python's own threads do the Python work. A process forked
/// from one that had started it (`multiprocessing`'s default on Linux) has none of its
/// threads: it gets a runtime of its own, and the parent's is left alone (never dropped).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let mut current = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    match *current {
        Some((owner, runtime)) if owner == pid => runtime,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("meshrpc-worker")
                .enable_all()
                .build()
                .expect("cannot start the tokio runtime");
            let runtime: &'static tokio::runtime::Runtime = Box::leak(Box::new(runtime));
            *current = Some((pid, runtime));
            runtime
        }
    }
}

/// `meshrpc.Fault`, which the Python half defines and hands over at import.
static FAULT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A failed call as Python sees it: `meshrpc.Fault(kind, message, data)`.
pub(crate) fn fault(
    py: Python<'_>,
    kind: &str,
    message: String,
    data: Option<serde_json::Value>,
) -> PyErr {
    let Some(class) = FAULT.get(py) else {
        return PyRuntimeError::new_err(format!("{kind}: {message}"));
    };
    let data = match data.as_ref().map(|d| values::json_to_py(py, d)) {
        Some(Ok(data)) => data,
        _ => py.None().into_bound(py),
    };
    match class.call1(py, (kind, message, data)) {
        Ok(error) => PyErr::from_value(error.into_bound(py)),
        Err(e) => e,
    }
}

/// The Python error of a failed call.
pub(crate) fn rpc_fault(py: Python<'_>, error: meshrpc::RpcError) -> PyErr {
    let data = error.data::<serde_json::Value>();
    let message = match &error {
        meshrpc::RpcError::Application { message, .. } => message.clone(),
        other => other.to_string(),
    };
    fault(py, error.kind().as_str(), message, data)
}

#[pyfunction]
fn _set_fault(py: Python<'_>, class: Py<PyAny>) {
    let _ = FAULT.set(py, class);
}

/// Logs go to stderr when `RUST_LOG` asks for them (as the `meshrpc` binary's do).
fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logs();
    m.add_function(wrap_pyfunction!(_set_fault, m)?)?;
    m.add_class::<node::NativeNode>()?;
    m.add_class::<node::PendingCall>()?;
    m.add_class::<calls::NativeClient>()?;
    Ok(())
}
