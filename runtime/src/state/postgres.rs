//! The store for nodes on several hosts: a PostgreSQL table, reached through tokio-postgres.
//! One task owns the connection and serves requests from a bounded channel in batches, as
//! the SQLite store does: everything waiting goes into one transaction and one commit, and
//! only then is it answered. A lost connection is opened again for the next batch; the
//! batch it failed is answered `unavailable`. The task ends when the last handle is dropped.
//!
//! Compare-and-set is the same `UPDATE … WHERE version = $4`: under PostgreSQL's read
//! committed isolation, a concurrent writer's update waits for the row and re-checks the
//! version, so of two activations writing over one version, one changes no row.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::{Client, GenericClient, NoTls};
use tracing::warn;

use super::{StateStore, StoreError, Stored, Version, Write};

/// Requests queued for the store's task before callers wait for room.
const QUEUE: usize = 1024;
/// The most requests one commit carries.
const MAX_BATCH: usize = 256;
/// How long connecting may take.
const CONNECT: Duration = Duration::from_secs(5);
/// How long one batch may take, commit included: past it the connection is dropped (a
/// server that stopped answering must not hold every activation's answer for hours).
const BATCH: Duration = Duration::from_secs(10);

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS meshrpc_state (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value BYTEA,
    version BIGINT NOT NULL,
    PRIMARY KEY (kind, key)
)";

/// A handle to a PostgreSQL store; cheap to clone.
#[derive(Clone)]
pub(crate) struct PostgresStore {
    requests: mpsc::Sender<Request>,
    /// The address without its password, for the log.
    shown: Arc<str>,
}

enum Request {
    Read {
        kind: String,
        key: String,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Write {
        writes: Vec<Write>,
        reply: oneshot::Sender<Vec<Result<Version, StoreError>>>,
    },
}

enum Answer {
    Read(Stored),
    Write(Vec<Result<Version, StoreError>>),
}

impl PostgresStore {
    /// Connects to the database `url` names (`postgres://user@host:port/db`) and makes the
    /// table if it is not there.
    ///
    /// # Errors
    /// `Unavailable` if the server cannot be reached or refuses.
    pub(crate) async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let shown: Arc<str> = without_password(url).into();
        let client = connect(url, &shown).await?;
        let (requests, queue) = mpsc::channel(QUEUE);
        tokio::spawn(serve(url.to_owned(), shown.clone(), client, queue));
        Ok(PostgresStore { requests, shown })
    }

    fn gone() -> StoreError {
        StoreError::Unavailable("the store's task has stopped".into())
    }
}

/// A connection with its driver task, and the table made.
async fn connect(url: &str, shown: &str) -> Result<Client, StoreError> {
    let unavailable = |e: tokio_postgres::Error| StoreError::Unavailable(format!("{shown}: {e}"));
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
    Ok(client)
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

impl StateStore for PostgresStore {
    fn read<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            if let Some(error) = unfit(kind, key) {
                return Err(error);
            }
            let (reply, answer) = oneshot::channel();
            let request = Request::Read {
                kind: kind.to_owned(),
                key: key.to_owned(),
                reply,
            };
            self.requests
                .send(request)
                .await
                .map_err(|_| Self::gone())?;
            answer.await.map_err(|_| Self::gone())?
        })
    }

    fn write(&self, writes: Vec<Write>) -> BoxFuture<'_, Vec<Result<Version, StoreError>>> {
        Box::pin(async move {
            if let Some(error) = writes.iter().find_map(|w| unfit(&w.kind, &w.key)) {
                return writes.iter().map(|_| Err(error.clone())).collect();
            }
            let n = writes.len();
            let (reply, answer) = oneshot::channel();
            if self
                .requests
                .send(Request::Write { writes, reply })
                .await
                .is_err()
            {
                return (0..n).map(|_| Err(Self::gone())).collect();
            }
            // Queued, then no answer: the store stopped, perhaps after committing.
            let unknown = |_| {
                let why = "the store stopped before answering";
                (0..n)
                    .map(|_| Err(StoreError::Unknown(why.into())))
                    .collect()
            };
            answer.await.unwrap_or_else(unknown)
        })
    }

    fn describe(&self) -> String {
        self.shown.to_string()
    }
}

/// The store's task: a batch of everything waiting, one transaction, one commit, then the
/// answers; a connection found closed is opened again first.
async fn serve(url: String, shown: Arc<str>, client: Client, mut queue: mpsc::Receiver<Request>) {
    let mut client = Some(client);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        if client.as_ref().is_none_or(Client::is_closed) {
            client = connect(&url, &shown).await.ok();
        }
        let Some(conn) = client.as_mut() else {
            let why = format!("{shown} cannot be reached");
            batch.into_iter().for_each(|request| fail(request, &why));
            continue;
        };
        match tokio::time::timeout(BATCH, run(conn, &batch)).await {
            Ok(Ok(answers)) => {
                for (request, answer) in batch.into_iter().zip(answers) {
                    match (request, answer) {
                        (Request::Read { reply, .. }, Answer::Read(stored)) => {
                            let _ = reply.send(Ok(stored));
                        }
                        (Request::Write { reply, .. }, Answer::Write(results)) => {
                            let _ = reply.send(results);
                        }
                        (request, _) => fail(request, "the store mixed up its answers"),
                    }
                }
            }
            Ok(Err(Failed::Before(e))) => {
                let why = format!("the batch did not commit: {e}");
                batch.into_iter().for_each(|request| fail(request, &why));
            }
            Ok(Err(Failed::Committing(e))) => {
                let why = format!("the commit failed on its way: {e}");
                batch.into_iter().for_each(|request| unknown(request, &why));
            }
            Err(_) => {
                // Mid-batch, perhaps mid-commit: the connection goes, the outcome is unknown.
                client = None;
                let why = format!("{shown} did not answer within {BATCH:?}");
                batch.into_iter().for_each(|request| unknown(request, &why));
            }
        }
    }
}

/// Why a batch failed: before its commit (nothing written), or at it (perhaps written).
enum Failed {
    Before(tokio_postgres::Error),
    Committing(tokio_postgres::Error),
}

/// Answers a request whose batch may or may not have committed.
fn unknown(request: Request, why: &str) {
    match request {
        // A read changed nothing: unavailable is all it is.
        Request::Read { .. } => fail(request, why),
        Request::Write { writes, reply } => {
            let error = || StoreError::Unknown(why.to_owned());
            let _ = reply.send(writes.iter().map(|_| Err(error())).collect());
        }
    }
}

fn fail(request: Request, why: &str) {
    let error = || StoreError::Unavailable(why.to_owned());
    match request {
        Request::Read { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
        Request::Write { writes, reply } => {
            let _ = reply.send(writes.iter().map(|_| Err(error())).collect());
        }
    }
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

/// Runs a batch in one transaction, in order (a read sees the writes before it).
async fn run(client: &mut Client, batch: &[Request]) -> Result<Vec<Answer>, Failed> {
    let tx = client.transaction().await.map_err(Failed::Before)?;
    let mut answers = Vec::with_capacity(batch.len());
    for request in batch {
        answers.push(match request {
            Request::Read { kind, key, .. } => {
                Answer::Read(read(&tx, kind, key).await.map_err(Failed::Before)?)
            }
            Request::Write { writes, .. } => {
                let mut results = Vec::with_capacity(writes.len());
                for w in writes {
                    results.push(write(&tx, w).await.map_err(Failed::Before)?);
                }
                Answer::Write(results)
            }
        });
    }
    tx.commit().await.map_err(Failed::Committing)?;
    Ok(answers)
}

async fn read(
    tx: &impl GenericClient,
    kind: &str,
    key: &str,
) -> Result<Stored, tokio_postgres::Error> {
    let row = tx
        .query_opt(
            "SELECT value, version FROM meshrpc_state WHERE kind = $1 AND key = $2",
            &[&kind, &key],
        )
        .await?;
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
    w: &Write,
) -> Result<Result<Version, StoreError>, tokio_postgres::Error> {
    let value = w.value.as_deref();
    let changed = if w.expected == 0 {
        tx.execute(
            "INSERT INTO meshrpc_state (kind, key, value, version) VALUES ($1, $2, $3, 1)
             ON CONFLICT (kind, key) DO NOTHING",
            &[&w.kind, &w.key, &value],
        )
        .await?
    } else {
        tx.execute(
            "UPDATE meshrpc_state SET value = $3, version = version + 1
             WHERE kind = $1 AND key = $2 AND version = $4",
            &[&w.kind, &w.key, &value, &(w.expected as i64)],
        )
        .await?
    };
    if changed == 1 {
        return Ok(Ok(w.expected + 1));
    }
    let found = read(tx, &w.kind, &w.key).await?.version;
    Ok(Err(StoreError::Conflict {
        kind: w.kind.clone(),
        key: w.key.clone(),
        expected: w.expected,
        found,
    }))
}

#[cfg(test)]
mod tests;
