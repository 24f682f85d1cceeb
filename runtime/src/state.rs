//! Where durable actor state lives: the [`StateStore`] a node writes its virtual actors'
//! state to, and the stores this crate has (`sqlite`, `postgres`). A store keeps, per
//! `(type, key)`, the state's bytes and a version; every write says which version it
//! replaces and fails with [`StoreError::Conflict`] if that is no longer the one stored, so
//! a second activation of a key (a view change, a partition) cannot overwrite the first
//! (Orleans' ETags).
//!
//! Writes go in batches: a store commits a batch at once (group commit), and each write in
//! it succeeds or conflicts on its own. A store stops when its last handle is dropped.
//!
//! The node opens its store at start (`NodeConfig::state`); virtual-actor types that
//! persist read and write through it (`actors/activation/durable.rs`).

// Built without either store, nothing writes: `open` refuses every address.
#![cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod queue;
#[cfg(feature = "sqlite")]
pub(crate) mod sqlite;

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

/// A state's version (an ETag): 0 means never written; each write (a delete too) makes a
/// new one that its writer chose at random (1 to 2^63 - 1, so it fits a signed column).
/// Nobody else can make the version a writer expects: an activation that queues its next
/// write naming the version its previous write will make cannot overwrite another
/// activation's write if that previous one was refused — a counter would let it, since the
/// other activation's write makes the very number it expects.
pub(crate) type Version = u64;

/// A fresh version for a write.
pub(crate) fn new_version() -> Version {
    rand::random_range(1..=i64::MAX as u64)
}

/// What a store holds for one key: its state (none when never written or deleted) and its
/// version.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Stored {
    pub(crate) value: Option<Bytes>,
    pub(crate) version: Version,
}

/// One write of a batch: `value` replaces the state at version `expected` (0: never
/// written) and makes version `version`; `None` deletes it.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) kind: Arc<str>,
    pub(crate) key: Arc<str>,
    pub(crate) value: Option<Bytes>,
    pub(crate) expected: Version,
    pub(crate) version: Version,
}

/// A durable timer of one virtual actor: `name` fires every `period_ms` on whichever node
/// owns `kind`/`key` (`actors/reminders.rs`), activating the key if it must.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Reminder {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    pub(crate) key: String,
    pub(crate) name: String,
    pub(crate) period_ms: u64,
}

/// What to do with the reminders a store keeps.
#[derive(Debug, Clone)]
pub(crate) enum ReminderOp {
    /// Adds the reminder, or changes the period of the one with its type, key and name.
    Set(Reminder),
    /// Removes the reminder with this type, key and name, if there is one.
    Forget {
        kind: String,
        key: String,
        name: String,
    },
    /// Lists every reminder.
    List,
}

/// The results of queued writes, once committed (or refused): a result for every write, in
/// order. Waiting on it is cancel-safe (a later wait gets the results).
pub(crate) enum Written {
    /// Known at once (refused before they were queued).
    Now(Option<Vec<Result<Version, StoreError>>>),
    /// From the store, once its batch is committed; `usize` writes.
    Later(
        tokio::sync::oneshot::Receiver<Vec<Result<Version, StoreError>>>,
        usize,
    ),
}

impl Written {
    /// The results (an `Unknown` for each write if the store stopped without answering).
    pub(crate) async fn results(&mut self) -> Vec<Result<Version, StoreError>> {
        match self {
            Written::Now(results) => results.take().unwrap_or_default(),
            Written::Later(answer, n) => (&mut *answer).await.unwrap_or_else(|_| {
                // Queued, then no answer: the store stopped, perhaps after committing.
                let why = "the store stopped before answering";
                (0..*n)
                    .map(|_| Err(StoreError::Unknown(why.into())))
                    .collect()
            }),
        }
    }
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
    /// The store went away while committing: the write may or may not be stored.
    #[error("the state store's commit has an unknown outcome: {0}")]
    Unknown(String),
    /// The store's address does not name a store this build has.
    #[error("{0}")]
    Url(String),
}

/// A place where durable actor state lives.
pub(crate) trait StateStore: Send + Sync + 'static {
    /// The state of `kind`/`key` and its version (version 0, no value: never written).
    fn read<'a>(&'a self, kind: &'a str, key: &'a str)
        -> BoxFuture<'a, Result<Stored, StoreError>>;

    /// Queues `writes` and returns the wait for their results. Writes are committed in the
    /// order they were queued (a later one never commits before an earlier one), so an
    /// activation may queue its next write, naming the version the previous one will make,
    /// before that one commits; if it does not, the next is refused too.
    fn submit(&self, writes: Vec<Write>) -> BoxFuture<'_, Written>;

    /// [`StateStore::submit`] without waiting: `Err` hands the writes back when the store's
    /// queue is full (then `submit` waits for room).
    fn try_submit(&self, writes: Vec<Write>) -> Result<Written, Vec<Write>> {
        Err(writes)
    }

    /// Commits `writes` together; each result is its new version or why it was refused. A
    /// result for every write, in order.
    #[cfg_attr(not(test), allow(dead_code))] // activations submit, and wait in their gate
    fn write(&self, writes: Vec<Write>) -> BoxFuture<'_, Vec<Result<Version, StoreError>>> {
        Box::pin(async move { self.submit(writes).await.results().await })
    }

    /// Does `op` to the reminders: `List` answers all of them in (type, key, name) order,
    /// `Forget` the one it removed (if any), `Set` nothing. `Set` and `Forget` are committed
    /// before the answer.
    fn reminders(&self, op: ReminderOp) -> BoxFuture<'_, Result<Vec<Reminder>, StoreError>>;

    /// What the store is, for the log (`sqlite:/var/lib/meshrpc/state.db`).
    fn describe(&self) -> String;
}

/// Opens the store `url` names: `sqlite:PATH` (`sqlite:PATH?synchronous=normal` trades
/// the last commits on a power loss for fewer fsyncs: `sqlite.rs`), or
/// `postgres://USER@HOST:PORT/DB`.
///
/// # Errors
/// [`StoreError::Url`] for an address this build cannot open; `Unavailable` if the store
/// is there but cannot be opened.
pub(crate) async fn open(url: &str) -> Result<Arc<dyn StateStore>, StoreError> {
    if let Some(_path) = url.strip_prefix("sqlite:") {
        // Opening the file may wait on another process's lock: off the runtime's workers.
        #[cfg(feature = "sqlite")]
        return match tokio::task::spawn_blocking({
            let address = _path.to_owned();
            move || {
                let (path, sync) = sqlite::Sync::parse(&address)?;
                sqlite::open(path, sync)
            }
        })
        .await
        {
            Ok(opened) => Ok(Arc::new(opened?)),
            Err(e) => Err(StoreError::Unavailable(format!(
                "opening `{url}` failed: {e}"
            ))),
        };
        #[cfg(not(feature = "sqlite"))]
        return Err(StoreError::Url(format!(
            "`{url}`: this build has no SQLite store (the `sqlite` feature is off)"
        )));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(postgres::open(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Url(format!(
            "`{url}`: this build has no PostgreSQL store (the `postgres` feature is off)"
        )));
    }
    Err(StoreError::Url(format!(
        "`{url}` names no state store: give `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`"
    )))
}

/// A test-only way to take one of a durable type's protections away, so the actor checker
/// (`tests/checker/`) can show that it catches what that lets through. Set with
/// `MESHRPC_TEST_UNSAFE=reply-before-write` or `=no-version-check`; a release build ignores
/// it, and a node that honours it says so loudly at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(debug_assertions), allow(dead_code))] // a release build never sets it
pub(crate) enum TestUnsafe {
    /// Every protection is on.
    Off,
    /// A call's answer leaves before its write commits (a crash between loses it).
    ReplyBeforeWrite,
    /// A write names the version stored just before it, not the one its activation loaded
    /// (a stale activation overwrites a newer one's writes).
    NoVersionCheck,
}

/// The switch, read once from `MESHRPC_TEST_UNSAFE` (debug builds only).
pub(crate) fn test_unsafe() -> TestUnsafe {
    #[cfg(debug_assertions)]
    {
        static SWITCH: std::sync::OnceLock<TestUnsafe> = std::sync::OnceLock::new();
        *SWITCH.get_or_init(|| match std::env::var("MESHRPC_TEST_UNSAFE").as_deref() {
            Ok("reply-before-write") => TestUnsafe::ReplyBeforeWrite,
            Ok("no-version-check") => TestUnsafe::NoVersionCheck,
            _ => TestUnsafe::Off,
        })
    }
    #[cfg(not(debug_assertions))]
    TestUnsafe::Off
}

/// What every store must do, checked the same way on each.
#[cfg(test)]
pub(crate) mod spec {
    use super::*;

    pub(crate) fn put(kind: &str, key: &str, value: &str, expected: Version) -> Write {
        Write {
            kind: kind.into(),
            key: key.into(),
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            expected,
            // Counting keeps the spec readable; activations choose at random.
            version: expected + 1,
        }
    }

    fn conflict(key: &str, expected: Version, found: Version) -> Result<Version, StoreError> {
        Err(StoreError::Conflict {
            kind: "c".into(),
            key: key.into(),
            expected,
            found,
        })
    }

    /// Writes are compare-and-set, versions are never reused (a delete is a tombstone),
    /// and each write of a batch succeeds or conflicts on its own.
    pub(crate) async fn compare_and_set(store: &dyn StateStore) {
        assert_eq!(store.read("c", "k").await, Ok(Stored::default()));
        assert_eq!(store.write(vec![put("c", "k", "one", 0)]).await, [Ok(1)]);
        let stored = store.read("c", "k").await.expect("reads");
        assert_eq!(
            (stored.value.as_deref(), stored.version),
            (Some(&b"one"[..]), 1)
        );
        // A second writer that read nothing, or version 1 after it moved on: refused.
        assert_eq!(
            store.write(vec![put("c", "k", "two", 0)]).await,
            [conflict("k", 0, 1)]
        );
        assert_eq!(store.write(vec![put("c", "k", "two", 1)]).await, [Ok(2)]);
        assert_eq!(
            store.write(vec![put("c", "k", "old", 1)]).await,
            [conflict("k", 1, 2)]
        );
        let delete = Write {
            value: None,
            ..put("c", "k", "", 2)
        };
        assert_eq!(store.write(vec![delete]).await, [Ok(3)]);
        assert_eq!(
            store.read("c", "k").await.map(|s| (s.value, s.version)),
            Ok((None, 3))
        );
        assert_eq!(
            store.write(vec![put("c", "k", "again", 1)]).await,
            [conflict("k", 1, 3)]
        );
        assert_eq!(store.write(vec![put("c", "k", "again", 3)]).await, [Ok(4)]);
        let batch = vec![
            put("c", "a", "x", 0),
            put("c", "k", "stale", 2),
            put("c", "b", "y", 0),
        ];
        assert_eq!(
            store.write(batch).await,
            [Ok(1), conflict("k", 2, 4), Ok(1)]
        );
    }

    pub(crate) fn reminder(key: &str, name: &str, period_ms: u64) -> Reminder {
        Reminder {
            kind: "c".into(),
            key: key.into(),
            name: name.into(),
            period_ms,
        }
    }

    /// Reminders are set (a second set changes the period), listed in order and forgotten,
    /// and a key's reminders are apart from its state.
    pub(crate) async fn reminders(store: &dyn StateStore) {
        assert_eq!(store.reminders(ReminderOp::List).await, Ok(vec![]));
        for r in [reminder("r", "tick", 500), reminder("a", "tock", 60_000)] {
            assert_eq!(store.reminders(ReminderOp::Set(r)).await, Ok(vec![]));
        }
        let changed = reminder("r", "tick", 250);
        assert_eq!(
            store.reminders(ReminderOp::Set(changed.clone())).await,
            Ok(vec![])
        );
        let listed = store.reminders(ReminderOp::List).await;
        assert_eq!(
            listed,
            Ok(vec![reminder("a", "tock", 60_000), changed.clone()])
        );
        assert_eq!(store.read("c", "r").await, Ok(Stored::default()));
        let forget = || ReminderOp::Forget {
            kind: "c".into(),
            key: "r".into(),
            name: "tick".into(),
        };
        assert_eq!(store.reminders(forget()).await, Ok(vec![changed]));
        assert_eq!(store.reminders(forget()).await, Ok(vec![]));
        let listed = store.reminders(ReminderOp::List).await;
        assert_eq!(listed, Ok(vec![reminder("a", "tock", 60_000)]));
    }

    /// Two handles on one store (two processes, two hosts) see each other's writes, and
    /// the later of two writers over one version is refused.
    pub(crate) async fn shared(a: &dyn StateStore, b: &dyn StateStore) {
        assert_eq!(a.write(vec![put("c", "s", "from a", 0)]).await, [Ok(1)]);
        let seen = b.read("c", "s").await.expect("b reads");
        assert_eq!(seen.value.as_deref(), Some(&b"from a"[..]));
        assert_eq!(
            b.write(vec![put("c", "s", "from b", 0)]).await,
            [conflict("s", 0, 1)]
        );
        assert_eq!(b.write(vec![put("c", "s", "from b", 1)]).await, [Ok(2)]);
        assert_eq!(
            a.write(vec![put("c", "s", "late a", 1)]).await,
            [conflict("s", 1, 2)]
        );
    }
}
