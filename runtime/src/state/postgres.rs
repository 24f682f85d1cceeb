//! The store for nodes on several hosts: a PostgreSQL table, reached through tokio-postgres.
//! One task owns the connection and serves requests from a bounded channel in batches
//! (`queue.rs`), as the SQLite store does: everything waiting goes into one transaction and one commit, and
//! only then is it answered. A lost connection is opened again for the next batch; the
//! batch it failed is answered `unavailable` when it failed before its commit (nothing
//! written), `unknown` when it failed at or during the commit (perhaps written). The task ends when the last handle is dropped.
//!
//! Compare-and-set is the same `UPDATE … WHERE version = $4`: under PostgreSQL's read
//! committed isolation, a concurrent writer's update waits for the row and re-checks the
//! version, so of two activations writing over one version, one changes no row.
//!
//! A batch costs three round trips, however many requests it carries: `BEGIN`, then every
//! statement at once (prepared when the connection opens, and pipelined: tokio-postgres
//! sends them all before the first answer, and the server runs them in order), then
//! `COMMIT`.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::try_join_all;
use tokio_postgres::{Client, GenericClient, NoTls, Statement};
use tracing::warn;

use super::queue::{Answer, Batches, Queued, Request};
use super::{Reminder, ReminderOp, StoreError, Stored, Version, Write};

/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long one batch may take, commit included: past it the connection is dropped (a
/// server that stopped answering must not hold every activation's answer for hours).
const BATCH: Duration = Duration::from_secs(10);

/// The table, made by the first node to connect. Nodes started at once would race on
/// `CREATE TABLE IF NOT EXISTS` (one of them fails on PostgreSQL's catalog), so the creation
/// holds a transaction-scoped advisory lock (its number is "mrpc" in ASCII).
const SCHEMA: &str = "BEGIN;
SELECT pg_advisory_xact_lock(1836216419);
CREATE TABLE IF NOT EXISTS meshrpc_state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA,
    version BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS meshrpc_reminders (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    name TEXT NOT NULL,
    period_ms BIGINT NOT NULL,
    PRIMARY KEY (kind, key, name)
);
COMMIT;";

/// Connects to the database `url` names (`postgres://user@host:port/db`), makes the table
/// if it is not there, and serves the store from a task of its own.
///
/// # Errors
/// `Unavailable` if the server cannot be reached or refuses.
pub(crate) async fn open(url: &str) -> Result<Queued, StoreError> {
    let shown = without_password(url);
    let conn = connect(url, &shown).await?;
    let (handle, batches) = Queued::new(shown.clone(), unfit);
    tokio::spawn(serve(url.to_owned(), shown, conn, batches));
    Ok(handle)
}

/// A connection and the statements prepared on it.
struct Conn {
    client: Client,
    read: Statement,
    insert: Statement,
    update: Statement,
}

/// A connection with its driver task, the table made and the statements prepared.
async fn connect(url: &str, shown: &str) -> Result<Conn, StoreError> {
    let unavailable =
        |e: tokio_postgres::Error| StoreError::Unavailable(format!("{shown}: {}", explain(&e)));
    let mut config: tokio_postgres::Config = url.parse().map_err(unavailable)?;
    // A server gone silent is noticed in seconds, not after TCP's two hours.
    config
        .connect_timeout(CONNECT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(5));
    let (client, connection) = tokio::time::timeout(CONNECT, config.connect(NoTls))
        .await
        .map_err(|_| StoreError::Unavailable(format!("{shown}: no connection within {CONNECT:?}")))?
        .map_err(unavailable)?;
    let logged = shown.to_owned();
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            warn!(store = %logged, %error, "the state store's connection ended");
        }
    });
    client.batch_execute(SCHEMA).await.map_err(unavailable)?;
    let prepare = |sql| client.prepare(sql);
    let (read, insert, update) = futures_util::try_join!(
        prepare("SELECT value, version FROM meshrpc_state WHERE kind = $1 AND key = $2"),
        prepare(
            "INSERT INTO meshrpc_state (kind, key, value, version) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, key) DO NOTHING"
        ),
        prepare(
            "UPDATE meshrpc_state SET value = $3, version = $5
             WHERE kind = $1 AND key = $2 AND version = $4"
        ),
    )
    .map_err(unavailable)?;
    Ok(Conn {
        client,
        read,
        insert,
        update,
    })
}

/// A driver error with its causes: tokio-postgres shows only "db error" for a server's
/// refusal, the server's own message is its source.
fn explain(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

/// `postgres://user:secret@host/db` → `postgres://user:…@host/db`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{scheme}://{name}:…@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// The store's task: a batch of everything waiting, one transaction, one commit, then the
/// answers; a connection found closed is opened again first.
async fn serve(url: String, shown: String, conn: Conn, mut batches: Batches) {
    let mut client = Some(conn);
    while let Some(batch) = batches.next().await {
        if client.as_ref().is_none_or(|c| c.client.is_closed()) {
            client = connect(&url, &shown).await.ok();
        }
        let Some(conn) = client.as_mut() else {
            Batches::failed(batch, &format!("{shown} cannot be reached"));
            continue;
        };
        match tokio::time::timeout(BATCH, run(conn, &batch)).await {
            Ok(Ok(answers)) => batches.committed(batch, answers),
            Ok(Err(Failed::Before(e))) => {
                Batches::failed(batch, &format!("the batch did not commit: {}", explain(&e)));
            }
            Ok(Err(Failed::Committing(e))) => {
                Batches::unknown(
                    batch,
                    &format!("the commit failed on its way: {}", explain(&e)),
                );
            }
            Err(_) => {
                // Mid-batch, perhaps mid-commit: the connection goes, the outcome is unknown.
                client = None;
                Batches::unknown(batch, &format!("{shown} did not answer within {BATCH:?}"));
            }
        }
    }
}

/// Why a batch failed: before its commit (nothing written), or at it (perhaps written).
enum Failed {
    Before(tokio_postgres::Error),
    Committing(tokio_postgres::Error),
}

/// The longest `kind` or `key` a row takes: a btree index entry must fit in a third of a
/// page, and PostgreSQL's `TEXT` takes no NUL.
const MAX_NAME: usize = 1024;

/// Why `kind`/`key` cannot be a row's (checked before the batch, so one bad key cannot
/// abort everyone's transaction).
fn unfit(kind: &str, key: &str) -> Option<StoreError> {
    let bad = |s: &str| s.len() > MAX_NAME || s.contains('\0');
    (bad(kind) || bad(key)).then(|| {
        StoreError::Unavailable(format!(
            "`{kind}/{key}` cannot be stored: a type or key is at most {MAX_NAME} bytes, without NUL"
        ))
    })
}

/// Runs a batch in one transaction, in order (a read sees the writes before it): its
/// statements are pipelined.
async fn run(conn: &mut Conn, batch: &[Request]) -> Result<Vec<Answer>, Failed> {
    let tx = conn.client.transaction().await.map_err(Failed::Before)?;
    let (read_, insert, update) = (&conn.read, &conn.insert, &conn.update);
    let answers = try_join_all(batch.iter().map(|request| async {
        Ok(match request {
            Request::Read { kind, key, .. } => Answer::Read(read(&tx, read_, kind, key).await?),
            Request::Write { writes, .. } => Answer::Write(
                try_join_all(
                    writes
                        .iter()
                        .map(|w| write(&tx, (read_, insert, update), w)),
                )
                .await?,
            ),
            Request::Reminders { op, .. } => Answer::Reminders(reminders(&tx, op).await?),
        })
    }))
    .await
    .map_err(Failed::Before)?;
    tx.commit().await.map_err(Failed::Committing)?;
    Ok(answers)
}

async fn reminders(
    tx: &impl GenericClient,
    op: &ReminderOp,
) -> Result<Vec<Reminder>, tokio_postgres::Error> {
    let row = |row: tokio_postgres::Row| {
        let period_ms: i64 = row.get(3);
        Reminder {
            kind: row.get(0),
            key: row.get(1),
            name: row.get(2),
            period_ms: period_ms.max(0) as u64,
        }
    };
    Ok(match op {
        ReminderOp::Set(r) => {
            let period = i64::try_from(r.period_ms).unwrap_or(i64::MAX);
            tx.execute(
                "INSERT INTO meshrpc_reminders (kind, key, name, period_ms) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (kind, key, name) DO UPDATE SET period_ms = excluded.period_ms",
                &[&r.kind, &r.key, &r.name, &period],
            )
            .await?;
            Vec::new()
        }
        ReminderOp::Forget { kind, key, name } => tx
            .query(
                "DELETE FROM meshrpc_reminders WHERE kind = $1 AND key = $2 AND name = $3
                 RETURNING kind, key, name, period_ms",
                &[kind, key, name],
            )
            .await?
            .into_iter()
            .map(row)
            .collect(),
        ReminderOp::List => tx
            .query(
                "SELECT kind, key, name, period_ms FROM meshrpc_reminders
                 ORDER BY kind, key, name",
                &[],
            )
            .await?
            .into_iter()
            .map(row)
            .collect(),
    })
}

async fn read(
    tx: &impl GenericClient,
    statement: &Statement,
    kind: &str,
    key: &str,
) -> Result<Stored, tokio_postgres::Error> {
    let row = tx.query_opt(statement, &[&kind, &key]).await?;
    Ok(match row {
        Some(row) => {
            let value: Option<Vec<u8>> = row.get(0);
            let version: i64 = row.get(1);
            Stored {
                value: value.map(Bytes::from),
                version: version.max(0) as Version,
            }
        }
        None => Stored::default(),
    })
}

/// One compare-and-set write: its new version, or the conflict (the batch goes on).
async fn write(
    tx: &impl GenericClient,
    (read_, insert, update): (&Statement, &Statement, &Statement),
    w: &Write,
) -> Result<Result<Version, StoreError>, tokio_postgres::Error> {
    let value = w.value.as_deref();
    let version = w.version as i64;
    let changed = if w.expected == 0 {
        tx.execute(insert, &[&&*w.kind, &&*w.key, &value, &version])
            .await?
    } else {
        let expected = w.expected as i64;
        tx.execute(update, &[&&*w.kind, &&*w.key, &value, &expected, &version])
            .await?
    };
    if changed == 1 {
        return Ok(Ok(w.version));
    }
    let found = read(tx, read_, &w.kind, &w.key).await?.version;
    Ok(Err(StoreError::Conflict {
        kind: w.kind.to_string(),
        key: w.key.to_string(),
        expected: w.expected,
        found,
    }))
}

#[cfg(test)]
mod tests;
