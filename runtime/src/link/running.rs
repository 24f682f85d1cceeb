//! The peer's requests running here as tasks (async handlers, streams), by request id, so
//! that the caller's `Cancel` can abort them. Entries are added when a task starts and
//! removed by its guard (`Tracked`) however it ends.

use futures_util::future::AbortHandle;

/// Abort handles of the peer's requests running as tasks (async handlers), by request id.
#[derive(Default)]
pub(crate) struct Running {
    tasks: std::sync::Mutex<std::collections::HashMap<u64, AbortHandle>>,
}

impl Running {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<u64, AbortHandle>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, id: u64, abort: AbortHandle) {
        self.lock().insert(id, abort);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Stops every request still running: their link has closed.
    pub(super) fn cancel_all(&self) {
        let all = std::mem::take(&mut *self.lock());
        for abort in all.into_values() {
            abort.abort();
        }
    }

    /// Stops request `id` if it is still running.
    pub(super) fn cancel(&self, id: u64) {
        if let Some(abort) = self.lock().remove(&id) {
            abort.abort();
        }
    }
}
