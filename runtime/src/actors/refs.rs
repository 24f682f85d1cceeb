//! A reference to a virtual actor by type and key: each call computes the owner from this
//! node's view (no lookup) and goes straight to it — dispatched in place, without a frame,
//! when the owner is this node (streams take the in-memory link). While the view settles,
//! the owner may answer `moved` (nothing ran) or be unreachable; the ref tries again, with
//! backoff, until the call's deadline.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use super::{placement, Ctx};
use futures_util::StreamExt;

use crate::client::{ItemStream, StreamOptions};
use crate::error::RpcError;
use crate::wire::Encoding;
use crate::wire::ErrorKind;

/// A virtual actor, wherever it lives; cheap to clone (one count on a shared allocation).
#[derive(Clone)]
pub struct ActorRef(Arc<Target>);

/// What a ref names, and what it calls through.
struct Target {
    ctx: Ctx,
    kind: String,
    key: String,
    hash: u64,
}

impl std::fmt::Debug for ActorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorRef({}/{})", self.0.kind, self.0.key)
    }
}

impl ActorRef {
    /// The key a singleton ([`VirtualBuilder::singleton`](crate::actor::VirtualBuilder::singleton)) lives under:
    /// `node.actor_ref("leader", ActorRef::SINGLETON)`.
    pub const SINGLETON: &'static str = super::hosted::SINGLETON_KEY;

    pub(crate) fn new(ctx: Ctx, kind: &str, key: &str) -> Self {
        ActorRef(Arc::new(Target {
            hash: placement::key_hash(kind, key),
            ctx,
            kind: kind.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// The type.
    pub fn kind(&self) -> &str {
        &self.0.kind
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.0.key
    }

    /// The member that owns this key in this node's view: its name, if any host is live.
    pub fn owner(&self) -> Option<String> {
        let snapshot = self.0.ctx.directory.snapshot();
        let hosts = snapshot.hosts(&self.0.kind);
        let id = placement::owner(self.0.hash, hosts.iter().map(|h| h.id))?;
        snapshot.by_id(id).map(|m| m.name.clone())
    }

    /// Sets the reminder `name` of this actor: every `period` (100 ms to a year), on
    /// whichever member owns the key, the type's `on_reminder` hook runs
    /// ([`VirtualBuilder::on_reminder`](crate::actor::VirtualBuilder::on_reminder)). It is
    /// stored before this returns and outlives every node; setting it again changes the
    /// period.
    ///
    /// # Errors
    /// `bad_arguments` for a bad name or period, or on a node without a state store;
    /// `application` if the store failed.
    pub async fn remind(&self, name: &str, period: Duration) -> Result<(), RpcError> {
        super::reminders::set(&self.0.ctx, &self.0.kind, &self.0.key, name, period).await
    }

    /// Removes the reminder `name` of this actor; whether there was one.
    ///
    /// # Errors
    /// As [`ActorRef::remind`].
    pub async fn forget(&self, name: &str) -> Result<bool, RpcError> {
        super::reminders::forget(&self.0.ctx, &self.0.kind, &self.0.key, name).await
    }

    /// Calls `method` on the actor with the node's default timeout.
    ///
    /// # Errors
    /// Any [`RpcError`]; `moved` only if the view did not settle before the deadline.
    pub async fn call<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, RpcError> {
        self.call_timeout(method, args, self.0.ctx.default_timeout)
            .await
    }

    /// Calls `method`, giving up after `timeout` (retries included).
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn call_timeout<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        timeout: Duration,
    ) -> Result<R, RpcError> {
        let name = self.method(method);
        let (encoding, body) = self.send(&name, Encoding::Bincode, &args, timeout).await?;
        crate::client::decode_typed(&name, encoding, &body)
    }

    /// Calls `method` with JSON arguments (an array, or an object naming them) and returns
    /// the JSON result: the path of dynamic callers (the Python package).
    ///
    /// # Errors
    /// Any [`RpcError`].
    pub async fn call_json<A: Serialize + ?Sized>(
        &self,
        method: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<serde_json::Value, RpcError> {
        let name = self.method(method);
        let (encoding, body) = self.send(&name, Encoding::Json, args, timeout).await?;
        crate::wire::codec::decode_result(encoding, &body)
            .map_err(|e| RpcError::Protocol(format!("cannot decode the result of `{name}`: {e}")))
    }

    /// `TYPE.method/KEY`.
    fn method(&self, method: &str) -> String {
        format!("{}.{method}/{}", self.0.kind, self.0.key)
    }

    /// Sends the call to the key's owner, again while nothing ran, until `timeout`.
    async fn send<A: Serialize + ?Sized>(
        &self,
        name: &str,
        encoding: Encoding,
        args: &A,
        timeout: Duration,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            match self.attempt(name, encoding, args, deadline).await {
                Err(e) if retryable(&e) && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                done => return done,
            }
        }
    }

    async fn attempt<A: Serialize + ?Sized>(
        &self,
        name: &str,
        encoding: Encoding,
        args: &A,
        deadline: Instant,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        let owner = self.owner_host()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if owner.id == self.0.ctx.me {
            // This node owns the key: no frame, no link, straight to the activation.
            return self.0.ctx.call_here(name, encoding, args, left).await;
        }
        let conn = self.0.ctx.link(owner.id, owner.addr).await?;
        conn.request(name, encoding, args, left, false, None).await
    }
}

impl ActorRef {
    /// Opens the stream method `method` of the actor: its items as they come. While the
    /// view settles, an owner that answers `moved` before any item is asked again.
    pub async fn call_stream<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> ItemStream<T> {
        self.call_stream_with(method, args, StreamOptions::default())
            .await
    }

    /// [`ActorRef::call_stream`] with options.
    pub async fn call_stream_with<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
        options: StreamOptions,
    ) -> ItemStream<T> {
        let name = self.method(method);
        let deadline = Instant::now() + self.0.ctx.default_timeout;
        let mut backoff = Duration::from_millis(5);
        loop {
            let mut items = match self.owner_link().await {
                Ok(conn) => {
                    ItemStream::open(&conn, &name, &args, options, self.0.ctx.default_timeout)
                }
                Err(e) => ItemStream::failed(e),
            };
            // Only a first answer says whether the owner took it; `moved` means nothing ran.
            let first = items.next().await;
            match first {
                Some(Err(e)) if retryable(&e) && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                }
                Some(first) => {
                    items.unread(first);
                    return items;
                }
                None => return items,
            }
        }
    }

    /// The owner of this key in this node's view.
    fn owner_host(&self) -> Result<crate::cluster::membership::Host, RpcError> {
        let owner = placement::owner_host(&self.0.ctx.directory, &self.0.kind, self.0.hash);
        owner.ok_or_else(|| RpcError::PeerUnavailable {
            peer: format!("{}/{}", self.0.kind, self.0.key),
            reason: format!("no live member hosts virtual actor type `{}`", self.0.kind),
        })
    }

    /// The link to the owner of this key in this node's view (the in-memory one to itself).
    async fn owner_link(&self) -> Result<crate::link::Connection, RpcError> {
        let owner = self.owner_host()?;
        self.0.ctx.link(owner.id, owner.addr).await
    }
}

/// Nothing ran: the owner moved, or could not be reached (it may be going down).
fn retryable(e: &RpcError) -> bool {
    matches!(e.kind(), ErrorKind::Moved) || matches!(e, RpcError::PeerUnavailable { .. })
}
