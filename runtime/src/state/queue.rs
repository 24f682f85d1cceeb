//! What both stores share: the handle ([`Queued`]) whose requests go down a bounded channel
//! to the one thread or task that owns the store's connection, the batching of everything
//! waiting into one commit, and how a batch's answers — or its failure — reach the callers.
//! Each store keeps only what is its own: opening, the transaction, its statements.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use super::{Reminder, ReminderOp, StateStore, StoreError, Stored, Version, Write, Written};

/// Requests queued for the store before callers wait for room.
const QUEUE: usize = 1024;
/// The most requests one commit carries.
const MAX_BATCH: usize = 256;

pub(super) enum Request {
    Read {
        kind: String,
        key: String,
        reply: oneshot::Sender<Result<Stored, StoreError>>,
    },
    Write {
        writes: Vec<Write>,
        reply: oneshot::Sender<Vec<Result<Version, StoreError>>>,
    },
    Reminders {
        op: ReminderOp,
        reply: oneshot::Sender<Result<Vec<Reminder>, StoreError>>,
    },
}

impl Request {
    /// Whether it changes what is stored.
    pub(super) fn writes(&self) -> bool {
        match self {
            Request::Read { .. }
            | Request::Reminders {
                op: ReminderOp::List,
                ..
            } => false,
            Request::Write { .. } | Request::Reminders { .. } => true,
        }
    }
}

/// What a request gets once its batch is committed.
pub(super) enum Answer {
    Read(Stored),
    Write(Vec<Result<Version, StoreError>>),
    Reminders(Vec<Reminder>),
}

/// Why a `kind`/`key` cannot be stored at all (checked before it joins a batch).
pub(super) type Unfit = fn(&str, &str) -> Option<StoreError>;

/// A handle to a store; cheap to clone. The store stops when the last one is dropped.
#[derive(Clone)]
pub(crate) struct Queued {
    requests: mpsc::Sender<Request>,
    /// What the store is, for the log (no password).
    shown: Arc<str>,
    unfit: Unfit,
    /// Batches committed, for tests of the batching.
    #[cfg_attr(not(all(test, feature = "sqlite")), allow(dead_code))]
    commits: Arc<AtomicU64>,
}

/// The store's end of a [`Queued`] handle.
pub(super) struct Batches {
    queue: mpsc::Receiver<Request>,
    commits: Arc<AtomicU64>,
}

impl Queued {
    pub(super) fn new(shown: String, unfit: Unfit) -> (Queued, Batches) {
        let (requests, queue) = mpsc::channel(QUEUE);
        let commits = Arc::new(AtomicU64::new(0));
        let handle = Queued {
            requests,
            shown: shown.into(),
            unfit,
            commits: commits.clone(),
        };
        (handle, Batches { queue, commits })
    }

    /// Batches committed so far.
    #[cfg(all(test, feature = "sqlite"))]
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn gone() -> StoreError {
        StoreError::Unavailable("the store has stopped".into())
    }
}

impl StateStore for Queued {
    fn read<'a>(
        &'a self,
        kind: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Stored, StoreError>> {
        Box::pin(async move {
            if let Some(error) = (self.unfit)(kind, key) {
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

    fn submit(&self, writes: Vec<Write>) -> BoxFuture<'_, Written> {
        Box::pin(async move {
            let writes = match self.try_submit(writes) {
                Ok(written) => return written,
                Err(writes) => writes,
            };
            let n = writes.len();
            let (reply, answer) = oneshot::channel();
            match self.requests.send(Request::Write { writes, reply }).await {
                Ok(()) => Written::Later(answer, n),
                Err(_) => Written::Now(Some((0..n).map(|_| Err(Self::gone())).collect())),
            }
        })
    }

    fn try_submit(&self, writes: Vec<Write>) -> Result<Written, Vec<Write>> {
        if let Some(error) = writes.iter().find_map(|w| (self.unfit)(&w.kind, &w.key)) {
            return Ok(Written::Now(Some(
                writes.iter().map(|_| Err(error.clone())).collect(),
            )));
        }
        let n = writes.len();
        let (reply, answer) = oneshot::channel();
        match self.requests.try_send(Request::Write { writes, reply }) {
            Ok(()) => Ok(Written::Later(answer, n)),
            Err(mpsc::error::TrySendError::Full(Request::Write { writes, .. })) => Err(writes),
            Err(_) => Ok(Written::Now(Some(
                (0..n).map(|_| Err(Self::gone())).collect(),
            ))),
        }
    }

    fn reminders(&self, op: ReminderOp) -> BoxFuture<'_, Result<Vec<Reminder>, StoreError>> {
        Box::pin(async move {
            let names = match &op {
                ReminderOp::Set(r) => Some((&r.kind, &r.key, &r.name)),
                ReminderOp::Forget { kind, key, name } => Some((kind, key, name)),
                ReminderOp::List => None,
            };
            if let Some((kind, key, name)) = names {
                if let Some(error) = (self.unfit)(kind, key).or_else(|| (self.unfit)(kind, name)) {
                    return Err(error);
                }
            }
            let listing = matches!(op, ReminderOp::List);
            let (reply, answer) = oneshot::channel();
            (self.requests)
                .send(Request::Reminders { op, reply })
                .await
                .map_err(|_| Self::gone())?;
            answer.await.unwrap_or_else(|_| {
                Err(if listing {
                    Self::gone()
                } else {
                    StoreError::Unknown("the store stopped before answering".into())
                })
            })
        })
    }

    fn describe(&self) -> String {
        self.shown.to_string()
    }
}

impl Batches {
    /// The next batch, waiting for its first request on a thread of its own; `None` once
    /// every handle is gone.
    #[cfg(feature = "sqlite")]
    pub(super) fn next_blocking(&mut self) -> Option<Vec<Request>> {
        let first = self.queue.blocking_recv()?;
        Some(self.fill(first))
    }

    /// The next batch, waiting for its first request; `None` once every handle is gone.
    #[cfg(feature = "postgres")]
    pub(super) async fn next(&mut self) -> Option<Vec<Request>> {
        let first = self.queue.recv().await?;
        Some(self.fill(first))
    }

    /// `first` and every request waiting behind it, up to a batch.
    fn fill(&mut self, first: Request) -> Vec<Request> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.queue.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        batch
    }

    /// Answers a committed batch, each request with its own answer.
    pub(super) fn committed(&self, batch: Vec<Request>, answers: Vec<Answer>) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        for (request, answer) in batch.into_iter().zip(answers) {
            match (request, answer) {
                (Request::Read { reply, .. }, Answer::Read(stored)) => {
                    let _ = reply.send(Ok(stored));
                }
                (Request::Write { reply, .. }, Answer::Write(results)) => {
                    let _ = reply.send(results);
                }
                (Request::Reminders { reply, .. }, Answer::Reminders(reminders)) => {
                    let _ = reply.send(Ok(reminders));
                }
                // A store answers each request in kind.
                (request, _) => fail(request, "the store mixed up its answers"),
            }
        }
    }

    /// Answers a batch that did not commit: nothing of it is written.
    pub(super) fn failed(batch: Vec<Request>, why: &str) {
        batch.into_iter().for_each(|request| fail(request, why));
    }

    /// Answers a batch whose commit may or may not have happened: its writes' outcome is
    /// unknown (its reads changed nothing, and are only unavailable).
    #[cfg(feature = "postgres")]
    pub(super) fn unknown(batch: Vec<Request>, why: &str) {
        for request in batch {
            let error = || StoreError::Unknown(why.to_owned());
            match request {
                Request::Write { writes, reply } => {
                    let _ = reply.send(writes.iter().map(|_| Err(error())).collect());
                }
                Request::Reminders { op, reply } if !matches!(op, ReminderOp::List) => {
                    let _ = reply.send(Err(error()));
                }
                read => fail(read, why),
            }
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
        Request::Reminders { reply, .. } => {
            let _ = reply.send(Err(error()));
        }
    }
}
