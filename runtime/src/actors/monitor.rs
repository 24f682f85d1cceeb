//! Monitors: a future that resolves, with the reason, when what it watches is gone — a node
//! that goes `down` or `left`, or a virtual actor whose node goes or whose key moves (its
//! activation ended there). The building block for supervision across nodes. Driven by the
//! membership directory's change notifications; it holds no resource but a watch receiver.

use std::future::Future;

use super::{placement, ActorRef, Ctx};
use crate::cluster::membership::{MemberStatus, Snapshot};
use crate::wire::NodeId;

/// What to watch.
#[derive(Debug, Clone)]
pub enum Monitored {
    /// A member, by name.
    Node(String),
    /// A virtual actor: the activation on its owner at the time the monitor starts.
    Actor(ActorRef),
}

/// Why a monitor fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Down {
    /// The node was declared `down` (it stopped answering).
    NodeDown(String),
    /// The node left the cluster (a graceful shutdown).
    NodeLeft(String),
    /// No member of that name is known (never was, or was forgotten).
    Unknown(String),
    /// The key's owner changed (a node joined or left): the activation moved to `to`.
    Moved {
        /// The node that owns the key now.
        to: String,
    },
    /// This node is stopping, so nothing is watched any more.
    Shutdown,
}

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Down::NodeDown(n) => write!(f, "node {n} is down"),
            Down::NodeLeft(n) => write!(f, "node {n} left"),
            Down::Unknown(n) => write!(f, "no member is named {n}"),
            Down::Moved { to } => write!(f, "the actor moved to {to}"),
            Down::Shutdown => f.write_str("this node is stopping"),
        }
    }
}

/// Resolves when `target` is gone; see [`Down`]. What it watches is fixed now (for an
/// actor: its owner at this moment), not when the future is first polled.
pub(crate) fn watch(ctx: Ctx, target: Monitored) -> impl Future<Output = Down> + Send + 'static {
    let mut changes = ctx.directory.changes();
    let owner = match &target {
        Monitored::Node(_) => None,
        Monitored::Actor(actor) => owner_of(&ctx.directory.snapshot(), actor),
    };
    async move {
        if let (Monitored::Actor(actor), None) = (&target, owner) {
            return Down::Unknown(format!("{}/{}", actor.kind(), actor.key()));
        }
        loop {
            let snapshot = ctx.directory.snapshot();
            if let Some(down) = check(&snapshot, &target, owner) {
                return down;
            }
            tokio::select! {
                _ = ctx.stop.cancelled() => return Down::Shutdown,
                changed = changes.changed() => if changed.is_err() { return Down::Shutdown },
            }
        }
    }
}

fn owner_of(snapshot: &Snapshot, actor: &ActorRef) -> Option<NodeId> {
    let hash = placement::key_hash(actor.kind(), actor.key());
    placement::owner(hash, snapshot.hosts(actor.kind()).iter().map(|h| h.id))
}

fn check(snapshot: &Snapshot, target: &Monitored, owner: Option<NodeId>) -> Option<Down> {
    let node_gone = |name: String, status: MemberStatus| match status {
        MemberStatus::Down => Some(Down::NodeDown(name)),
        MemberStatus::Left => Some(Down::NodeLeft(name)),
        MemberStatus::Up | MemberStatus::Suspect => None,
    };
    match target {
        Monitored::Node(name) => match snapshot.by_name(name) {
            None => Some(Down::Unknown(name.clone())),
            Some(m) => node_gone(m.name.clone(), m.status),
        },
        Monitored::Actor(actor) => {
            let was = owner?;
            if let Some(m) = snapshot.by_id(was) {
                if let Some(down) = node_gone(m.name.clone(), m.status) {
                    return Some(down);
                }
            }
            match owner_of(snapshot, actor) {
                Some(now) if now == was => None,
                Some(now) => Some(Down::Moved {
                    to: snapshot
                        .by_id(now)
                        .map_or_else(|| now.to_string(), |m| m.name.clone()),
                }),
                None => Some(Down::Unknown(format!("{}/{}", actor.kind(), actor.key()))),
            }
        }
    }
}
