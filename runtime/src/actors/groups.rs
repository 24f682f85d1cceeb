//! Process groups (Erlang's `pg`): a node, or an actor on it, joins a named group; the group
//! is the set of live members that say they belong to it, spread with membership (see
//! `cluster::membership::hosting`). A member whose node goes `down` or `left` drops out of
//! every group at once. Calls go straight to members, over links opened on demand.

use std::sync::{Arc, Weak};

use futures_util::future::join_all;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Actors, Ctx, Inner};
use crate::cluster::membership::GroupMember;
use crate::error::RpcError;
use crate::handlers::{Entry, Handler, Handlers, Incoming};
use crate::link::Connection;
use crate::wire::ErrorKind;
use crate::wire::{Encoding, RemoteError};

/// A named group, as this node sees it; cheap to clone.
#[derive(Clone)]
pub struct Group {
    ctx: Ctx,
    /// The actors layer, to join and leave through; weak, as a group handle may outlive it.
    home: Weak<Inner>,
    name: String,
}

/// One member of a group: which node, and which actor on it (none: the node itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Member {
    /// The node's name.
    pub node: String,
    /// The actor that joined, if it was an actor.
    pub actor: Option<String>,
}

impl Group {
    pub(super) fn new(ctx: Ctx, home: Weak<Inner>, name: &str) -> Self {
        Group {
            ctx,
            home,
            name: name.to_owned(),
        }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Joins the group as this node: the group's calls reach this node's methods.
    ///
    /// # Errors
    /// `bad_arguments` for a name that is empty, too long or holds `/`, or when what this
    /// node belongs to no longer fits in one membership datagram; `shutdown` once the node
    /// is gone.
    pub async fn join(&self) -> Result<(), RpcError> {
        self.home()?.join(&self.name, None).await
    }

    /// Joins the group as the actor `actor` of this node: the group's calls for `m` reach
    /// `actor.m`.
    ///
    /// # Errors
    /// As [`Group::join`].
    pub async fn join_as(&self, actor: &str) -> Result<(), RpcError> {
        self.home()?.join(&self.name, Some(actor)).await
    }

    /// Leaves the group (as the node, or as `actor`).
    ///
    /// # Errors
    /// `shutdown` once the node is gone.
    pub async fn leave(&self, actor: Option<&str>) -> Result<(), RpcError> {
        self.home()?.leave_group(&self.name, actor).await
    }

    fn home(&self) -> Result<Actors, RpcError> {
        match self.home.upgrade() {
            Some(inner) => Ok(Actors { inner }),
            None => Err(RpcError::Shutdown("the node is gone".to_owned())),
        }
    }

    /// Its live members now.
    pub fn members(&self) -> Vec<Member> {
        let snapshot = self.ctx.directory.snapshot();
        snapshot
            .group(&self.name)
            .iter()
            .map(|m| Member {
                node: snapshot
                    .by_id(m.node)
                    .map_or_else(|| m.node.to_string(), |n| n.name.clone()),
                actor: m.actor.clone(),
            })
            .collect()
    }

    /// Calls `method` on one member chosen at random; if it cannot be reached, on another.
    ///
    /// # Errors
    /// `peer_unavailable` if the group is empty or no member could be reached; otherwise the
    /// member's error.
    pub async fn call_any<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<R, RpcError> {
        let mut members: Vec<GroupMember> =
            self.ctx.directory.snapshot().group(&self.name).to_vec();
        let mut last = None;
        while !members.is_empty() {
            let pick = members.swap_remove(rand::random::<u64>() as usize % members.len());
            match self.call_one(&pick, method, &args).await {
                Err(e @ RpcError::PeerUnavailable { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| self.empty()))
    }

    /// Calls `method` on every member at once; each member's result, by member.
    pub async fn call_all<R: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Vec<(Member, Result<R, RpcError>)> {
        let snapshot = self.ctx.directory.snapshot();
        let members = snapshot.group(&self.name);
        let args = &args;
        let calls = members.iter().map(|m| {
            let who = Member {
                node: snapshot
                    .by_id(m.node)
                    .map_or_else(|| m.node.to_string(), |n| n.name.clone()),
                actor: m.actor.clone(),
            };
            async move { (who, self.call_one(m, method, args).await) }
        });
        join_all(calls).await
    }

    /// Sends `method` to every member without waiting for answers; how many were sent.
    pub async fn cast_all(&self, method: &str, args: impl Serialize) -> usize {
        let members = self.ctx.directory.snapshot().group(&self.name);
        let mut sent = 0;
        for m in members.iter() {
            let name = target_method(m, method);
            if let Ok(conn) = self.link(m).await {
                sent += usize::from(conn.cast(&name, Encoding::Bincode, &args).is_ok());
            }
        }
        sent
    }

    async fn call_one<R: DeserializeOwned, A: Serialize>(
        &self,
        member: &GroupMember,
        method: &str,
        args: &A,
    ) -> Result<R, RpcError> {
        let name = target_method(member, method);
        let timeout = self.ctx.default_timeout;
        let conn = self.link(member).await?;
        let reply = match conn
            .request(&name, Encoding::Bincode, args, timeout, false, None)
            .await
        {
            // The link closed under the call before the member read it, the member
            // staying (two nodes dialed each other at once): once more on the link kept.
            Err(e) if conn.may_resend(&e) => {
                let conn = self.link(member).await?;
                conn.request(&name, Encoding::Bincode, args, timeout, false, None)
                    .await
            }
            other => other,
        };
        let (encoding, body) = reply?;
        crate::client::decode_typed(&name, encoding, &body)
    }

    async fn link(&self, member: &GroupMember) -> Result<Connection, RpcError> {
        self.ctx.link(member.node, member.addr).await
    }

    fn empty(&self) -> RpcError {
        RpcError::PeerUnavailable {
            peer: format!("group {}", self.name),
            reason: "the group has no live member".to_owned(),
        }
    }
}

/// An actor member serves the group's methods as its own (`actor.method`).
fn target_method(member: &GroupMember, method: &str) -> String {
    match &member.actor {
        Some(actor) => format!("{actor}.{method}"),
        None => method.to_owned(),
    }
}

/// `system.group.any/GROUP/METHOD` and `system.group.all/GROUP/METHOD`: group calls for
/// callers that are not nodes (the CLI, the gateway), routed by this node. `all` answers,
/// in JSON only, an array of `{node, actor, result}` or `{node, actor, error: {kind,
/// message}}`, one per member.
pub(crate) struct Routed {
    pub(crate) ctx: Ctx,
    pub(crate) home: Weak<Inner>,
    pub(crate) all: bool,
}

impl Handler for Routed {
    fn invoke(&self, entry: &Arc<Entry>, mut call: Incoming, _ctx: &Handlers) {
        let routed = call.key.take();
        let Some((group, method)) = routed.as_deref().and_then(|k| k.split_once('/')) else {
            let message = format!("call it as `{}/GROUP/METHOD`", entry.name);
            return call.responder.fail(ErrorKind::BadArguments, message);
        };
        if self.all && call.encoding != Encoding::Json {
            let message = "answers JSON only; from Rust, use Node::group(..).call_all";
            return call.responder.fail(ErrorKind::BadArguments, message);
        }
        let group = Group::new(self.ctx.clone(), self.home.clone(), group);
        let (method, all) = (method.to_owned(), self.all);
        self.ctx.tasks.spawn(async move {
            if all {
                let results = group.route_all(&method, &call).await;
                call.responder.reply(Ok(&results));
            } else {
                let reply = group.route_any(&method, &call).await;
                call.responder.reply_raw(reply);
            }
        });
    }

    fn keyed(&self) -> bool {
        true
    }
}

impl Group {
    fn timeout(&self, call: &Incoming) -> std::time::Duration {
        call.deadline.map_or(self.ctx.default_timeout, |at| {
            at.saturating_duration_since(tokio::time::Instant::now())
        })
    }

    async fn route_one(
        &self,
        member: &GroupMember,
        method: &str,
        call: &Incoming,
    ) -> Result<(Encoding, bytes::Bytes), RpcError> {
        let name = target_method(member, method);
        let conn = self.link(member).await?;
        conn.request_raw(&name, call.encoding, &call.body, self.timeout(call))
            .await
    }

    async fn route_any(
        &self,
        method: &str,
        call: &Incoming,
    ) -> Result<(Encoding, bytes::Bytes), RemoteError> {
        let mut members: Vec<GroupMember> =
            self.ctx.directory.snapshot().group(&self.name).to_vec();
        let mut last = self.empty();
        while !members.is_empty() {
            let pick = members.swap_remove(rand::random::<u64>() as usize % members.len());
            match self.route_one(&pick, method, call).await {
                Err(e @ RpcError::PeerUnavailable { .. }) => last = e,
                Err(e) => return Err(e.to_remote()),
                Ok(reply) => return Ok(reply),
            }
        }
        Err(last.to_remote())
    }

    async fn route_all(&self, method: &str, call: &Incoming) -> Vec<serde_json::Value> {
        let snapshot = self.ctx.directory.snapshot();
        let members = snapshot.group(&self.name);
        let calls = members.iter().map(|m| {
            let node = snapshot
                .by_id(m.node)
                .map_or_else(|| m.node.to_string(), |n| n.name.clone());
            async move {
            let outcome = match self.route_one(m, method, call).await {
                Ok((_, body)) => match serde_json::from_slice::<serde_json::Value>(&body) {
                    Ok(value) => serde_json::json!({ "result": value }),
                    Err(e) => serde_json::json!({ "error": { "kind": "protocol", "message": e.to_string() } }),
                },
                Err(e) => serde_json::json!({ "error": { "kind": e.kind().as_str(), "message": e.to_string() } }),
            };
            let mut entry = serde_json::json!({ "node": node, "actor": m.actor });
            if let (Some(entry), Some(outcome)) = (entry.as_object_mut(), outcome.as_object()) {
                entry.extend(outcome.clone());
            }
            entry
            }
        });
        join_all(calls).await
    }
}
