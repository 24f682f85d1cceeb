//! Virtual actors hosted by Python: a type whose methods are a Python class's. The runtime
//! owns placement, single activation and each key's turn; an activation's state here is
//! only its [`Instance`] handle (key and activation id), and the key's Python object lives
//! in the Python half, made at its first call and dropped when the handle is: the handle's
//! drop queues `Forget(id)` for a Python thread. A method's call is queued for Python like
//! any other and the key's turn awaits its answer, so a key runs one call at a time.

use std::sync::atomic::{AtomicU64, Ordering};

use meshrpc::dynamic::Function;
use meshrpc::{Node, RpcError};
use pyo3::prelude::*;
use tokio::sync::mpsc;

use crate::node::{ask, method, Declared, Queued};

/// The state of one activation: which key, which activation (ids are unique in this
/// process), and where to say it ended.
struct Instance {
    key: String,
    id: u64,
    queue: mpsc::Sender<Queued>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let forget = Queued::Forget(self.id);
        if let Err(mpsc::error::TrySendError::Full(forget)) = self.queue.try_send(forget) {
            // Dropped on the activation's task: the runtime is there to finish the send.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let queue = self.queue.clone();
                runtime.spawn(async move { queue.send(forget).await });
            }
        }
    }
}

/// The activations' ids.
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Declares the type `kind` with Python's `methods`; the returned future starts hosting it.
pub(crate) fn declare(
    node: &Node,
    queue: &mpsc::Sender<Queued>,
    kind: &str,
    methods: Vec<Declared>,
) -> PyResult<impl std::future::Future<Output = Result<(), RpcError>> + Send + 'static> {
    let states = queue.clone();
    let mut builder = node.virtual_actor(kind, move |key: &str| Instance {
        key: key.to_owned(),
        id: NEXT.fetch_add(1, Ordering::Relaxed),
        queue: states.clone(),
    });
    for (name, params, result, doc, handler) in methods {
        let declared = method(&format!("{kind}.{name}"), params, &result, &doc)?;
        let queue = queue.clone();
        let call = move |instance: &mut Instance, args| {
            let (queue, actor) = (queue.clone(), (instance.key.clone(), instance.id));
            async move { ask(&queue, handler, Some(actor), args).await }
        };
        builder = builder.function(&name, Function::new(declared, call));
    }
    Ok(builder.start())
}
