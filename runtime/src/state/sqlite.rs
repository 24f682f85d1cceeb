//! The embedded store: one SQLite file (WAL, `synchronous = FULL`), which several node
//! processes on one machine may share. One thread owns the connection and serves requests
//! from a bounded channel in batches: every request waiting when it wakes goes into one
//! transaction and one commit (group commit), and only then are they answered, so an
//! acknowledged write is on disk (the channel and the batching are `queue.rs`'s). The thread
//! ends when the last handle is dropped.
//!
//! `synchronous = FULL` syncs the log at every commit, so an acknowledged write survives a
//! power loss too; it costs one fsync per batch, which bounds a busy node (docs/PERFORMANCE.md).
//! `sqlite:PATH?synchronous=normal` syncs only at checkpoints: acknowledged writes still
//! survive any crash of the processes (kill -9 included), but a power loss or a kernel crash
//! may lose the last commits (never the file's consistency). SQLite documents both.
//!
//! Versions make writes compare-and-set: a write names the version it replaces, and the
//! `UPDATE … WHERE version = ?` that carries it changes no row when another writer got there
//! first; the version it makes is the writer's (`state::new_version`, random). A delete
//! leaves a tombstone (no value, a new version), so a key never goes back to version 0.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::queue::{Answer, Batches, Queued, Request};
use super::{Reminder, ReminderOp, StoreError, Stored, Version, Write};

/// How long a commit waits for another process holding the file's write lock.
const BUSY: Duration = Duration::from_secs(5);
/// How long a store being opened keeps trying to set the file up while others hold it.
const SET_UP: Duration = Duration::from_secs(30);

/// When a commit reaches the disk (the module doc says what each promises).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sync {
    /// At every commit (the default).
    Full,
    /// At checkpoints.
    Normal,
}

impl Sync {
    /// `PATH` or `PATH?synchronous=full|normal`: the path and the setting.
    ///
    /// # Errors
    /// `Url` for any other option.
    pub(crate) fn parse(address: &str) -> Result<(&str, Sync), StoreError> {
        let Some((path, option)) = address.rsplit_once('?') else {
            return Ok((address, Sync::Full));
        };
        match option {
            "synchronous=full" => Ok((path, Sync::Full)),
            "synchronous=normal" => Ok((path, Sync::Normal)),
            other => Err(StoreError::Url(format!(
                "`sqlite:{address}`: unknown option `{other}` (the one there is: synchronous=full or synchronous=normal)"
            ))),
        }
    }
}

/// Opens (creating if need be) the store in the file at `path`, served by a thread of its
/// own.
///
/// # Errors
/// `Unavailable` if the file cannot be opened or set up.
pub(crate) fn open(path: &str, sync: Sync) -> Result<Queued, StoreError> {
    let unavailable = |e: rusqlite::Error| StoreError::Unavailable(format!("sqlite:{path}: {e}"));
    let conn = Connection::open(Path::new(path)).map_err(unavailable)?;
    conn.busy_timeout(BUSY).map_err(unavailable)?;
    let synchronous = match sync {
        Sync::Full => "FULL",
        Sync::Normal => "NORMAL",
    };
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(unavailable)?;
    // Setting up takes the file's write lock, which busy nodes sharing the file hand
    // from commit to commit: a node starting (or restarting after a kill) among them may
    // not get it within the busy timeout, so the set-up is tried again, for up to 30 s.
    let started = std::time::Instant::now();
    while let Err(e) = set_up(&conn) {
        let busy = e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
        if !busy || started.elapsed() >= SET_UP {
            return Err(unavailable(e));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = match sync {
        Sync::Full => format!("sqlite:{path}"),
        Sync::Normal => format!("sqlite:{path}?synchronous=normal"),
    };
    let (handle, batches) = Queued::new(shown, |_, _| None);
    std::thread::Builder::new()
        .name("meshrpc-state".into())
        .spawn(move || serve(conn, batches))
        .map_err(|e| StoreError::Unavailable(format!("cannot start the store's thread: {e}")))?;
    Ok(handle)
}

/// WAL mode and the tables, made if missing.
fn set_up(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS meshrpc_state (
             kind TEXT NOT NULL,
             key TEXT NOT NULL,
             value BLOB,
             version INTEGER NOT NULL,
             PRIMARY KEY (kind, key)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS meshrpc_reminders (
             kind TEXT NOT NULL,
             key TEXT NOT NULL,
             name TEXT NOT NULL,
             period_ms INTEGER NOT NULL,
             PRIMARY KEY (kind, key, name)
         ) WITHOUT ROWID;",
    )
}

/// The store's thread: a batch of everything waiting, one transaction, one commit, then the
/// answers. Ends when every handle is gone.
fn serve(mut conn: Connection, mut batches: Batches) {
    while let Some(batch) = batches.next_blocking() {
        match run(&mut conn, &batch) {
            Ok(answers) => batches.committed(batch, answers),
            Err(e) => Batches::failed(batch, &format!("the batch did not commit: {e}")),
        }
    }
}

/// Runs a batch in one transaction, in order (a read sees the writes before it).
fn run(conn: &mut Connection, batch: &[Request]) -> rusqlite::Result<Vec<Answer>> {
    let writes = batch.iter().any(Request::writes);
    let behavior = if writes {
        TransactionBehavior::Immediate
    } else {
        TransactionBehavior::Deferred
    };
    let tx = conn.transaction_with_behavior(behavior)?;
    let mut answers = Vec::with_capacity(batch.len());
    for request in batch {
        answers.push(match request {
            Request::Read { kind, key, .. } => Answer::Read(read(&tx, kind, key)?),
            Request::Write { writes, .. } => {
                let mut results = Vec::with_capacity(writes.len());
                for w in writes {
                    results.push(write(&tx, w)?);
                }
                Answer::Write(results)
            }
            Request::Reminders { op, .. } => Answer::Reminders(reminders(&tx, op)?),
        });
    }
    tx.commit()?;
    Ok(answers)
}

fn read(conn: &Connection, kind: &str, key: &str) -> rusqlite::Result<Stored> {
    let row = conn
        .prepare_cached("SELECT value, version FROM meshrpc_state WHERE kind = ?1 AND key = ?2")?
        .query_row(params![kind, key], |row| {
            let value: Option<Vec<u8>> = row.get(0)?;
            let version: i64 = row.get(1)?;
            Ok(Stored {
                value: value.map(Bytes::from),
                version: version.max(0) as Version,
            })
        })
        .optional()?;
    Ok(row.unwrap_or_default())
}

/// One compare-and-set write: its new version, or the conflict (a result, not an error:
/// the batch goes on).
fn write(conn: &Connection, w: &Write) -> rusqlite::Result<Result<Version, StoreError>> {
    let value = w.value.as_deref();
    let changed = if w.expected == 0 {
        conn.prepare_cached(
            "INSERT INTO meshrpc_state (kind, key, value, version) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (kind, key) DO NOTHING",
        )?
        .execute(params![w.kind, w.key, value, w.version as i64])?
    } else {
        conn.prepare_cached(
            "UPDATE meshrpc_state SET value = ?3, version = ?5
             WHERE kind = ?1 AND key = ?2 AND version = ?4",
        )?
        .execute(params![
            w.kind,
            w.key,
            value,
            w.expected as i64,
            w.version as i64
        ])?
    };
    if changed == 1 {
        return Ok(Ok(w.version));
    }
    let found = read(conn, &w.kind, &w.key)?.version;
    Ok(Err(StoreError::Conflict {
        kind: w.kind.to_string(),
        key: w.key.to_string(),
        expected: w.expected,
        found,
    }))
}

fn reminders(conn: &Connection, op: &ReminderOp) -> rusqlite::Result<Vec<Reminder>> {
    let (kind, key, name) = match op {
        ReminderOp::Set(r) => {
            conn.prepare_cached(
                "INSERT INTO meshrpc_reminders (kind, key, name, period_ms) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, key, name) DO UPDATE SET period_ms = excluded.period_ms",
            )?
            .execute(params![r.kind, r.key, r.name, r.period_ms as i64])?;
            return Ok(Vec::new());
        }
        ReminderOp::Forget { kind, key, name } => (Some(kind), Some(key), Some(name)),
        ReminderOp::List => (None, None, None),
    };
    // Listed or forgotten: the rows that match (all of them for a list).
    let found = conn
        .prepare_cached(
            "SELECT kind, key, name, period_ms FROM meshrpc_reminders
             WHERE (?1 IS NULL OR (kind = ?1 AND key = ?2 AND name = ?3))
             ORDER BY kind, key, name",
        )?
        .query_map(params![kind, key, name], |row| {
            let period_ms: i64 = row.get(3)?;
            Ok(Reminder {
                kind: row.get(0)?,
                key: row.get(1)?,
                name: row.get(2)?,
                period_ms: period_ms.max(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if kind.is_some() {
        conn.prepare_cached(
            "DELETE FROM meshrpc_reminders WHERE kind = ?1 AND key = ?2 AND name = ?3",
        )?
        .execute(params![kind, key, name])?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::super::spec::{self, put};
    use super::super::StateStore;
    use super::*;

    fn temp(name: &str) -> (std::path::PathBuf, String) {
        let dir = std::env::temp_dir().join(format!("meshrpc-state-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let file = dir.join("state.db").to_string_lossy().into_owned();
        (dir, file)
    }

    #[tokio::test]
    async fn writes_are_compare_and_set_and_versions_are_never_reused() {
        let (dir, file) = temp("cas");
        let store = open(&file, Sync::Full).expect("opens");
        assert_eq!(store.describe(), format!("sqlite:{file}"));
        spec::compare_and_set(&store).await;
        spec::reminders(&store).await;
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn two_stores_on_one_file_see_each_others_writes_and_conflicts() {
        let (dir, file) = temp("shared");
        let (a, b) = (
            open(&file, Sync::Full).expect("a"),
            open(&file, Sync::Full).expect("b"),
        );
        spec::shared(&a, &b).await;
        drop((a, b));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_at_once_share_commits() {
        let (dir, file) = temp("group");
        let store = open(&file, Sync::Full).expect("opens");
        let writers = (0..200).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.write(vec![put("c", &i.to_string(), "v", 0)]).await })
        });
        for done in futures_util::future::join_all(writers).await {
            assert_eq!(done.expect("a writer"), [Ok(1)]);
        }
        let commits = store.commits();
        assert!(commits < 200, "{commits} commits for 200 writes at once");
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_address_that_names_no_store_says_so() {
        let Err(StoreError::Url(why)) = super::super::open("redis://x").await else {
            panic!("opened a store from redis://x")
        };
        assert!(why.contains("sqlite:PATH"), "{why}");
    }

    #[tokio::test]
    async fn synchronous_normal_is_asked_for_by_name_and_keeps_every_rule() {
        let (dir, file) = temp("normal");
        let address = format!("sqlite:{file}?synchronous=normal");
        let store = super::super::open(&address).await.expect("opens");
        assert_eq!(store.describe(), address);
        spec::compare_and_set(&*store).await;
        drop(store);
        let Err(StoreError::Url(why)) =
            super::super::open(&format!("sqlite:{file}?synchronous=off")).await
        else {
            panic!("opened with synchronous=off")
        };
        assert!(why.contains("unknown option `synchronous=off`"), "{why}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
