//! Where durable actor state lives: the [`StateStore`] a node writes its virtual actors'
//! state to, and the stores this crate has ([`sqlite`]). A store keeps, per `(type, key)`,
//! the state's bytes and a version; every write says which version it replaces and fails
//! with [`StoreError::Conflict`] if that is no longer the one stored, so a second activation
//! of a key (a view change, a partition) cannot overwrite the first (Orleans' ETags).
//!
//! Writes go in batches: a store commits a batch at once (group commit), and each write in
//! it succeeds or conflicts on its own. A store stops when its last handle is dropped.
//!
//! Not wired into the actors yet: this is the layer the persistent activations of the
//! durable-actors work build on.

#![allow(dead_code)] // not wired into the actors yet: the durable-actors work uses it next

#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// A state's version: 0 means never written; each write (a delete too) adds one, so a
/// version is never reused and a stale writer cannot mistake a new state for its own.
pub(crate) type Version = u64;

/// What a store holds for one key: its state (none when never written or deleted) and its
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Stored {
    pub(crate) value: Option<Bytes>,
    pub(crate) version: Version,
}

/// One write of a batch: `value` replaces the state at version `expected` (0: never
/// written); `None` deletes it.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) value: Option<Bytes>,
    pub(crate) expected: Version,
}

/// Why a store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StoreError {
    /// The stored version is not the one the write replaces: another activation wrote it.
    #[error("`{kind}/{key}` is at version {found}, not {expected}: another activation of it wrote since")]
    Conflict {
        kind: String,
        key: String,
        expected: Version,
        found: Version,
    },
    /// The store cannot be reached or refused the operation; nothing was written.
    #[error("the state store is unavailable: {0}")]
    Unavailable(String),
    /// The store's address does not name a store this build has.
    #[error("{0}")]
    Url(String),
}

/// A place where durable actor state lives.
pub(crate) trait StateStore: Send + Sync + 'static {
    /// The state of `kind`/`key` and its version (version 0, no value: never written).
    fn read<'a>(&'a self, kind: &'a str, key: &'a str)
        -> BoxFuture<'a, Result<Stored, StoreError>>;

    /// Commits `writes` together; each result is its new version or why it was refused. A
    /// result for every write, in order.
    fn write(&self, writes: Vec<Write>) -> BoxFuture<'_, Vec<Result<Version, StoreError>>>;

    /// What the store is, for the log (`sqlite:/var/lib/meshrpc/state.db`).
    fn describe(&self) -> String;
}

/// Opens the store `url` names: `sqlite:PATH`.
///
/// # Errors
/// [`StoreError::Url`] for an address this build cannot open; `Unavailable` if the store
/// is there but cannot be opened.
pub(crate) fn open(url: &str) -> Result<Arc<dyn StateStore>, StoreError> {
    if let Some(_path) = url.strip_prefix("sqlite:") {
        #[cfg(feature = "sqlite")]
        return Ok(Arc::new(sqlite::SqliteStore::open(_path)?));
        #[cfg(not(feature = "sqlite"))]
        return Err(StoreError::Url(format!(
            "`{url}`: this build has no SQLite store (the `sqlite` feature is off)"
        )));
    }
    Err(StoreError::Url(format!(
        "`{url}` names no state store: give `sqlite:PATH`"
    )))
}
